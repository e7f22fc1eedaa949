"""Run the README's shell blocks marked ``<!-- readme-test: NAME -->`` as a user would.

The fast default tests scale a few numbers down (training steps, volume sizes, sample counts:
see ``FAST``) so the suite stays quick; the slow test runs every block exactly as written.
The job-array example script is run as written for each task of a 2-task array.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

#: Scaled-down numbers for the default (fast) run: (pattern, replacement).
FAST = [
    (r"--shape 64\n", "--shape 32\n"),  # before the next line turns 128 into 64
    (r"--shape 128", "--shape 64"),
    (r"--steps \d+", "--steps 3"),
    (r"--samples \d+", "--samples 24"),
    (r"--patch 32,64 --budget", "--patch 16 --amp --checkpoint --budget"),
]


def readme_blocks(name: str) -> list[str]:
    """The fenced blocks that follow a ``<!-- readme-test: NAME -->`` marker, in order."""
    text = README.read_text()
    pattern = re.compile(r"<!-- readme-test: (\w+) -->\s*\n```bash\n(.*?)```", re.S)
    return [body for tag, body in pattern.findall(text) if tag == name]


def run_script(script: str, cwd: Path, *, fast: bool, env_extra: dict | None = None, timeout: int = 600):
    if fast:
        from volseg.training.loop import amp_pays_off

        if not amp_pays_off("cpu"):  # no native bf16 here: --amp would make each step ~100x slower
            script = re.sub(r" --amp\b", "", script)
        for pattern, repl in FAST:
            script = re.sub(pattern, repl, script)
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(env_extra or {})
    # Background jobs (a dask scheduler/worker) live in the script's process group: kill it after.
    # Output goes to a file: background jobs would hold a pipe open after the script ends.
    log = cwd / f".readme-{os.getpid()}.log"
    with open(log, "w") as sink:
        proc = subprocess.Popen(["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=env,
                                stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            proc.wait(timeout=timeout)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    out = log.read_text()
    log.unlink()
    assert proc.returncode == 0, f"README block failed ({proc.returncode}):\n{script}\n--- output ---\n{out[-6000:]}"
    return out


def _journey(tmp_path: Path, fast: bool) -> Path:
    _link_repo_files(tmp_path)
    for block in readme_blocks("journey"):
        run_script(block, tmp_path, fast=fast, timeout=600 if fast else 3600)
    return tmp_path


def _link_repo_files(cwd: Path) -> None:
    """The README is run from the repository root: make its example files visible from ``cwd``."""
    for name in ("examples", "configs"):
        if not (cwd / name).exists():
            (cwd / name).symlink_to(ROOT / name)


def test_readme_has_the_tested_blocks():
    assert len(readme_blocks("journey")) == 2
    assert readme_blocks("diffusion") and readme_blocks("cluster") and readme_blocks("brain")
    assert len(readme_blocks("nnunet")) == 1
    text = README.read_text()
    assert "make demo" in text and "make test" in text


@pytest.mark.slow  # 95 s: the journey's commands are tested one by one by default (test_cli_*, test_demo)
@pytest.mark.timeout(900)
def test_readme_journey_cluster_and_job_array(tmp_path):
    import numpy as np

    import volseg

    _journey(tmp_path, fast=True)
    for name in ("scroll.zarr", "patches.zarr", "runs/unet/model.pt", "prediction.zarr",
                 "prediction-fused.zarr", "scores.json", "preview.png"):
        assert (tmp_path / name).exists(), name
    for block in readme_blocks("cluster"):
        run_script(block, tmp_path, fast=True)
    # The array writes prediction.zarr; keep the stitched one from the journey under another name.
    (tmp_path / "prediction.zarr").rename(tmp_path / "prediction-stitched.zarr")
    script = ROOT / "examples" / "predict_array.sbatch"
    for task in (1, 2):
        run_script(f"bash {script}", tmp_path, fast=True,
                   env_extra={"SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_TASK_COUNT": "2"})
    fused = volseg.open_volume(tmp_path / "prediction-fused.zarr").compute()
    for other in ("prediction-cluster.zarr", "prediction.zarr", "prediction-stitched.zarr"):
        np.testing.assert_allclose(volseg.open_volume(tmp_path / other).compute(), fused, atol=2e-3)


@pytest.mark.slow  # 33 s; the diffusion path is covered by test_diffusion_sampling/test_trainer by default
def test_readme_diffusion_journey(tmp_path):
    _link_repo_files(tmp_path)
    for block in readme_blocks("diffusion"):
        out = run_script(block, tmp_path, fast=True)
    assert (tmp_path / "denoised.zarr").exists()
    assert "psnr" in out.lower()


@pytest.mark.slow  # about 35 s on 2 idle cores, as written (tiny cases, 30 steps)
def test_readme_brain_journey_as_written(tmp_path):
    import volseg

    for block in readme_blocks("brain"):
        out = run_script(block, tmp_path, fast=False, timeout=300)
    for name in ("t2.zarr", "t2.zarr/uncertainty"):
        assert volseg.open_volume(tmp_path / name).shape == (24, 24, 24)
    assert "psnr" in out.lower() and "ssim" in out.lower()


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_readme_as_written(tmp_path):
    _journey(tmp_path, fast=False)
    _link_repo_files(tmp_path)
    for block in readme_blocks("diffusion") + readme_blocks("cluster") + readme_blocks("brain"):
        run_script(block, tmp_path, fast=False, timeout=3600)


def test_readme_shows_the_example_files_as_they_are():
    text = README.read_text()
    assert Path(ROOT / "examples" / "predict_array.sbatch").read_text() in text
    slurm = (ROOT / "examples" / "slurm_cluster.py").read_text().split('"""', 2)[2].lstrip("\n")
    assert slurm in text


