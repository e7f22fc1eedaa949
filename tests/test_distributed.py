"""DDP training: real torchrun/srun-style processes on CPU (gloo) against one process."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from volseg.cli import app
from volseg.ddp_env import launch_env
from volseg.training.loop import RankSlice, StreamSampler
from volseg.training.losses import segmentation_loss

torch.set_num_threads(1)
runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = Path(sys.executable).with_name("torchrun")
CFG = ("model: {ch: 4, depth: 2, groups: 4}\naugment: {enabled: false}\n"
       "training: {log_freq: 1, validation_freq: 3, snapshot_freq: 3}\n")


def _store(path: Path, *, n=12, side=16, channels=1):
    from volseg.data.patchstore import create_store

    rng = np.random.default_rng(0)
    attrs = {"kind": "patches", "source": "synthetic", "source_shape": [64, 64, 64],
             "patch": [side] * 3, "mode": "grid"}
    group = create_store(path, n=n, channels=channels, patch=(side,) * 3, dtype="uint8",
                         attrs=attrs, labels=True, origins=np.zeros((n, 3), dtype=np.int64))
    label = (rng.random((n, 1, side, side, side)) > 0.7).astype(np.uint8)
    image = (100 + 60 * (label == 1) + rng.normal(0, 10, (n, channels, side, side, side)))
    group["patches"][:] = image.clip(0, 255).astype(np.uint8)
    label[:, :, :2] = 2
    group["labels"][:] = label
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return _store(tmp_path_factory.mktemp("ddp") / "patches.zarr")


def _env(**extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK") and not k.startswith("SLURM_")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
        [str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]), **extra)
    return env


def _torchrun(store, run, cfg, *args, ranks=2, timeout=240, quiet=True):
    cmd = [str(TORCHRUN), "--standalone", "--nproc-per-node", str(ranks), "-m", "volseg",
           "train", str(store), "-o", str(run), "--config", str(cfg), "--device", "cpu",
           *(["--quiet"] if quiet else []), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env())


def _losses(run):
    return [r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]


def _weights(run):
    return torch.load(run / "model.pt", weights_only=True)["state_dict"]


def _max_diff(a, b):
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def test_two_ranks_of_batch_2_equal_one_process_of_batch_4(tmp_path, store):
    cfg = tmp_path / "cfg.yml"
    cfg.write_text(CFG)
    one = runner.invoke(app, ["train", str(store), "-o", str(tmp_path / "one"), "--config",
                              str(cfg), "--steps", "6", "--batch-size", "4", "--device", "cpu",
                              "--quiet"])
    assert one.exit_code == 0, one.output
    out = _torchrun(store, tmp_path / "ddp", cfg, "--steps", "6", "--batch-size", "2",
                    quiet=False)
    assert out.returncode == 0, out.stderr[-3000:]
    ddp_losses, one_losses = _losses(tmp_path / "ddp"), _losses(tmp_path / "one")
    assert len(ddp_losses) == 6  # rank 0 alone wrote metrics.jsonl: no duplicated records
    np.testing.assert_allclose(ddp_losses, one_losses, rtol=1e-3)
    assert _max_diff(_weights(tmp_path / "ddp"), _weights(tmp_path / "one")) < 1e-3
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == [
        "best.pt", "config.yml", "metrics.jsonl", "model.pt", "progress.png"]
    assert "error" not in out.stderr
    assert out.stdout.count("trained unet for 6 steps") == 1  # rank 0 reports, once


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_resume_under_ddp_equals_an_uninterrupted_ddp_run(tmp_path, store):
    cfg = tmp_path / "cfg.yml"
    cfg.write_text(CFG)
    full = _torchrun(store, tmp_path / "full", cfg, "--steps", "6", "-b", "2")
    assert full.returncode == 0, full.stderr[-3000:]
    half = _torchrun(store, tmp_path / "part", cfg, "--steps", "3", "-b", "2")
    assert half.returncode == 0, half.stderr[-3000:]
    again = _torchrun(store, tmp_path / "part", cfg, "--steps", "6", "-b", "2", "--resume")
    assert again.returncode == 0, again.stderr[-3000:]
    np.testing.assert_allclose(_losses(tmp_path / "part"), _losses(tmp_path / "full"), rtol=1e-5)
    assert _max_diff(_weights(tmp_path / "part"), _weights(tmp_path / "full")) < 1e-6


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_dead_rank_stops_the_other_with_an_error(tmp_path, store):
    """srun-style launch (SLURM_* variables, no torchrun agent): kill rank 1 mid-training."""
    cfg = tmp_path / "cfg.yml"
    cfg.write_text(CFG)
    run, port = tmp_path / "run", _free_port()
    procs = []
    for rank in range(2):
        env = _env(SLURM_PROCID=str(rank), SLURM_STEP_NUM_TASKS="2", SLURM_LOCALID=str(rank),
                   SLURM_STEP_ID="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                   VOLSEG_DDP_TIMEOUT="60")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "volseg", "train", str(store), "-o", str(run), "--config",
             str(cfg), "--steps", "100000", "-b", "2", "--device", "cpu", "--quiet"],
            env=env, stderr=subprocess.PIPE, text=True))
    try:
        deadline = time.monotonic() + 300
        while not (run / "metrics.jsonl").is_file() or \
                len((run / "metrics.jsonl").read_text().splitlines()) < 2:
            assert time.monotonic() < deadline and procs[0].poll() is None, "training did not start"
            time.sleep(0.2)
        procs[1].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        rc = procs[0].wait(timeout=90)
        assert time.monotonic() - killed < 80
        err = procs[0].stderr.read()
        assert rc == 1
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and "another rank died" in lines[0], err
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_torchrun_stops_the_surviving_rank_when_one_is_killed(tmp_path, store):
    cfg = tmp_path / "cfg.yml"
    cfg.write_text(CFG)
    run = tmp_path / "run"
    cmd = [str(TORCHRUN), "--standalone", "--nproc-per-node", "2", "-m", "volseg", "train",
           str(store), "-o", str(run), "--config", str(cfg), "--steps", "100000", "-b", "2",
           "--device", "cpu", "--quiet"]
    proc = subprocess.Popen(cmd, env=_env(), stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not (run / "metrics.jsonl").is_file() or \
                len((run / "metrics.jsonl").read_text().splitlines()) < 2:
            assert time.monotonic() < deadline and proc.poll() is None, "training did not start"
            time.sleep(0.2)
        children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                                  text=True).stdout.split()
        assert len(children) == 2
        os.kill(int(children[-1]), signal.SIGKILL)
        assert proc.wait(timeout=90) != 0
        err = proc.stderr.read()
        assert "ChildFailedError" in err and "Signal 9 (SIGKILL)" in err
        assert all(subprocess.run(["kill", "-0", c], capture_output=True).returncode != 0
                   for c in children)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_diffusion_two_ranks_equal_one_process(tmp_path):
    from volseg.data.patchstore import create_store

    store = tmp_path / "scan.zarr"
    group = create_store(store, n=8, channels=1, patch=(8, 8, 8), dtype="uint8", targets=True,
                         attrs={"kind": "patches", "source": "x", "source_shape": [8, 8, 8],
                                "patch": [8] * 3, "mode": "grid"},
                         origins=np.zeros((8, 3), np.int64))
    rng = np.random.default_rng(0)
    group["patches"][:] = rng.integers(0, 255, (8, 1, 8, 8, 8)).astype(np.uint8)
    group["targets"][:] = rng.normal(100, 20, (8, 1, 8, 8, 8)).astype(np.float32)
    cfg = tmp_path / "cfg.yml"
    cfg.write_text("model: {ch: 8, ch_mult: [1, 2]}\ndiffusion: {val_samples: 1}\n"
                   "augment: {enabled: false}\ntraining: {log_freq: 1}\n")
    one = runner.invoke(app, ["train", str(store), "--model", "diffusion", "-o",
                              str(tmp_path / "one"), "--config", str(cfg), "--steps", "4", "-b",
                              "4", "--device", "cpu", "--quiet"])
    assert one.exit_code == 0, one.output
    out = _torchrun(store, tmp_path / "ddp", cfg, "--model", "diffusion", "--steps", "4", "-b", "2")
    assert out.returncode == 0, out.stderr[-3000:]
    np.testing.assert_allclose(_losses(tmp_path / "ddp"), _losses(tmp_path / "one"), rtol=1e-3)
    assert _max_diff(_weights(tmp_path / "ddp"), _weights(tmp_path / "one")) < 1e-3


def test_world_size_that_does_not_divide_the_global_batch_is_refused(tmp_path, store):
    base = ["train", str(store), "-o", str(tmp_path / "run"), "--global-batch-size", "3",
            "--device", "cpu", "--quiet", "--steps", "1"]
    env = {"WORLD_SIZE": "2", "LOCAL_RANK": "0"}
    first = runner.invoke(app, base, env=dict(env, RANK="0"))
    assert first.exit_code == 2
    lines = first.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --global-batch-size: 3 does not divide")
    other = runner.invoke(app, base, env=dict(env, RANK="1", VOLSEG_DDP_ERROR_DELAY="0"))
    assert other.exit_code == 2 and other.stderr == ""  # only rank 0 prints
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_torchrun_refuses_a_global_batch_the_ranks_do_not_divide(tmp_path, store):
    cfg = tmp_path / "cfg.yml"
    cfg.write_text(CFG)
    out = _torchrun(store, tmp_path / "run", cfg, "--global-batch-size", "3", "--steps", "1")
    assert out.returncode != 0
    lines = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert lines == ["error: --global-batch-size: 3 does not divide over 2 ranks; use a "
                     "multiple of 2 (or --batch-size, per rank)"]
    assert not (tmp_path / "run").exists()


def test_launch_env_reads_torchrun_then_srun_variables():
    torchrun = launch_env({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "SLURM_PROCID": "0"})
    assert (torchrun.rank, torchrun.world, torchrun.local_rank, torchrun.launcher) == (3, 8, 1, "torchrun")
    srun = launch_env({"SLURM_PROCID": "5", "SLURM_STEP_NUM_TASKS": "8", "SLURM_LOCALID": "1",
                       "SLURM_STEP_ID": "0"})
    assert (srun.rank, srun.world, srun.local_rank, srun.launcher) == (5, 8, 1, "slurm")
    batch_script = launch_env({"SLURM_PROCID": "0", "SLURM_NTASKS": "8"})  # not inside srun
    assert not batch_script.distributed


def test_rank_slices_partition_each_global_batch():
    take = 4 * 3 * 2  # 4 steps of a global batch of 3 ranks x 2
    full = [i for _, i in zip(range(take), StreamSampler(10, seed=1, start=6))]
    parts = [[i for _, i in zip(range(8), RankSlice(StreamSampler(10, seed=1, start=6),
                                                    batch_size=2, rank=r, world=3))]
             for r in range(3)]
    for step in range(4):
        glob = full[step * 6:(step + 1) * 6]
        assert sum((p[step * 2:(step + 1) * 2] for p in parts), []) == glob


def test_segmentation_loss_of_reduced_halves_equals_the_whole_batch():
    gen = torch.Generator().manual_seed(0)
    for k in (1, 3):
        logits = torch.randn(4, k, 6, 6, 6, generator=gen)
        label = torch.randint(0, 3 if k == 1 else k, (4, 1, 6, 6, 6), generator=gen)
        whole = segmentation_loss(logits, label)
        sums = []
        segmentation_loss(logits[2:], label[2:], reduce=lambda s: sums.append(s) or s)
        half = segmentation_loss(logits[:2], label[:2], reduce=lambda s: s + sums[0])
        torch.testing.assert_close(half, whole, rtol=1e-5, atol=1e-6)


def test_the_sbatch_example_is_the_one_in_the_readme():
    script = ROOT / "examples" / "train_ddp.sbatch"
    assert script.read_text() in (ROOT / "README.md").read_text()
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
