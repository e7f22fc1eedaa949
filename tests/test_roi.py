"""--roi: volseg.roi (parsing, resolving), and predict/stitch/postprocess of a box on real stores.

The ROI output equals the full run inside the box byte for byte (a box cutting chunks and
patches unevenly, on the whole volume's patch grid) and is 0 outside; only the chunks in the box
are tasks (markers, --part, completion). Bad boxes through the CLI: exit 2, one error line,
nothing written.
"""

import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

from cli_checks import one_error_line, tree
from volseg.cli import app
from volseg.errors import VolsegError
from volseg.inference.predict import predict
from volseg.inference.settings import PredictSettings, from_sources, predict_options, read_config
from volseg.inference.stitch import stitch
from volseg.parallel import Execution
from volseg.postprocess import postprocess
from volseg.roi import box_chunks, clip_box, parse_roi, roi_box

SHAPE = (20, 20, 16)
ROI = "3:13,5:-4,-11:"           # z 3..13, y 5..16, x 5..16: cuts chunks (8) and patches (8, stride 4)
BOX = (slice(3, 13), slice(5, 16), slice(5, 16))
START, STOP = (3, 5, 5), (13, 16, 16)
KW = dict(patch=8, chunks=8, batch_size=2, workers=1, quiet=True)


def _inside() -> np.ndarray:
    m = np.zeros(SHAPE, bool)
    m[BOX] = True
    return m


@pytest.fixture(scope="module")
def box(tmp_path_factory, make_run):
    root = tmp_path_factory.mktemp("roi")
    make_run(root / "run")
    np.save(root / "v.npy", np.random.default_rng(3).normal(size=SHAPE).astype(np.float32))
    predict(root / "run", str(root / "v.npy"), str(root / "full.zarr"), *predict_options(stitch=True, **KW))
    predict(root / "run", str(root / "v.npy"), str(root / "full_store.zarr"), *predict_options(**KW))
    return root


def _read(path) -> np.ndarray:
    return zarr.open_array(str(path / "0"))[:]


# --- volseg.roi ------------------------------------------------------------------------------
@pytest.mark.parametrize("text, canonical, box_", [
    ("0:4,1:3,2:5", "0:4,1:3,2:5", ((0, 1, 2), (4, 3, 5))),
    (" : , 5: ,:-2 ", ":,5:,:-2", ((0, 5, 0), (8, 8, 6))),
    (["-3:", ":", "1:-1"], "-3:,:,1:-1", ((5, 0, 1), (8, 8, 7))),
])
def test_roi_text_is_parsed_once_and_resolved_like_python_slices(text, canonical, box_):
    assert parse_roi(text) == canonical
    assert roi_box(canonical, (8, 8, 8)) == box_
    ref = np.arange(512).reshape(8, 8, 8)
    sl = tuple(slice(*(None if v == "" else int(v) for v in p.split(":"))) for p in canonical.split(","))
    start, stop = roi_box(canonical, (8, 8, 8))
    assert np.array_equal(ref[sl], ref[tuple(slice(a, b) for a, b in zip(start, stop))])
    assert parse_roi(None) is None and parse_roi("none") is None


@pytest.mark.parametrize("text, needle", [
    ("1:2,3:4", "has 2 axes"), ("a:b,:,:", "is not a box"), ("4:2,:,:", "empty along z"),
    ("1:2,3,4:5", "is not a box"), ("-1:-3,:,:", "empty along z"),
])
def test_malformed_roi_text_names_the_value_and_the_fix(text, needle):
    with pytest.raises(VolsegError, match=needle) as err:
        parse_roi(text)
    assert "z0:z1,y0:y1,x0:x1" in str(err.value)


@pytest.mark.parametrize("text, needle", [("0:9,:,:", "outside the volume"), (":,:,-9:", "outside the volume"),
                                          ("-2:6,:,:", "is empty"), (":,8:,:", "outside the volume")])
def test_a_box_that_does_not_fit_is_refused_not_clipped(text, needle):
    with pytest.raises(VolsegError, match=needle):
        roi_box(parse_roi(text), (8, 8, 8))


