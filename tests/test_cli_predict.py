"""`volseg predict` / `volseg stitch` on the command line: bad inputs exit 2 and touch nothing."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
import zarr
from typer.testing import CliRunner

from volseg.cli import app
from volseg.models import build_model

VOLSEG = str(Path(sys.executable).with_name("volseg"))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    cfg = {"type": "unet", "in_channels": 1, "out_ch": 1, "ch": 4, "depth": 2}
    (root / "run").mkdir()
    torch.save({"format": "volseg-run", "version": 1, "model_config": cfg,
                "state_dict": build_model(cfg).state_dict()}, root / "run" / "model.pt")
    np.save(root / "v.npy", np.random.default_rng(0).normal(size=(20, 24, 18)).astype(np.float32))
    np.save(root / "flat.npy", np.zeros((20, 24), np.float32))
    (root / "empty_run").mkdir()
    return root


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_predict_stitch_and_rerun_on_the_command_line(files, tmp_path):
    out = tmp_path / "o.zarr"
    r = invoke("predict", files / "run", files / "v.npy", "-o", out, "--patch", "8", "--stitch",
               "--chunks", "16", "--device", "cpu", "--quiet")
    assert r.exit_code == 0, r.stderr
    assert zarr.open_array(str(out / "0")).shape == (20, 24, 18)
    r = invoke("predict", files / "run", files / "v.npy", "-o", out, "--patch", "8", "--stitch",
               "--chunks", "16", "--device", "cpu", "--json", "-")
    assert r.exit_code == 0 and '"chunks_written": 0' in r.stdout
    r = invoke("predict", files / "run", files / "v.npy", "-o", tmp_path / "t.zarr", "--patch", "8", "--stitch",
               "--chunks", "16", "--tile", "16x8", "--device", "cpu", "--quiet")
    assert r.exit_code == 0, r.stderr
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "t.zarr" / "0"))[:], zarr.open_array(str(out / "0"))[:])


@pytest.mark.parametrize("extra, where", [
    (("--overlap", "1.5"), "--overlap"),
    (("--part", "3/2"), "--part"),
    (("--patch", "10"), "--patch"),
    (("--patch", "32", "--no-pad"), "--patch"),
    (("--blend", "median"), "--blend"),
    (("--device", "cuda"), "--device"),
    (("--threshold", "1.5", "--stitch"), "--threshold"),
    (("--batch-size", "0"), "--batch-size"),
    (("--threshold", "0.5"), "--threshold"),  # a patch store keeps probabilities
    (("--tile", "8x"), "--tile"),
    (("--tile", "-1", "--stitch"), "--tile"),
])
def test_bad_options_exit_2_naming_the_option(files, tmp_path, extra, where):
    if where == "--device" and torch.cuda.is_available():
        pytest.skip("CUDA present")
    r = invoke("predict", files / "run", files / "v.npy", "-o", tmp_path / "o.zarr", *extra)
    assert r.exit_code == 2, r.stderr
    assert r.stderr.startswith("error: ") and where in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o.zarr").exists()


def test_bad_inputs_exit_2_and_leave_no_output(files, tmp_path):
    r = invoke("predict", files / "empty_run", files / "v.npy", "-o", tmp_path / "o.zarr")
    assert r.exit_code == 2 and "model.pt" in r.stderr and str(files / "empty_run") in r.stderr
    r = invoke("predict", files / "run", files / "flat.npy", "-o", tmp_path / "o.zarr")
    assert r.exit_code == 2 and "flat.npy" in r.stderr
    r = invoke("stitch", files / "v.npy", "-o", tmp_path / "o.zarr")
    assert r.exit_code == 2 and "patch store" in r.stderr
    assert not (tmp_path / "o.zarr").exists()


def test_existing_output_with_other_settings_is_refused_and_untouched(files, tmp_path):
    out = tmp_path / "o.zarr"
    base = ["predict", files / "run", files / "v.npy", "-o", out, "--patch", "8", "--stitch", "--device", "cpu",
            "--quiet"]
    assert invoke(*base).exit_code == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    r = invoke(*base, "--overlap", "0.25")
    assert r.exit_code == 2 and "other settings" in r.stderr and "--overwrite" in r.stderr
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    (tmp_path / "file.zarr").write_text("not a volume")
    r = invoke(*base[:4], tmp_path / "file.zarr", *base[5:])
    assert r.exit_code == 2 and (tmp_path / "file.zarr").read_text() == "not a volume"


def test_real_subprocess_predict_then_stitch(files, tmp_path):
    store, out = tmp_path / "p.zarr", tmp_path / "o.zarr"
    run = subprocess.run([VOLSEG, "predict", str(files / "run"), str(files / "v.npy"), "-o", str(store),
                          "--patch", "8", "--device", "cpu", "--quiet"], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    run = subprocess.run([VOLSEG, "stitch", str(store), "-o", str(out), "--blend", "crop", "--threshold", "0.5",
                          "--quiet"], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    labels = zarr.open_array(str(out / "0"))[:]
    assert labels.dtype == np.uint8 and labels.shape == (20, 24, 18)
    bad = subprocess.run([VOLSEG, "stitch", str(store), "-o", str(out), "--part", "0/2"],
                         capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and bad.stderr.startswith("error: --part")


def _tree_digest(root: Path) -> dict:
    import hashlib

    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def half(files, tmp_path_factory):
    """An unfinished output: one part of two of `predict --stitch`."""
    out = tmp_path_factory.mktemp("half") / "half.zarr"
    r = invoke("predict", files / "run", files / "v.npy", "-o", out, "--patch", "8", "--stitch",
               "--chunks", "16", "--device", "cpu", "--quiet", "--part", "1/2")
    assert r.exit_code == 0, r.stderr
    assert zarr.open_group(str(out)).attrs["volseg"]["complete"] is False
    return out


@pytest.mark.parametrize("extra", [("--stitch",), (), ("--stitch", "--level", "0")])
def test_an_unfinished_output_is_refused_as_input(files, half, tmp_path, extra):
    before = _tree_digest(half)
    out = tmp_path / "o.zarr"
    r = invoke("predict", files / "run", half, "-o", out, "--patch", "8", "--chunks", "16", "--device", "cpu",
               "--quiet", *extra)
    assert r.exit_code == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {half}: ") and "Traceback" not in r.stderr
    assert "4 of 8 chunks written; finish it with the same command" in lines[0], lines[0]
    assert not out.exists() and not list(tmp_path.iterdir()) and _tree_digest(half) == before


def test_the_recorded_settings_repeat_a_prediction_with_config(files, tmp_path):
    """Every predict output holds its resolved settings; --config reads them back (defaults < file < flags)."""
    first = tmp_path / "first.zarr"
    r = invoke("predict", files / "run", files / "v.npy", "-o", first, "--patch", "8", "--overlap", "0.25",
               "--stitch", "--chunks", "16", "--tile", "16", "--threshold", "0.5", "--device", "cpu", "--quiet")
    assert r.exit_code == 0, r.stderr
    recorded = first / "volseg-predict.yml"
    settings = yaml.safe_load(recorded.read_text())
    assert settings["patch"] == [8, 8, 8] and settings["overlap"] == 0.25 and settings["threshold"] == 0.5
    assert settings["stitch"] is True and settings["chunks"] == [16, 16, 16] and settings["tile"] == [16, 16]
    again = tmp_path / "again.zarr"
    r = invoke("predict", files / "run", files / "v.npy", "-o", again, "--config", recorded, "--quiet")
    assert r.exit_code == 0, r.stderr
    np.testing.assert_array_equal(zarr.open_array(str(again / "0"))[:], zarr.open_array(str(first / "0"))[:])
    assert zarr.open_group(str(again)).attrs["volseg"]["settings"] == {
        **zarr.open_group(str(first)).attrs["volseg"]["settings"]}
    assert (again / "volseg-predict.yml").read_text().split("\n", 1)[1] == recorded.read_text().split("\n", 1)[1]
    flag = tmp_path / "flag.zarr"  # a flag given on the command line beats the file
    r = invoke("predict", files / "run", files / "v.npy", "-o", flag, "--config", recorded, "--overlap", "0.5",
               "--quiet")
    assert r.exit_code == 0, r.stderr
    assert zarr.open_group(str(flag)).attrs["volseg"]["settings"]["overlap"] == 0.5
    assert zarr.open_group(str(flag)).attrs["volseg"]["settings"]["patch"] == [8, 8, 8]


@pytest.mark.parametrize("text, needle", [
    (None, "no such settings file"), ("- 8\n", "mapping"), ("patch: [8\n", "YAML"),
    ("patch_size: 8\n", "unknown predict setting(s) patch_size"), ("overlap: 2\n", "--overlap"),
])
def test_a_bad_config_exits_2_with_one_line_and_writes_nothing(files, tmp_path, text, needle):
    from cli_checks import one_error_line, tree

    cfg = tmp_path / "s.yml"
    if text is not None:
        cfg.write_text(text)
    before = tree(tmp_path)
    r = invoke("predict", files / "run", files / "v.npy", "-o", tmp_path / "o.zarr", "--config", cfg, "--stitch")
    one_error_line(r, needle)
    assert tree(tmp_path) == before
