"""The regression baseline of image translation: a UNet trained with an L1/L2 loss on an image
target (``model.type: unet``, ``loss.type: l1``), predicting the image itself, not a probability."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import zarr
from typer.testing import CliRunner

from volseg.cli import app
from volseg.errors import VolsegError
from volseg.models import build_model, load_model
from volseg.training.config import resolve, task_of
from volseg.training.trainer import model_config

runner = CliRunner()


def test_config_task_and_model_config():
    seg = resolve(model_type="unet")
    seg["model"].update(norm_mean=0.0, norm_std=1.0)
    assert seg["loss"]["type"] == "segmentation" and task_of(seg) == "segmentation"
    assert "target_mean" not in model_config(seg) and "output" not in model_config(seg)
    reg = resolve(model_type="unet", overrides={"loss.type": "l1"})
    assert task_of(reg) == "translation" and task_of(resolve(model_type="diffusion")) == "translation"
    reg["model"].update(target_mean=5.0, target_std=2.0, norm_mean=0.0, norm_std=1.0)
    model = build_model(model_config(reg))
    assert model.output == "image"
    x = torch.zeros(1, 1, 16, 16, 16)
    logits = model.logits(x)
    torch.testing.assert_close(model(x), logits * 2.0 + 5.0)       # raw target units, no sigmoid
    assert set(model.state_dict()) == set(build_model(model_config(seg)).state_dict())
    with pytest.raises(VolsegError, match="model.output"):
        build_model({"type": "unet", "output": "logits"})


@pytest.mark.parametrize("kind", ["l1", "l2"])
def test_regression_loss_is_the_error_of_the_standardised_target(kind):
    from volseg.training.loop import unet_loss

    torch.manual_seed(0)
    model = build_model({"type": "unet", "ch": 4, "depth": 1, "output": "image", "target_mean": 1.0,
                         "target_std": 2.0})
    batch = {"image": torch.randn(2, 1, 8, 8, 8), "target": torch.randn(2, 1, 8, 8, 8)}
    loss = unet_loss(model, batch, {"type": kind})
    diff = model.logits(batch["image"]) - (batch["target"] - 1.0) / 2.0
    expected = diff.abs().mean() if kind == "l1" else diff.square().mean()
    torch.testing.assert_close(loss, expected)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("reg")
    assert runner.invoke(app, ["synth", "scan", "-o", str(root / "scan.zarr"), "--shape", "32",
                               "--quiet"]).exit_code == 0
    cfg = root / "cfg.yml"
    cfg.write_text("model: {type: unet, ch: 4, depth: 2}\nloss: {type: l1}\n"
                   "training: {validation_freq: 10, snapshot_freq: 10, val_batches: 2}\n"
                   "data: {samples_per_epoch: 8}\n")
    r = runner.invoke(app, ["train", str(root / "scan.zarr"), "-c", str(cfg), "--patch", "16", "--steps", "20",
                            "--lr", "0.01", "-o", str(root / "run"), "--quiet", "--json", str(root / "r.json")])
    assert r.exit_code == 0, r.output
    return root, json.loads((root / "r.json").read_text())


def test_trains_on_image_targets_and_validates_by_psnr(trained):
    root, result = trained
    assert result["metric"] == "val_psnr" and result["best_metric"] is not None
    records = [json.loads(line) for line in (root / "run" / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in records if "val_psnr" in r]
    assert val and "val_psnr_input" in val[-1]
    model = load_model(root / "run")
    assert model.output == "image"


def test_predict_writes_the_image_and_refuses_a_threshold(trained):
    root, _ = trained
    out = root / "pred.zarr"
    r = runner.invoke(app, ["predict", str(root / "run"), str(root / "scan.zarr"), "-o", str(out), "--stitch",
                            "--patch", "16", "--device", "cpu", "--quiet"])
    assert r.exit_code == 0, r.output
    pred = zarr.open_array(str(out / "0"), mode="r")[:]
    target = zarr.open_array(str(root / "scan.zarr" / "target" / "0"), mode="r")[:]
    assert zarr.open_group(str(out)).attrs["volseg"]["output"]["kind"] == "image"
    assert pred.shape == target.shape and np.isfinite(pred).all()
    # regression of the clean image: a short run already beats predicting the target's mean
    assert np.mean((pred - target) ** 2) < np.mean((target - target.mean()) ** 2)
    # through a patch store and `volseg stitch` too
    assert runner.invoke(app, ["predict", str(root / "run"), str(root / "scan.zarr"), "-o",
                               str(root / "p.zarr"), "--patch", "16", "--device", "cpu", "--quiet"]).exit_code == 0
    assert runner.invoke(app, ["stitch", str(root / "p.zarr"), "-o", str(root / "s.zarr"), "--quiet"]).exit_code == 0
    np.testing.assert_allclose(zarr.open_array(str(root / "s.zarr" / "0"), mode="r")[:], pred, atol=2e-2)
    bad = root / "bad.zarr"
    r = runner.invoke(app, ["predict", str(root / "run"), str(root / "scan.zarr"), "-o", str(bad), "--stitch",
                            "--patch", "16", "--threshold", "0.5", "--device", "cpu"])
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: --threshold:"), r.stderr
    assert not bad.exists()


def test_segmentation_data_for_a_regression_unet_is_refused(tmp_path):
    assert runner.invoke(app, ["synth", "scroll", "-o", str(tmp_path / "s.zarr"), "--shape", "32",
                               "--quiet"]).exit_code == 0
    r = runner.invoke(app, ["train", str(tmp_path / "s.zarr"), "--patch", "16", "--steps", "1",
                            "-o", str(tmp_path / "run"), "-c", str(_cfg(tmp_path))])
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1 and "target" in lines[0], r.stderr
    assert not (tmp_path / "run").exists()


def _cfg(tmp_path):
    path = tmp_path / "l2.yml"
    path.write_text("loss: {type: l2}\n")
    return path