def test_box_chunks_and_clip_box():
    assert box_chunks((3, 0, 7), (9, 4, 8), (4, 4, 4)) == [(0, 0, 1), (1, 0, 1), (2, 0, 1)]
    block = np.ones((2, 4, 4, 4))
    clip_box(block, (4, 0, 0), (8, 4, 4), (5, 1, 0), (20, 3, 2))
    assert block[:, 1:, 1:3, :2].all() and block.sum() == 2 * 3 * 2 * 2
    far = np.ones((4, 4, 4))
    assert not clip_box(far, (0, 0, 0), (4, 4, 4), (10, 0, 0), (12, 4, 4)).any()


# --- predict -----------------------------------------------------------------------------------
def test_roi_stitch_equals_the_full_run_inside_and_is_0_outside(box, tmp_path):
    out = tmp_path / "roi.zarr"
    r = predict(box / "run", str(box / "v.npy"), str(out), *predict_options(stitch=True, roi=ROI, **KW))
    chosen = box_chunks(START, STOP, (8, 8, 8))
    assert r["complete"] and r["chunks_total"] == r["chunks_written"] == len(chosen) == 8 < 3 * 3 * 2
    full, got = _read(box / "full.zarr"), _read(out)
    assert got.shape == full.shape == SHAPE
    assert got[BOX].tobytes() == full[BOX].tobytes()
    assert not got[~_inside()].any()
    written = [p for p in (out / "0" / "c").rglob("*") if p.is_file()]
    assert len(written) == len(chosen)  # chunks outside the box: never written (fill value)
    assert read_config(out / "volseg-predict.yml")["roi"] == ROI


def test_roi_parts_and_resume_count_only_the_box_chunks(box, tmp_path):
    out = tmp_path / "parts.zarr"
    a = predict(box / "run", str(box / "v.npy"), str(out), *predict_options(stitch=True, roi=ROI, part="1/2", **KW))
    assert not a["complete"]
    b = predict(box / "run", str(box / "v.npy"), str(out), *predict_options(stitch=True, roi=ROI, part="2/2", **KW))
    assert b["complete"] and a["chunks_total"] + b["chunks_total"] == 8
    again = predict(box / "run", str(box / "v.npy"), str(out), *predict_options(stitch=True, roi=ROI, **KW))
    assert again["chunks_written"] == 0 and again["chunks_done_before"] == 8
    assert _read(out)[BOX].tobytes() == _read(box / "full.zarr")[BOX].tobytes()
    with pytest.raises(VolsegError, match="settings"):  # another box is another output
        predict(box / "run", str(box / "v.npy"), str(out), *predict_options(stitch=True, roi="0:8,:,:", **KW))


def test_roi_patch_store_runs_only_patches_touching_the_box_and_stitches_to_the_same_bytes(box, tmp_path):
    roi, start, stop = "12:19,:5,9:", (12, 0, 9), (19, 5, 16)  # a corner box: most patches miss it
    inside = np.zeros(SHAPE, bool)
    inside[12:19, :5, 9:] = True
    store = tmp_path / "roi_store.zarr"
    r = predict(box / "run", str(box / "v.npy"), str(store), *predict_options(roi=roi, **KW))
    full, got = zarr.open_group(str(box / "full_store.zarr")), zarr.open_group(str(store))
    origins = got["origins"][:]
    assert np.array_equal(origins, full["origins"][:])  # the whole grid, rows in place
    touch = np.all((origins < stop) & (origins + 8 > start), axis=1)
    assert r["complete"] and touch.sum() <= r["patches"] < len(origins) / 3  # whole batches of 2 run
    assert got["patches"][:][touch].tobytes() == full["patches"][:][touch].tobytes()
    assert not got["patches"][:][~touch].any()
    stitch(str(store), str(tmp_path / "s.zarr"), chunks=8, execution=Execution.parse(workers=1, quiet=True))
    stitch(str(box / "full_store.zarr"), str(tmp_path / "f.zarr"), chunks=8,
           execution=Execution.parse(workers=1, quiet=True))
    s, f = _read(tmp_path / "s.zarr"), _read(tmp_path / "f.zarr")
    assert s[inside].tobytes() == f[inside].tobytes() and not s[~inside].any()


