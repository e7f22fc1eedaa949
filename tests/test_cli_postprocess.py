"""`volseg postprocess` through the CLI: output, JSON, and one error line for every bad input."""

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from cli_checks import one_error_line
from volseg.cli import app

runner = CliRunner()


def _digest(folder):
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def prob(tmp_path_factory):
    from volseg.io import write_volume

    root = tmp_path_factory.mktemp("cli_pp")
    z, y, x = np.mgrid[:16, :16, :16]
    p = (0.5 + 0.4 * np.sin(x / 2.0) * np.cos(y / 3.0)).astype(np.float32)
    write_volume(root / "prob.zarr", p, chunks=8)
    return root / "prob.zarr"


def test_postprocess_writes_uint8_labels_and_json(prob, tmp_path):
    import zarr

    result = runner.invoke(app, ["postprocess", str(prob), "-o", str(tmp_path / "o.zarr"), "--min-size", "5",
                                 "--hysteresis", "0.5,0.8", "--chunks", "8", "--json", "-", "--quiet"])
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["chunks_written"] == 8 and summary["components"] >= 1
    out = zarr.open_array(str(tmp_path / "o.zarr" / "0"))
    assert out.dtype == np.uint8 and set(np.unique(out[:])) <= {0, 1}


@pytest.mark.parametrize("args,needles", [
    (["--hysteresis", "0.8,0.3"], ("--hysteresis", "above HIGH")),
    (["--hysteresis", "0.3"], ("--hysteresis", "LOW,HIGH")),
    (["--threshold", "1.5"], ("--threshold", "outside the range")),
    (["--threshold", "0.5", "--hysteresis", "0.3,0.6"], ("--threshold", "not both")),
    (["--min-size", "-3"], ("--min-size", ">= 0")),
    (["--fill-holes", "-1"], ("--fill-holes", ">= 0")),
    (["--part", "3/2"], ("--part",)),
    (["--smooth", "-1"], ("--smooth", "between 0 and 8")),
    (["--smooth", "nan"], ("--smooth", "between 0 and 8")),
    (["--smooth", "40"], ("--smooth", "between 0 and 8")),
])
def test_bad_options_exit_2_with_one_line_and_leave_the_input_alone(prob, tmp_path, args, needles):
    before = _digest(prob)
    result = runner.invoke(app, ["postprocess", str(prob), "-o", str(tmp_path / "o.zarr"), "--quiet", *args])
    one_error_line(result, *needles)
    assert not (tmp_path / "o.zarr").exists()
    assert _digest(prob) == before


def test_smooth_on_integer_labels_is_refused(tmp_path):
    labels = tmp_path / "labels.npy"
    np.save(labels, (np.arange(16 ** 3).reshape(16, 16, 16) % 7 == 0).astype(np.uint8))
    before = labels.read_bytes()
    result = runner.invoke(app, ["postprocess", str(labels), "-o", str(tmp_path / "o.zarr"), "--smooth", "1"])
    one_error_line(result, "--smooth", "integer labels")
    assert not (tmp_path / "o.zarr").exists() and labels.read_bytes() == before
    ok = runner.invoke(app, ["postprocess", str(labels), "-o", str(tmp_path / "o.zarr"), "--smooth", "0",
                             "--min-size", "0", "--quiet"])
    assert ok.exit_code == 0, ok.stderr


def test_output_equal_to_or_inside_the_input_is_refused(prob):
    before = _digest(prob)
    for out, why in ((prob, "is the input"), (prob / "labels" / "clean", "lies inside the input")):
        one_error_line(runner.invoke(app, ["postprocess", str(prob), "-o", str(out), "--quiet"]), why)
    assert _digest(prob) == before


def test_subprocess_end_to_end_and_other_settings_are_refused(prob, tmp_path):
    out = tmp_path / "clean.zarr"
    cmd = [sys.executable, "-m", "volseg", "postprocess", str(prob), "-o", str(out), "--chunks", "8",
           "--quiet", "--scheduler", "threads", "--workers", "2"]
    assert subprocess.run(cmd, capture_output=True, text=True, timeout=120).returncode == 0
    again = subprocess.run(cmd + ["--min-size", "3"], capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and again.stderr.startswith("error: ") and "other settings" in again.stderr


def test_predict_stitch_postprocess_writes_the_same_labels_as_postprocess(tmp_path):
    import torch
    import zarr

    from volseg.models import build_model

    torch.manual_seed(0)
    cfg = {"type": "unet", "in_channels": 1, "out_ch": 1, "ch": 4, "depth": 2}
    (tmp_path / "run").mkdir()
    torch.save({"format": "volseg-run", "version": 1, "model_config": cfg,
                "state_dict": build_model(cfg).state_dict()}, tmp_path / "run" / "model.pt")
    np.save(tmp_path / "v.npy", np.random.default_rng(0).normal(size=(16, 16, 16)).astype(np.float32))
    base = ["predict", str(tmp_path / "run"), str(tmp_path / "v.npy"), "-o", str(tmp_path / "p.zarr"),
            "--patch", "8", "--chunks", "8", "--device", "cpu", "--quiet"]
    bad = runner.invoke(app, base + ["--postprocess", str(tmp_path / "l.zarr")])
    one_error_line(bad, "--postprocess", "--stitch")
    ok = runner.invoke(app, base + ["--stitch", "--postprocess", str(tmp_path / "l.zarr"), "--json", "-"])
    assert ok.exit_code == 0, ok.stderr
    assert json.loads(ok.stdout)["postprocess"]["chunks_written"] == 8
    from volseg.postprocess import postprocess_array

    prob = zarr.open_array(str(tmp_path / "p.zarr" / "0"))[:]
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "l.zarr" / "0"))[:],
                                  postprocess_array(prob, threshold=0.5, smooth=1.0, min_size=200, fill_holes=16))


@pytest.mark.parametrize("args,needle", [
    (["--threshold", "0.5"], "no voxel reaches --threshold 0.5"),
    (["--hysteresis", "0.01,0.5"], "no voxel reaches --hysteresis HIGH 0.5"),
])
def test_threshold_above_every_smoothed_value_warns(tmp_path, args, needle):
    """One bright voxel: inside the raw range, but after --smooth 1 it peaks at ~0.06."""
    import zarr

    prob = tmp_path / "prob.npy"
    values = np.zeros((16, 16, 16), np.float32)
    values[8, 8, 8] = 1.0
    np.save(prob, values)
    out = tmp_path / "o.zarr"
    result = runner.invoke(app, ["postprocess", str(prob), "-o", str(out), "--smooth", "1", "--quiet", *args])
    assert result.exit_code == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"warning: {prob}") and needle in lines[0], result.stderr
    assert "all background" in lines[0] and "--smooth 0" in lines[0]
    assert not zarr.open_array(str(out / "0"))[:].any()
    again = runner.invoke(app, ["postprocess", str(prob), "-o", str(tmp_path / "p.zarr"), "--smooth", "0",
                                "--min-size", "0", "--quiet", *args])
    assert again.exit_code == 0 and "warning" not in again.stderr
