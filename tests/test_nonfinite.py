"""Non-finite voxels and training divergence through the CLI: refused by default, replaced only
with an explicit --nan-value (warned once with the count), never saved into a model."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from typer.testing import CliRunner

from volseg.cli import app
from volseg.io.finite import check_array, describe
from volseg.models import build_model


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("nonfinite")
    torch.manual_seed(0)
    cfg = {"type": "unet", "in_channels": 1, "out_ch": 1, "ch": 4, "depth": 2}
    (root / "run").mkdir()
    torch.save({"format": "volseg-run", "version": 1, "model_config": cfg,
                "state_dict": build_model(cfg).state_dict()}, root / "run" / "model.pt")
    v = np.random.default_rng(1).random((16, 16, 16)).astype(np.float32)
    bad = v.copy()
    bad[3, 10, 7], bad[4, 0, 0], bad[9, 9, 9] = np.nan, np.inf, -np.inf
    np.save(root / "bad.npy", bad)
    np.save(root / "clean.npy", np.where(np.isfinite(bad), bad, 0).astype(np.float32))
    np.save(root / "g.npy", (v > 0.5).astype(np.uint8))
    np.save(root / "noisy.npy", (v + 0.05).astype(np.float32))
    return root


def test_describe_names_count_kinds_and_first_position():
    values = np.zeros((4, 5, 6), np.float32)
    values[2, 3, 4], values[3, 0, 0] = np.nan, -np.inf
    assert describe(values, offset=(10, 0, 0)) == "2 non-finite voxels (NaN, -Inf) at (12, 3, 4)"
    assert describe(np.zeros((2, 2, 2), np.int16)) is None
    assert np.isfinite(check_array(values, "x", nan_value=0.0)).all()


def test_predict_with_nan_value_warns_once_and_writes_a_finite_volume(files, tmp_path):
    r = invoke("predict", files / "run", files / "bad.npy", "-o", tmp_path / "a.zarr", "--nan-value", "0",
               "--patch", "8", "--stitch", "--device", "cpu", "--quiet")
    assert r.exit_code == 0, r.stderr
    assert r.stderr.strip() == f"warning: {files / 'bad.npy'}: 3 non-finite voxels replaced by 0 (--nan-value)"
    assert np.isfinite(zarr.open_array(str(tmp_path / "a.zarr" / "0"))[:]).all()


def test_evaluate_with_nan_value_scores_the_replaced_volume(files):
    r = invoke("evaluate", files / "bad.npy", files / "g.npy", "--nan-value", "0", "--metrics", "dice",
               "--json", "-", "--quiet")
    assert r.exit_code == 0, r.stderr
    assert "3 non-finite voxels replaced by 0" in r.stderr
    clean = invoke("evaluate", files / "clean.npy", files / "g.npy", "--metrics", "dice", "--json", "-", "--quiet")
    assert json.loads(r.stdout) == json.loads(clean.stdout)
    r = invoke("evaluate", files / "bad.npy", files / "noisy.npy", "--nan-value", "0", "--metrics", "psnr",
               "--json", "-", "--quiet")
    assert r.exit_code == 0 and json.loads(r.stdout)["psnr"] > 0


def _strict_lines(path: Path) -> list[dict]:
    def refuse(name):
        raise ValueError(f"{name} in metrics.jsonl")
    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


def test_divergence_stops_at_the_first_non_finite_loss_and_keeps_the_last_good_checkpoint(files, tmp_path):
    r = invoke("patchify", files / "clean.npy", "--labels", files / "g.npy", "-o", tmp_path / "p.zarr",
               "--patch", "8", "--quiet")
    assert r.exit_code == 0, r.stderr
    run = tmp_path / "run"
    r = invoke("train", tmp_path / "p.zarr", "-o", run, "--steps", "2", "--device", "cpu", "--quiet")
    assert r.exit_code == 0, r.stderr
    good = (run / "model.pt").read_bytes()
    r = invoke("train", tmp_path / "p.zarr", "-o", run, "--resume", "--steps", "12", "--lr", "1e30",
               "--device", "cpu", "--quiet")
    assert r.exit_code == 2, r.stderr
    line = r.stderr.strip()
    assert line.startswith(f"error: {run}: ") and "at step" in line and "lower --lr (now 1e+30)" in line, line
    assert "the last good checkpoint is kept" in line
    assert (run / "model.pt").read_bytes() == good
    assert not (run / "best.pt").exists() or torch.isfinite(next(iter(torch.load(
        run / "best.pt", weights_only=True)["state_dict"].values()))).all()
    assert all(rec["step"] <= 12 for rec in _strict_lines(run / "metrics.jsonl"))
