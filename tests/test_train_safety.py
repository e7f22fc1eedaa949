"""A failed `volseg train` never loses a good run, and a failed start leaves nothing.

Real patch stores on disk, the real CLI (CliRunner); every file of the run directory is hashed
before and after.
"""

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from volseg import open_volume
from volseg.cli import app

torch.set_num_threads(1)
runner = CliRunner()
TINY = ["--steps", "4", "--batch-size", "2", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from volseg.data.patchstore import create_store

    n, side = 8, 16
    path = tmp_path_factory.mktemp("data") / "patches.zarr"
    rng = np.random.default_rng(0)
    attrs = {"kind": "patches", "source": "synthetic", "source_shape": [64, 64, 64],
             "patch": [side] * 3, "mode": "grid"}
    group = create_store(path, n=n, channels=1, patch=(side,) * 3, dtype="uint8", attrs=attrs,
                         labels=True, origins=np.zeros((n, 3), dtype=np.int64))
    label = (rng.random((n, 1, side, side, side)) > 0.7).astype(np.uint8)
    group["patches"][:] = (100 + 60 * (label == 1) + rng.normal(0, 10, label.shape)).clip(0, 255).astype(np.uint8)
    group["labels"][:] = label
    return path


@pytest.fixture()
def cfg(tmp_path):
    path = tmp_path / "cfg.yml"
    path.write_text("model: {ch: 4, depth: 2}\ntraining: {validation_freq: 2}\n")
    return str(path)


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _train(*args):
    return runner.invoke(app, ["train", *map(str, args)])


def _one_error(result, *needles):
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr, lines
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _siblings(run: Path) -> list[str]:
    return sorted(p.name for p in run.parent.iterdir() if p.name.startswith(run.name))


def test_overwrite_that_diverges_leaves_the_old_run_byte_identical(tmp_path, store, cfg):
    run = tmp_path / "run"
    assert _train(store, "-o", run, "--config", cfg, *TINY).exit_code == 0
    before = _hashes(run)
    assert {"model.pt", "best.pt", "config.yml", "metrics.jsonl"} <= set(before)
    line = _one_error(_train(store, "-o", run, "--config", cfg, "--overwrite", "--lr", "1e30", *TINY),
                      "lower --lr (now 1e+30)")
    assert f"the previous run in {run} is unchanged" in line
    assert _hashes(run) == before
    assert _siblings(run) == ["run"]  # no run.new, no lock left
    # a good --overwrite replaces it (only once it has a checkpoint)
    result = _train(store, "-o", run, "--config", cfg, "--overwrite", "--steps", "2", "--batch-size", "2",
                    "--device", "cpu", "--quiet")
    assert result.exit_code == 0, result.output
    assert torch.load(run / "model.pt", weights_only=True)["step"] == 2
    assert _siblings(run) == ["run"]


def test_overwrite_keeps_files_that_are_not_run_files(tmp_path, store, cfg):
    run = tmp_path / "run"
    assert _train(store, "-o", run, "--config", cfg, *TINY).exit_code == 0
    (run / "notes.txt").write_text("mine")
    stale = run / "best.pt"
    result = _train(store, "-o", run, "--config", cfg, "--overwrite", "--steps", "1", "--batch-size", "2",
                    "--device", "cpu", "--quiet", "--val-fraction", "0")
    assert result.exit_code == 0, result.output
    assert (run / "notes.txt").read_text() == "mine"
    assert not stale.exists()  # the new run has no validation, so no best.pt of the old one stays
    assert torch.load(run / "model.pt", weights_only=True)["step"] == 1


def test_failed_resume_leaves_config_yml_byte_identical(tmp_path, store, cfg):
    run = tmp_path / "run"
    assert _train(store, "-o", run, "--config", cfg, *TINY).exit_code == 0
    config, model = (run / "config.yml").read_bytes(), (run / "model.pt").read_bytes()
    _one_error(_train(store, "-o", run, "--resume", "--steps", "12", "--lr", "1e30", "--device", "cpu",
                      "--quiet"), "the last good checkpoint is kept")
    assert (run / "config.yml").read_bytes() == config
    assert (run / "model.pt").read_bytes() == model
    # a good resume writes the resumed settings with its first checkpoint
    result = _train(store, "-o", run, "--resume", "--steps", "6", "--lr", "1e-3", "--device", "cpu", "--quiet")
    assert result.exit_code == 0, result.output
    assert "lr: 0.001" in (run / "config.yml").read_text()


def test_a_new_run_that_diverges_leaves_nothing(tmp_path, store, cfg):
    run = tmp_path / "runs" / "unet"
    _one_error(_train(store, "-o", run, "--config", cfg, "--lr", "1e30", *TINY),
               "no checkpoint was saved, so nothing is left")
    assert not run.parent.exists()  # not even the folder runs/ it would have been made in
    result = _train(store, "-o", run, "--config", cfg, *TINY)  # no --resume, no --overwrite needed
    assert result.exit_code == 0, result.output
    assert (run / "model.pt").is_file() and _siblings(run) == ["unet"]


def test_a_refused_nan_volume_in_a_list_leaves_nothing(tmp_path):
    from volseg.data.synth import write_synth

    scroll = write_synth("scroll", tmp_path / "scroll.zarr", shape=(32, 32, 32), seed=0)
    bad = np.asarray(open_volume(scroll).compute(), dtype=np.float32)
    bad[::4] = np.nan  # every 16^3 patch meets one
    np.save(tmp_path / "bad.npy", bad)
    np.save(tmp_path / "label.npy", np.asarray(open_volume(scroll / "labels" / "surface").compute()))
    listing = tmp_path / "pairs.csv"
    listing.write_text(f"image,label\n{scroll},{scroll}/labels/surface\nbad.npy,label.npy\n")
    run = tmp_path / "run"
    result = _train("--list", listing, "-o", run, "--patch", "16", "--val-fraction", "0", *TINY)
    _one_error(result, "bad.npy")
    assert not run.exists() and _siblings(run) == []


def test_a_folder_left_with_only_run_files_takes_a_new_run(tmp_path, store, cfg):
    """A run stopped before its first checkpoint by an older volseg left config.yml only."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yml").write_text("data: {}\n")
    _one_error(_train(store, "-o", run, "--resume", "--device", "cpu", "--quiet"),
               "has no checkpoint (model.pt or best.pt) to resume from; drop --resume")
    result = _train(store, "-o", run, "--config", cfg, *TINY)
    assert result.exit_code == 0, result.output
    assert "ch: 4" in (run / "config.yml").read_text() and (run / "model.pt").is_file()


def test_resume_from_best_pt_when_model_pt_is_missing(tmp_path, store, cfg):
    """What a full disk leaves when it cuts the run between best.pt and model.pt."""
    run = tmp_path / "run"
    assert _train(store, "-o", run, "--config", cfg, *TINY).exit_code == 0
    os.unlink(run / "model.pt")
    best_step = torch.load(run / "best.pt", weights_only=True)["step"]
    _one_error(_train(store, "-o", run, "--config", cfg, *TINY), "exists; pass --resume")
    result = _train(store, "-o", run, "--resume", "--steps", "6", "--device", "cpu", "--quiet")
    assert result.exit_code == 0, result.output
    assert result.stderr.strip().splitlines() == [
        f"warning: {run}: has no model.pt (the run stopped before saving it); resuming from best.pt "
        f"at step {best_step}"]
    assert torch.load(run / "model.pt", weights_only=True)["step"] == 6


@pytest.fixture()
def small_disk(tmp_path):
    """A real 600 KiB file system (tmpfs): room for the first checkpoint of the tiny run, not a
    second one. Needs root and mount(8); skipped elsewhere."""
    import shutil
    import subprocess

    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("needs root and mount to make a small tmpfs")
    yield disk
    subprocess.run(["umount", str(disk)], check=False)


def test_a_full_disk_leaves_a_resumable_run(tmp_path, store, small_disk):
    import subprocess

    cfg = tmp_path / "cfg.yml"
    cfg.write_text("model: {ch: 4, depth: 2}\ntraining: {validation_freq: 2, snapshot_freq: 4}\n")
    run = small_disk / "run"
    _one_error(_train(store, "-o", run, "--config", cfg, *TINY), "the disk may be full")
    assert (run / "best.pt").is_file() and not (run / "model.pt").exists()  # cut after step 2's best.pt
    _one_error(_train(store, "-o", run, "--config", cfg, *TINY), "exists; pass --resume")
    subprocess.run(["mount", "-o", "remount,size=4m", str(small_disk)], check=True)  # space freed
    result = _train(store, "-o", run, "--resume", "--device", "cpu", "--quiet")
    assert result.exit_code == 0, result.output
    assert result.stderr.strip().splitlines() == [
        f"warning: {run}: has no model.pt (the run stopped before saving it); resuming from best.pt at step 2"]
    assert torch.load(run / "model.pt", weights_only=True)["step"] == 4


def test_a_killed_start_is_cleaned_up_but_a_foreign_run_new_is_not_touched(tmp_path, store, cfg):
    run = tmp_path / "run"
    work = tmp_path / "run.new"
    work.mkdir()
    (work / "metrics.jsonl").write_text('{"step": 1}\n')  # what a start killed by SIGKILL leaves
    result = _train(store, "-o", run, "--config", cfg, *TINY)
    assert result.exit_code == 0, result.output
    assert not work.exists() and (run / "model.pt").is_file()
    other = tmp_path / "other"
    (tmp_path / "other.new").mkdir()
    (tmp_path / "other.new" / "mine.txt").write_text("keep")
    _one_error(_train(store, "-o", other, "--config", cfg, *TINY), "is in the way")
    assert (tmp_path / "other.new" / "mine.txt").read_text() == "keep" and not other.exists()
