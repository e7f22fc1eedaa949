"""The fuzz table: every command fed bad inputs and option values, through the CLI on real files.

For every row: exit 2, exactly one stderr line starting ``error:``, no traceback, nothing new
under the output name, and every input byte-for-byte unchanged. Rows cover Typer/Click usage
errors, non-finite voxels, bad labels, absurd sizes, damaged Zarr, non-regular files, negative
seeds and non-finite options (README: "Non-finite voxels and divergence", "Usage errors").
"""

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from volseg.cli import app
from volseg.models import build_model

VOLSEG = str(Path(sys.executable).with_name("volseg"))


@pytest.fixture(autouse=True, scope="module")
def _one_command():
    """typer.testing.CliRunner builds the Click command from the app on every call (~0.2 s);
    the table builds it once."""
    import typer.testing

    command = typer.main.get_command(app)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(typer.testing, "_get_command", lambda a: command if a is app else typer.main.get_command(a))
        yield


def _invoke(args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _save_run(path: Path, *, poison: bool = False) -> None:
    torch.manual_seed(0)
    cfg = {"type": "unet", "in_channels": 1, "out_ch": 1, "ch": 4, "depth": 2}
    state = build_model(cfg).state_dict()
    if poison:
        first = next(k for k, v in state.items() if v.is_floating_point())
        state[first] = state[first].clone().fill_(float("nan"))
    path.mkdir()
    torch.save({"format": "volseg-run", "version": 1, "model_config": cfg, "state_dict": state},
               path / "model.pt")


def _save_rank4_onnx(path: Path) -> None:
    """An ONNX file with volseg's metadata whose input is 4D (N, C, y, x), not (N, C, z, y, x)."""
    import json

    try:
        import onnx
        from onnx import TensorProto, helper
    except ImportError:  # the row is skipped (see the table test)
        return

    meta = {"format": "volseg-export", "kind": "unet", "depth": 2, "in_channels": 1, "out_channels": 1,
            "patch": [8, 8, 8], "export_format": "onnx"}
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, "y", "x"])
    y = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["n", 1, "y", "x"])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["probabilities"])], "rank4", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    helper.set_model_props(model, {"volseg": json.dumps(meta)})
    onnx.save(model, str(path))