def test_settings_record_the_roi_only_when_set(box):
    plain = PredictSettings.parse()
    assert "roi" not in plain.to_dict() and "mask" not in plain.to_dict()
    facts = dict(model_sha256="x", volume="v", volume_stamp=1, volume_shape=SHAPE, stride=(4, 4, 4), kind="unet")
    assert plain.fingerprint(**facts) == plain.fingerprint(**facts, support={})
    assert "roi" not in plain.fingerprint(**facts)
    recorded = read_config(box / "full.zarr" / "volseg-predict.yml")
    assert "roi" not in recorded and "mask" not in recorded
    settings, _ = from_sources({"roi": ROI})
    again, _ = from_sources({}, config=_write(box / "cfg.yml", settings.to_dict()))
    assert again.roi == ROI == settings.roi


def _write(path, data):
    import yaml

    path.write_text(yaml.safe_dump(data))
    return path


# --- postprocess --------------------------------------------------------------------------------
def test_postprocess_roi_is_the_postprocess_of_the_prediction_masked_to_the_box(box, tmp_path):
    from volseg.io import write_volume

    pred = _read(box / "full.zarr")
    masked = np.where(_inside(), pred, 0).astype(np.float32)
    write_volume(tmp_path / "masked.zarr", masked, chunks=8)
    options = dict(threshold=float(np.median(pred[BOX])), min_size=4, chunks=8,
                   execution=Execution.parse(workers=1, quiet=True))
    ref = postprocess(str(tmp_path / "masked.zarr"), str(tmp_path / "ref.zarr"), **options)
    got = postprocess(str(box / "full.zarr"), str(tmp_path / "got.zarr"), roi=ROI, **options)
    assert got["complete"] and got["chunks_total"] == 8 < ref["chunks_total"]
    expected = np.where(_inside(), _read(tmp_path / "ref.zarr"), 0)
    labels = _read(tmp_path / "got.zarr")
    assert labels.tobytes() == expected.tobytes() and labels[BOX].any()
    assert got["components"] == ref["components"]


# --- the CLI -------------------------------------------------------------------------------------
@pytest.mark.parametrize("command, roi, needle", [
    ("predict", "0:21,:,:", "outside the volume"),
    ("predict", "5:5,:,:", "empty along z"),
    ("predict", ":,-2:-4,:", "empty along y"),
    ("predict", "0:4;0:4;0:4", "is not a box"),
    ("predict", "0:4,0:4", "has 2 axes"),
    ("predict", ":,:,30:", "outside the volume"),
    ("postprocess", "0:21,:,:", "outside the volume"),
    ("postprocess", "1:2", "has 1 axes"),
])
def test_bad_roi_exits_2_with_one_line_and_writes_nothing(box, tmp_path, command, roi, needle):
    before = tree(box)
    args = (["predict", box / "run", box / "v.npy", "--stitch", "--patch", "8"] if command == "predict"
            else ["postprocess", box / "full.zarr"])
    r = CliRunner().invoke(app, [str(a) for a in [*args, "-o", tmp_path / "out.zarr", f"--roi={roi}", "--quiet"]])
    one_error_line(r, "--roi", needle)
    assert not list(tmp_path.iterdir()) and tree(box) == before


def test_a_negative_roi_start_reaches_the_cli_in_a_subprocess(box, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    volseg = str(Path(sys.executable).with_name("volseg"))
    proc = subprocess.run([volseg, "predict", "run", "v.npy", "-o", str(tmp_path / "o.zarr"), "--stitch",
                           "--patch", "8", "--roi", "-30:,:,:"], cwd=box, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and proc.stderr.splitlines() == [proc.stderr.strip()], proc.stderr
    assert "error: --roi: -30:,:,:: z range -30: lies outside the volume of shape 20x20x16" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "o.zarr").exists()


def test_roi_and_mask_are_refused_for_diffusion_runs(box, tmp_path, make_diffusion_run):
    make_diffusion_run(tmp_path / "diff")
    for option in (["--roi", ":8,:,:"], ["--mask", str(box / "v.npy")]):
        r = CliRunner().invoke(app, ["predict", str(tmp_path / "diff"), str(box / "v.npy"), "-o",
                                     str(tmp_path / "out.zarr"), "--patch", "8", "--quiet", *option])
        one_error_line(r, option[0], "diffusion sampling runs over the whole volume")
        assert not (tmp_path / "out.zarr").exists()
