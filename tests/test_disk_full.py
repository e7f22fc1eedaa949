"""A full disk names the file being written and the free space of its own filesystem."""

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from volseg.io.outputs import os_error

VOLSEG = str(Path(sys.executable).with_name("volseg"))


def _put(path, value):  # like zarr's LocalStore._put: write() fails without a file name
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_without_a_file_name_names_the_file_the_store_wrote(tmp_path):
    target = tmp_path / "o.zarr" / "0" / "c" / "0" / "0" / "1"
    try:
        _put(target, b"x")
    except OSError as exc:
        err = os_error(exc)
    assert err.path == str(target)
    assert err.message.startswith("cannot be written: the disk is full (") and " bytes free)" in err.message
    free = int(err.message.split("(")[1].split(" bytes")[0].replace(",", ""))
    assert abs(free - shutil.disk_usage(tmp_path).free) < 2**30  # this filesystem's, not another's
    # nothing known: no path and no free space of some other filesystem
    bare = os_error(OSError(errno.ENOSPC, "No space left on device"))
    assert bare.path == "output" and "bytes free" not in bare.message


@pytest.fixture
def full_disk(tmp_path):
    """A 3 MiB tmpfs (root only)."""
    mount = tmp_path / "full"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)],
                                           capture_output=True).returncode:
        pytest.skip("needs root to mount a small tmpfs")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_prepare_onto_a_full_tmpfs_names_it_and_its_free_space(tmp_path, full_disk):
    np.save(tmp_path / "v.npy", np.random.default_rng(0).random((96, 96, 96)).astype(np.float32))
    proc = subprocess.run([VOLSEG, "prepare", str(tmp_path / "v.npy"), "-o", str(full_disk / "p.zarr"),
                           "--chunks", "32", "--quiet"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip()
    assert line.count("\n") == 0 and line.startswith(f"error: {full_disk / 'p.zarr'}"), line
    free = int(line.split("disk is full (")[1].split(" bytes")[0].replace(",", ""))
    assert free <= 3 * 2**20, line


def test_predict_stitch_onto_a_full_tmpfs_prints_one_line(tmp_path, full_disk):
    import torch

    from volseg.models import build_model

    torch.manual_seed(0)
    cfg = {"type": "unet", "in_channels": 1, "out_ch": 1, "ch": 4, "depth": 2}
    (tmp_path / "run").mkdir()
    torch.save({"format": "volseg-run", "version": 1, "model_config": cfg,
                "state_dict": build_model(cfg).state_dict()}, tmp_path / "run" / "model.pt")
    np.save(tmp_path / "v.npy", np.random.default_rng(0).random((160, 160, 160)).astype(np.float32))
    proc = subprocess.run([VOLSEG, "predict", str(tmp_path / "run"), str(tmp_path / "v.npy"), "-o",
                           str(full_disk / "p.zarr"), "--stitch", "--patch", "32", "--chunks", "32",
                           "--device", "cpu", "--quiet"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {full_disk}") and "disk is full" in lines[0], lines