@pytest.fixture(scope="module")
def box(tmp_path_factory, make_diffusion_run):
    """A sandbox of small inputs, good and bad, made once for the whole table."""
    root = tmp_path_factory.mktemp("fuzz")
    rng = np.random.default_rng(0)
    v = rng.random((16, 16, 16)).astype(np.float32)
    np.save(root / "v.npy", v)
    np.save(root / "g.npy", (v > 0.5).astype(np.uint8))
    nan = v.copy()
    nan[3, 10, 7] = np.nan
    np.save(root / "nan.npy", nan)
    inf = v.copy()
    inf[5, 1, 2] = np.inf
    np.save(root / "inf.npy", inf)
    labels = (v > 0.5).astype(np.float32)
    labels[2, 3, 4] = 0.5
    np.save(root / "lf.npy", labels)
    np.save(root / "ln.npy", np.where(v > 0.5, 1, -1).astype(np.int16))
    np.save(root / "l7.npy", np.where(v > 0.5, 7, 0).astype(np.uint8))
    _save_run(root / "run")
    _save_run(root / "nanrun", poison=True)
    shutil.copytree(root / "run", root / "truncrun")
    model = (root / "truncrun" / "model.pt").read_bytes()
    (root / "truncrun" / "model.pt").write_bytes(model[:len(model) // 2])
    make_diffusion_run(root / "drun")
    for args in (("prepare", root / "v.npy", "-o", root / "s.zarr", "--chunks", "8", "--quiet"),
                 ("patchify", root / "v.npy", "--labels", root / "g.npy", "-o", root / "ps.zarr",
                  "--patch", "8", "--quiet"),
                 ("predict", root / "run", root / "v.npy", "-o", root / "pred.zarr", "--patch", "8",
                  "--device", "cpu", "--quiet")):
        r = _invoke(args)
        assert r.exit_code == 0, r.stderr
    from volseg.io import write_label_image

    write_label_image(root / "s.zarr", "surface", (v > 0.5).astype(np.uint8), chunks=8)
    shutil.copytree(root / "pred.zarr", root / "nanpred.zarr")
    shutil.copytree(root / "ps.zarr", root / "nanps.zarr")
    import zarr

    for store, name in (("nanpred.zarr", "patches"), ("nanps.zarr", "patches")):
        arr = zarr.open_group(str(root / store), mode="r+")[name]
        if store == "nanps.zarr":  # the training patches are uint8: make a float copy with a NaN
            group = zarr.open_group(str(root / store), mode="r+")
            data = arr[:].astype(np.float32)
            data[0, 0, 1, 2, 3] = np.nan
            del group[name]
            group.create_array(name, data=data, chunks=arr.chunks)
        else:
            patch = arr[2]
            patch[0, 1, 2, 3] = np.nan
            arr[2] = patch
    level = root / "s.zarr" / "0"
    meta = (level / "zarr.json").read_text()
    damaged = {
        "chunk.zarr": lambda d: (d / "0" / "c" / "1" / "0" / "1").write_bytes(b"garbage"),
        "trunc.zarr": lambda d: (d / "0" / "zarr.json").write_text(meta[:40]),
        "negshape.zarr": lambda d: (d / "0" / "zarr.json").write_text(meta.replace("16", "-16", 1)),
        "dtype.zarr": lambda d: (d / "0" / "zarr.json").write_text(meta.replace('"float32"', '"float99"')),
        "group.zarr": lambda d: (d / "zarr.json").write_text((d / "zarr.json").read_text()[:30]),
    }
    for name, spoil in damaged.items():
        shutil.copytree(root / "s.zarr", root / name)
        spoil(root / name)
    for name, src, chunk in (("chunkpred.zarr", "pred.zarr", "patches/c/3/0/0/0/0"),
                             ("chunkps.zarr", "ps.zarr", "patches/c/1/0/0/0/0"),
                             ("chunkpsl.zarr", "ps.zarr", "labels/c/2/0/0/0/0"),
                             ("chunklab.zarr", "s.zarr", "labels/surface/0/c/1/1/0")):
        shutil.copytree(root / src, root / name)
        (root / name / chunk).write_bytes((root / name / chunk).read_bytes()[:9])  # truncated
    np.save(root / "empty.npy", np.zeros((0, 16, 16), np.float32))
    np.save(root / "cplx.npy", (v * (1 + 2j)).astype(np.complex64))
    _save_rank4_onnx(root / "rank4.onnx")
    os.mkfifo(root / "fifo.npy")
    os.mkfifo(root / "fifo.tif")
    return root


@pytest.fixture(scope="module")
def box_digest(box):
    return _digest(box)


def _digest(root: Path) -> dict:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
        elif not p.is_dir():
            out[str(p.relative_to(root))] = "special"
    return out


TRAIN = ("--device", "cpu", "--quiet")
SCHED = "--scheduler: unknown scheduler 'slurm'; use threads, processes, distributed or tcp://HOST:PORT"
PRED = ("--patch", "8", "--device", "cpu", "--quiet")
# (id, command line with {x} = sandbox path and OUT = the row's output, what the error names)
# Rows whose failure is found mid-stream (a voxel deep inside the data) are marked "partial": the
# output folder may exist (cleaning up after a failed run is the output-safety half of the issue).
ROWS = [
    # Typer/Click usage errors: one line, exit 2
    ("missing-argument", ["info"], "VOLUME"),
    ("unknown-command", ["frobnicate"], "frobnicate"),
    ("missing-subcommand", ["synth"], "synth"),
    ("unknown-option", ["info", "{v.npy}", "--frob"], "--frob"),
    ("extra-argument", ["info", "{v.npy}", "{g.npy}"], "unexpected extra argument"),
    ("workers-0", ["predict", "{run}", "{v.npy}", "-o", "OUT", "--workers", "0"], "--workers"),
    ("steps-negative", ["train", "{ps.zarr}", "-o", "OUT", "--steps", "-1"], "--steps"),
    ("overlap-text", ["predict", "{run}", "{v.npy}", "-o", "OUT", "--overlap", "abc"], "--overlap"),
    ("missing-output", ["predict", "{run}", "{v.npy}"], "--output"),
    ("missing-gt", ["evaluate", "{v.npy}"], "GT"),
    ("levels-text", ["prepare", "{v.npy}", "-o", "OUT", "--levels", "abc"], "--levels"),
    ("stitch-workers-text", ["stitch", "{pred.zarr}", "-o", "OUT", "--workers", "x"], "--workers"),
    ("bench-batch-0", ["bench-memory", "--batch-size", "0"], "--batch-size"),
    ("demo-unknown-option", ["demo", "--frob"], "--frob"),
    ("patchify-seed-negative", ["patchify", "{v.npy}", "-o", "OUT", "--patch", "8", "--seed", "-1"], "--seed"),
    ("predict-seed-negative", ["predict", "{run}", "{v.npy}", "-o", "OUT", "--seed", "-1"], "--seed"),
    ("train-seed-negative", ["train", "{ps.zarr}", "-o", "OUT", "--seed", "-1"], "--seed"),
    ("synth-seed-negative", ["synth", "scroll", "-o", "OUT", "--seed", "-1"], "--seed"),
    # the execution options, parsed once per command (volseg.parallel.Execution.parse)
    ("prepare-scheduler", ["prepare", "{v.npy}", "-o", "OUT", "--scheduler", "slurm"], SCHED),
    ("patchify-scheduler", ["patchify", "{v.npy}", "-o", "OUT", "--patch", "8", "--scheduler", "slurm"], SCHED),
    ("predict-scheduler", ["predict", "{run}", "{v.npy}", "-o", "OUT", "--scheduler", "slurm", *PRED], SCHED),
    ("stitch-scheduler", ["stitch", "{pred.zarr}", "-o", "OUT", "--scheduler", "slurm"], SCHED),
    ("postprocess-scheduler", ["postprocess", "{s.zarr}", "-o", "OUT", "--scheduler", "slurm"], SCHED),
    ("evaluate-scheduler", ["evaluate", "{v.npy}", "{g.npy}", "--scheduler", "slurm"], SCHED),
    ("patchify-part-range", ["patchify", "{v.npy}", "-o", "OUT", "--patch", "8", "--part", "3/2"],
     "--part: '3/2' is out of range: I must be between 1 and N (N >= 1)"),
    ("predict-part-text", ["predict", "{run}", "{v.npy}", "-o", "OUT", "--stitch", "--part", "x", *PRED],
     "--part: expected I/N such as 1/4, got 'x'"),
    ("stitch-part-zero", ["stitch", "{pred.zarr}", "-o", "OUT", "--part", "0/2"], "--part: '0/2' is out of range"),
    ("postprocess-part-text", ["postprocess", "{s.zarr}", "-o", "OUT", "--part", "1/2/3"],
     "--part: expected I/N such as 1/4, got '1/2/3'"),
    # non-finite voxels and options
    ("predict-stitch-nan", ["predict", "{run}", "{nan.npy}", "-o", "OUT", "--stitch", *PRED], "partial:1 non-finite voxel (NaN) at (3, 10, 7)"),
    ("predict-store-inf", ["predict", "{run}", "{inf.npy}", "-o", "OUT", *PRED], "partial:1 non-finite voxel (+Inf) at (5, 1, 2)"),
    ("predict-diffusion-nan", ["predict", "{drun}", "{nan.npy}", "-o", "OUT", "--sampling-steps", "1", *PRED], "partial:(NaN) at (3, 10, 7)"),
    ("predict-nan-value-nan", ["predict", "{run}", "{nan.npy}", "-o", "OUT", "--stitch", "--nan-value", "nan", *PRED], "--nan-value"),
    ("predict-nan-value-inf", ["predict", "{run}", "{nan.npy}", "-o", "OUT", "--nan-value", "inf", *PRED], "--nan-value"),
    ("predict-threshold-nan", ["predict", "{run}", "{v.npy}", "-o", "OUT", "--stitch", "--threshold", "nan", *PRED], "--threshold"),
    ("predict-tta-rotate-negative", ["predict", "{run}", "{v.npy}", "-o", "OUT", "--stitch", "--tta-rotate", "-15", *PRED],
     "--tta-rotate: must be in [0, 45] degrees, got -15.0; e.g. --tta-rotate 15"),
    ("predict-ensemble-mean", ["predict", "{run}", "{run}", "{v.npy}", "-o", "OUT", "--stitch", "--ensemble-mean", "mode",
                               *PRED], "--ensemble-mean: 'mode' is not a mean; use arithmetic or geometric"),
    ("predict-ensemble-no-stitch", ["predict", "{run}", "{run}", "{v.npy}", "-o", "OUT", *PRED],
     "RUN: 2 runs form an ensemble, which blends into one volume: add --stitch"),
    ("evaluate-nan-pred", ["evaluate", "{nan.npy}", "{g.npy}", "--quiet"], "(NaN) at (3, 10, 7)"),
    ("evaluate-inf-truth", ["evaluate", "{v.npy}", "{inf.npy}", "--quiet"], "(+Inf) at (5, 1, 2)"),
    ("evaluate-threshold-nan", ["evaluate", "{v.npy}", "{g.npy}", "--threshold", "nan"], "--threshold"),
    ("evaluate-threshold-inf", ["evaluate", "{v.npy}", "{g.npy}", "--threshold", "inf"], "--threshold"),
    ("evaluate-nan-value-nan", ["evaluate", "{nan.npy}", "{g.npy}", "--nan-value", "nan"], "--nan-value"),
    ("stitch-nan-predictions", ["stitch", "{nanpred.zarr}", "-o", "OUT", "--quiet"], "partial:non-finite"),
    ("postprocess-nan", ["postprocess", "{nan.npy}", "-o", "OUT", "--quiet"], "nan.npy: 1 non-finite voxel (NaN) at (3, 10, 7); a prediction must be finite"),
    ("postprocess-inf-chunks", ["postprocess", "{inf.npy}", "-o", "OUT", "--chunks", "8", "--quiet"], "inf.npy: 1 non-finite voxel (+Inf) at (5, 1, 2) in the block starting at (0, 0, 0)"),
    # training divergence and bad training data
    ("train-lr-0", ["train", "{ps.zarr}", "-o", "OUT", "--lr", "0", *TRAIN], "--lr"),
    ("train-lr-negative", ["train", "{ps.zarr}", "-o", "OUT", "--lr", "-1", *TRAIN], "--lr"),
    ("train-lr-inf", ["train", "{ps.zarr}", "-o", "OUT", "--lr", "inf", *TRAIN], "--lr"),
    ("train-lr-nan", ["train", "{ps.zarr}", "-o", "OUT", "--lr", "nan", *TRAIN], "--lr"),
    ("train-nan-patches", ["train", "{nanps.zarr}", "-o", "OUT", "--steps", "1", *TRAIN], "(NaN)"),
    ("predict-nan-model", ["predict", "{nanrun}", "{v.npy}", "-o", "OUT", *PRED], "non-finite weights"),
    # labels
    ("patchify-float-labels", ["patchify", "{v.npy}", "--labels", "{lf.npy}", "-o", "OUT", "--patch", "8", "--quiet"], "partial:non-integer value 0.5 at (2, 3, 4)"),
    ("patchify-negative-labels", ["patchify", "{v.npy}", "--labels", "{ln.npy}", "-o", "OUT", "--patch", "8", "--quiet"], "partial:the value -1"),
    ("patchify-label-7", ["patchify", "{v.npy}", "--labels", "{l7.npy}", "-o", "OUT", "--patch", "8", "--quiet"], "partial:the value 7"),
    ("evaluate-label-7", ["evaluate", "{v.npy}", "{l7.npy}", "--quiet"], "the value 7"),
    # absurd sizes
    ("train-batch-huge", ["train", "{ps.zarr}", "-o", "OUT", "--batch-size", "100000", *TRAIN], "--batch-size"),
    ("train-patch-larger", ["train", "{s.zarr}", "-o", "OUT", "--patch", "32", *TRAIN], "--patch"),
    ("patchify-patch-larger", ["patchify", "{s.zarr}", "-o", "OUT", "--patch", "32"], "--patch"),
    ("predict-patch-no-pad", ["predict", "{run}", "{v.npy}", "-o", "OUT", "--patch", "32", "--no-pad", "--device", "cpu"], "--patch"),
    ("bench-budget-0", ["bench-memory", "--budget", "0"], "--budget"),
    ("bench-patch-4096", ["bench-memory", "--patch", "4096", "--device", "cpu"], "of memory of this machine (cpu)"),
    ("train-val-fraction-1.5", ["train", "{ps.zarr}", "-o", "OUT", "--val-fraction", "1.5", *TRAIN],
     "--val-fraction: 'data.val_fraction' must be in [0, 1)"),
    ("train-source-twice", ["train", "{ps.zarr}", "{ps.zarr}", "-o", "OUT", *TRAIN], "is the same source as"),
    ("train-diverges-at-start", ["train", "{ps.zarr}", "-o", "OUT", "--lr", "1e30", "--steps", "4", *TRAIN],
     "no checkpoint was saved, so nothing is left"),
    ("postprocess-close-huge", ["postprocess", "{s.zarr}", "-o", "OUT", "--close", "100000", "--quiet"], "--close: 100000 is too large: repairing one 16x16x16 chunk"),
    ("predict-patch-huge", ["predict", "{run}", "{v.npy}", "-o", "OUT", "--patch", "100000", "--device", "cpu"], "--patch: 100000x100000x100000 is too large: a batch of 1 patches"),
    ("synth-scroll-shape-huge", ["synth", "scroll", "-o", "OUT", "--shape", "100000"], "--shape: 100000x100000x100000 is too large"),
    ("synth-scan-shape-huge", ["synth", "scan", "-o", "OUT", "--shape", "16x16x100000000000"], "--shape: 16x16x100000000000 is too large"),
    ("predict-onnx-rank-4", ["predict", "{rank4.onnx}", "{v.npy}", "-o", "OUT", *PRED], "rank4.onnx: takes the input x ['n', 1, 'y', 'x'], not one (N, C, z, y, x) tensor"),
    ("info-empty", ["info", "{empty.npy}"], "empty.npy: is empty (shape 0x16x16)"),
    ("info-complex-json", ["info", "{cplx.npy}", "--json", "-"], "cplx.npy: has dtype complex64; volseg reads real numbers"),
    ("predict-empty", ["predict", "{run}", "{empty.npy}", "-o", "OUT", *PRED], "empty.npy: is empty"),
    ("evaluate-empty", ["evaluate", "{empty.npy}", "{empty.npy}"], "empty.npy: is empty"),
    # damaged Zarr input
    ("evaluate-corrupt-chunk", ["evaluate", "{chunk.zarr}", "{s.zarr}", "--metrics", "psnr", "--quiet"], "chunk.zarr/0: has a damaged chunk c/1/0/1 ("),
    ("evaluate-corrupt-labels", ["evaluate", "{s.zarr}", "{chunk.zarr}", "--metrics", "psnr", "--quiet"], "chunk.zarr/0: has a damaged chunk c/1/0/1 ("),
    ("info-corrupt-chunk", ["info", "{chunk.zarr}"], "chunk.zarr/0: has a damaged chunk c/1/0/1 ("),
    ("predict-corrupt-chunk", ["predict", "{run}", "{chunk.zarr}", "-o", "OUT", *PRED], "partial:chunk.zarr/0: has a damaged chunk c/1/0/1 ("),
    ("patchify-corrupt-chunk", ["patchify", "{chunk.zarr}", "-o", "OUT", "--patch", "8", "--quiet"], "partial:chunk.zarr/0: has a damaged chunk c/1/0/1 ("),
    ("postprocess-corrupt-chunk", ["postprocess", "{chunk.zarr}", "-o", "OUT", "--quiet"], "partial:chunk.zarr/0: has a damaged chunk c/1/0/1 ("),
    ("stitch-corrupt-patches", ["stitch", "{chunkpred.zarr}", "-o", "OUT", "--quiet"], "partial:chunkpred.zarr/patches: has a damaged chunk c/3/0/0/0/0 ("),
    ("train-corrupt-patches", ["train", "{chunkps.zarr}", "-o", "OUT", "--steps", "2", *TRAIN], "partial:chunkps.zarr/patches: has a damaged chunk c/1/0/0/0/0 ("),
    ("train-corrupt-labels", ["train", "{chunkpsl.zarr}", "-o", "OUT", "--steps", "2", *TRAIN], "partial:chunkpsl.zarr/labels: has a damaged chunk c/2/0/0/0/0 ("),
    ("patchify-corrupt-labels", ["patchify", "{chunklab.zarr}", "-o", "OUT", "--patch", "8", "--quiet"], "partial:chunklab.zarr/labels/surface/0: has a damaged chunk c/1/1/0 ("),
    ("train-corrupt-labels-volume", ["train", "{chunklab.zarr}", "-o", "OUT", "--patch", "8", "--steps", "2", *TRAIN], "partial:chunklab.zarr/labels/surface/0: has a damaged chunk c/1/1/0 ("),
    ("predict-truncated-run", ["predict", "{truncrun}", "{v.npy}", "-o", "OUT", *PRED], "truncrun/model.pt: is corrupt or truncated"),
    ("train-corrupt-volume", ["train", "{chunk.zarr}", "-o", "OUT", "--patch", "8", "--steps", "2", *TRAIN], "partial:chunk.zarr/0: has a damaged chunk c/1/0/1 ("),
    ("info-truncated-metadata", ["info", "{trunc.zarr}"], "damaged array metadata"),
    ("info-negative-shape", ["info", "{negshape.zarr}"], "damaged array metadata"),
    ("info-wrong-dtype", ["info", "{dtype.zarr}"], "damaged array metadata"),
    ("info-truncated-group", ["info", "{group.zarr}"], "not a readable Zarr store"),
    ("predict-truncated-metadata", ["predict", "{run}", "{trunc.zarr}", "-o", "OUT", *PRED], "damaged array metadata"),
    ("prepare-corrupt-chunk", ["prepare", "{chunk.zarr}", "-o", "OUT", "--quiet"], "partial:chunk.zarr/0: has a damaged chunk c/1/0/1 ("),
    # non-regular files
    ("info-fifo", ["info", "{fifo.npy}"], "not a regular file"),
    ("evaluate-fifo", ["evaluate", "{fifo.npy}", "{g.npy}"], "not a regular file"),
    ("prepare-fifo", ["prepare", "{fifo.tif}", "-o", "OUT"], "not a regular file"),
]


def _args(row_args, root: Path, out: Path) -> list[str]:
    args = []
    for a in row_args:
        if a == "OUT":
            args.append(str(out))
        elif a.startswith("{") and a.endswith("}"):
            args.append(str(root / a[1:-1]))
        else:
            args.append(a)
    return args


def test_the_table_is_big_enough():
    assert len({r[0] for r in ROWS}) == len(ROWS) >= 40
    assert {r[1][0] for r in ROWS} >= {"prepare", "info", "synth", "patchify", "train", "predict",
                                        "stitch", "evaluate", "bench-memory", "demo"}


@pytest.mark.parametrize("name, row_args, expect", ROWS, ids=[r[0] for r in ROWS])
def test_bad_input_exits_2_with_one_line(box, box_digest, tmp_path, name, row_args, expect):
    if "{rank4.onnx}" in row_args:
        pytest.importorskip("onnxruntime")
        if not (box / "rank4.onnx").exists():
            pytest.skip("onnx is not installed")
    out = tmp_path / "out.zarr"
    before = box_digest
    r = _invoke(_args(row_args, box, out))
    lines = r.stderr.splitlines()
    assert r.exit_code == 2, (r.exit_code, r.stderr, r.stdout)
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    partial = expect.startswith("partial:")
    assert expect.removeprefix("partial:") in lines[0], lines[0]
    assert "Traceback" not in r.stderr + r.stdout and "internal" not in lines[0]
    if not partial:
        assert not [p.name for p in tmp_path.iterdir() if p.name.startswith("out")], "a refused run left output"
    assert _digest(box) == before, "an input changed"


@pytest.mark.parametrize("args, expect", [
    ([], "error: volseg: missing command"),
    (["predict", "run", "v.npy", "-o", "o.zarr", "--workers", "0"], "error: --workers: '0': input should be"),
    (["info", "fifo.npy"], "not a regular file"),
])
def test_usage_errors_in_a_subprocess(box, args, expect):
    proc = subprocess.run([VOLSEG, *args], cwd=box, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [proc.stderr.strip()] and expect in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and "╭" not in proc.stderr


def test_an_absurd_close_names_the_memory_it_would_take(box, tmp_path, monkeypatch):
    import volseg.memlimit

    monkeypatch.setattr(volseg.memlimit, "machine_memory", lambda: 64 * 2**30)
    r = _invoke(["postprocess", box / "s.zarr", "-o", tmp_path / "o.zarr", "--close", "1000", "--quiet"])
    assert r.exit_code == 2 and r.stderr.startswith("error: --close: 1000 is too large: repairing one "), r.stderr
    assert "GiB, more than the 64.0 GiB of memory of this machine; use a radius of" in r.stderr
    assert not (tmp_path / "o.zarr").exists()
    r = _invoke(["postprocess", box / "s.zarr", "-o", tmp_path / "o.zarr", "--close", "2", "--quiet"])
    assert r.exit_code == 0, r.stderr


def test_help_and_version_still_work():
    assert _invoke(["--version"]).exit_code == 0
    r = _invoke(["predict", "--help"])
    assert r.exit_code == 0 and "--nan-value" in r.stdout