@pytest.mark.slow  # about 2 min on 2 shared cores; the same commands run by default in test_inference_nnunet_pass
def test_readme_nnunet_section_as_written(tmp_path):
    """The "Run an nnU-Net model over a scroll" commands, as written, on a model folder made by
    nnU-Net's own trainer (tests/nnunet_folder.py, 16^3 patches) and a 96^3 scroll.zarr."""
    pytest.importorskip("nnunetv2", reason="the model folder is made by nnU-Net's trainer (dev extra)")
    import json

    import numpy as np
    from nnunet_folder import dataset_for, make_folder, plans_for

    import volseg
    from volseg.io import write_volume

    folder = make_folder(tmp_path / "made", plans_for("CTNormalization", patch=(16, 16, 16)),
                         dataset_for(("fibre", "sheet")))
    folder.rename(tmp_path / folder.name)
    data = np.zeros((96, 96, 96), np.float32)
    data[20:50, 10:40, 40:70] = np.random.default_rng(0).normal(size=(30, 30, 30))
    write_volume(tmp_path / "scroll.zarr", data, chunks=32, spacing=(1.0, 1.0, 1.0), unit="micrometer")
    (block,) = readme_blocks("nnunet")
    out = run_script(block, tmp_path, fast=False, timeout=600)
    assert "weights_sha256" in out and "made_by" in out
    labels = np.asarray(volseg.open_volume(tmp_path / "labels.zarr"))
    assert labels.dtype == np.uint8 and set(np.unique(labels)) <= {0, 1, 2} and labels[0, 0, 0] == 0
    sheet = np.asarray(volseg.open_volume(tmp_path / "sheet.zarr"))
    assert sheet.dtype == np.uint8 and set(np.unique(sheet)) <= {0, 1}
    settings = json.loads((tmp_path / "fibre.zarr" / "zarr.json").read_text())["attributes"]["volseg"]["settings"]
    assert settings["tta"] is True and settings["label"] == "fibre"
