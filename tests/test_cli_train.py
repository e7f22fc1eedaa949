"""`volseg train` end to end: patch store and volume inputs, exit codes, no partial model.pt."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from volseg.cli import app
from volseg.models import load_model

torch.set_num_threads(1)
runner = CliRunner()
TINY = ["--steps", "4", "--batch-size", "2", "--device", "cpu", "--quiet"]


def _store(path: Path, *, n=8, side=16, task="segmentation"):
    from volseg.data.patchstore import create_store

    rng = np.random.default_rng(0)
    attrs = {"kind": "patches", "source": "synthetic", "source_shape": [64, 64, 64],
             "patch": [side] * 3, "mode": "grid"}
    group = create_store(path, n=n, channels=1, patch=(side,) * 3, dtype="uint8", attrs=attrs,
                         labels=task == "segmentation", targets=task == "translation",
                         origins=np.zeros((n, 3), dtype=np.int64))
    label = (rng.random((n, 1, side, side, side)) > 0.7).astype(np.uint8)
    image = (100 + 60 * (label == 1) + rng.normal(0, 10, label.shape)).clip(0, 255)
    group["patches"][:] = image.astype(np.uint8)
    if task == "segmentation":
        label[:, :, :2] = 2
        group["labels"][:] = label
    else:
        group["targets"][:] = (100 + 60 * (label == 1)).astype(np.float32)
    return path


@pytest.fixture(scope="module")
def seg_store(tmp_path_factory):
    return _store(tmp_path_factory.mktemp("data") / "patches.zarr")


def _cfg(tmp_path, text):
    path = tmp_path / "cfg.yml"
    path.write_text(text)
    return str(path)


def test_train_unet_on_a_patch_store(tmp_path, seg_store):
    run = tmp_path / "run"
    cfg = _cfg(tmp_path, "model:\n  ch: 4\n  depth: 2\ntraining:\n  validation_freq: 2\n")
    result = runner.invoke(app, ["train", str(seg_store), "--model", "unet", "-o", str(run),
                                 "--config", cfg, "--json", "-", *TINY])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["steps"] == 4 and summary["metric"] == "val_dice"
    assert (run / "model.pt").is_file() and (run / "best.pt").is_file()
    assert "batch_size: 2" in (run / "config.yml").read_text()
    model = load_model(run)
    with torch.no_grad():
        assert model(torch.full((1, 1, 16, 16, 16), 130.0)).shape == (1, 1, 16, 16, 16)
    result = runner.invoke(app, ["train", str(seg_store), "-o", str(run), "--resume",
                                 "--steps", "6", "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    assert torch.load(run / "model.pt", weights_only=True)["step"] == 6


def test_train_diffusion_on_a_patch_store(tmp_path):
    store = _store(tmp_path / "scan.zarr", n=4, side=8, task="translation")
    cfg = _cfg(tmp_path, "model:\n  ch: 8\n  ch_mult: [1, 2]\ndiffusion:\n  val_samples: 1\n")
    result = runner.invoke(app, ["train", str(store), "--model", "diffusion", "-o",
                                 str(tmp_path / "run"), "--config", cfg, "--steps", "2",
                                 "--device", "cpu", "--val-fraction", "0.25", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "val_psnr" in (tmp_path / "run/metrics.jsonl").read_text()


@pytest.mark.parametrize("extra,needle", [
    (["--patch", "12"], "--patch: patch 12x12x12 is not divisible by 2^3 = 8"),
    (["--config", "TYPO"], "unknown key 'training.bach_size' (did you mean 'training.batch_size'?)"),
    (["--device", "tpu"], "--device: unknown device 'tpu'"),
    (["--model", "gan"], "--model: unknown model 'gan'"),
])
def test_bad_input_exits_2_without_model_pt(tmp_path, seg_store, extra, needle):
    if "TYPO" in extra:
        extra = ["--config", _cfg(tmp_path, "training:\n  bach_size: 4\n")]
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", str(seg_store), "-o", str(run), *TINY, *extra])
    assert result.exit_code == 2, result.output
    assert needle in result.stderr
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    assert not (run / "model.pt").exists()


def test_run_dir_rules_exit_2(tmp_path, seg_store):
    run = tmp_path / "run"
    args = ["train", str(seg_store), "-o", str(run), "--config",
            _cfg(tmp_path, "model: {ch: 4, depth: 2}\n"), *TINY]
    assert runner.invoke(app, args).exit_code == 0
    before = (run / "model.pt").read_bytes()
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    expected = (f"error: {run}: exists; pass --resume to continue its training or --overwrite "
                "to replace it")
    assert result.stderr.strip().splitlines() == [expected]
    result = runner.invoke(app, ["train", str(seg_store), "-o", str(run), "--resume",
                                 "--model", "diffusion", "--quiet"])
    assert result.exit_code == 2 and "trained with --model unet" in result.stderr
    (run / "model.pt").write_bytes(before[: len(before) // 2])
    result = runner.invoke(app, ["train", str(seg_store), "-o", str(run), "--resume", "--quiet"])
    assert result.exit_code == 2 and "corrupt or truncated" in result.stderr
    torch.save({"format": "volseg-run", "obj": Path("x")}, run / "model.pt")
    result = runner.invoke(app, ["train", str(seg_store), "-o", str(run), "--resume", "--quiet"])
    assert result.exit_code == 2 and "not a weights-only checkpoint" in result.stderr


def test_readme_config_with_augment_false_trains(tmp_path, seg_store):
    from test_training_config import _readme_augment_snippets

    cfg = _cfg(tmp_path, "model: {ch: 4, depth: 2}\n" + _readme_augment_snippets()[0] + "\n")
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", str(seg_store), "-o", str(run), "--config", cfg, *TINY])
    assert result.exit_code == 0, result.output
    assert "augment: false" in (run / "config.yml").read_text()


def test_val_fraction_flag_is_named_in_its_error(tmp_path, seg_store):
    result = runner.invoke(app, ["train", str(seg_store), "-o", str(tmp_path / "run"),
                                 "--val-fraction", "1.5", *TINY])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "error: --val-fraction: 'data.val_fraction' must be in [0, 1), got 1.5; e.g. 0.1"]
    assert not (tmp_path / "run").exists()


def test_train_streams_patches_from_a_volume(tmp_path):
    from volseg.data.synth import write_synth

    volume = write_synth("scroll", tmp_path / "scroll.zarr", shape=(48, 32, 32), seed=0)
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", str(volume), "--model", "unet", "--patch", "16",
                                 "-o", str(run), "--config",
                                 _cfg(tmp_path, "model: {ch: 4}\ndata: {samples_per_epoch: 8}\n"),
                                 "--val-fraction", "0.34", *TINY])
    assert result.exit_code == 0, result.output
    assert json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 4


def test_real_subprocess(tmp_path, seg_store):
    exe = Path(sys.executable).with_name("volseg")
    cfg = _cfg(tmp_path, "model: {ch: 4, depth: 2}\n")
    run = tmp_path / "run"
    out = subprocess.run([str(exe), "train", str(seg_store), "-o", str(run), "--config", cfg,
                          "--steps", "2", "--device", "cpu"], capture_output=True, text=True,
                         check=False, timeout=120, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert out.returncode == 0, out.stderr
    assert "trained unet for 2 steps" in out.stdout
