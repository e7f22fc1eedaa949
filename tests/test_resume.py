"""Resume: markers, reruns that skip done blocks, refused settings changes, and a real kill -9."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from volseg.errors import VolsegError
from volseg.inference import predict
from volseg.inference.resume import MARKERS, Markers, fingerprint
from volseg.models import build_model

VOLSEG = str(Path(sys.executable).with_name("volseg"))


def make_run(path, ch=4):
    torch.manual_seed(0)
    cfg = {"type": "unet", "in_channels": 1, "out_ch": 1, "ch": ch, "depth": 2}
    path.mkdir(parents=True, exist_ok=True)
    torch.save({"format": "volseg-run", "version": 1, "model_config": cfg,
                "state_dict": build_model(cfg).state_dict()}, path / "model.pt")
    return path


def read(path):
    return zarr.open_array(str(path / "0"), mode="r")[:]


def test_markers_roundtrip_and_fingerprint_is_stable(tmp_path):
    m = Markers(tmp_path)
    m.create()
    m.mark((0, 1, 2))
    m.mark((3, 0, 0), prefix="g")
    assert m.done() == {(0, 1, 2)} and m.done("g") == {(3, 0, 0)}
    assert m.todo([(0, 1, 2), (1, 1, 1)]) == [(1, 1, 1)]
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1})


def test_rerun_redoes_only_unmarked_chunks(tmp_path):
    run = make_run(tmp_path / "run")
    np.save(tmp_path / "v.npy", np.random.default_rng(0).normal(size=(64, 24, 16)).astype(np.float32))
    out = tmp_path / "out.zarr"
    first = predict(run, tmp_path / "v.npy", out, patch=16, stitch=True, chunks=16, device="cpu", quiet=True)
    ref = read(out)
    for name in ("c0.0.0", "c0.1.0"):
        (out / MARKERS / name).unlink()
    again = predict(run, tmp_path / "v.npy", out, patch=16, stitch=True, chunks=16, device="cpu", quiet=True)
    assert again["chunks_written"] == 2 and again["chunks_done_before"] == first["chunks_total"] - 2
    assert again["patches"] < first["patches"]  # only the groups those chunks need
    np.testing.assert_array_equal(read(out), ref)
    with pytest.raises(VolsegError, match="other settings.*overlap"):
        predict(run, tmp_path / "v.npy", out, patch=16, overlap=0.25, stitch=True, chunks=16, device="cpu",
                quiet=True)
    np.testing.assert_array_equal(read(out), ref)


def test_patch_store_resumes_by_group_and_stitch_refuses_an_incomplete_store(tmp_path):
    from volseg.inference import stitch

    run = make_run(tmp_path / "run")
    np.save(tmp_path / "v.npy", np.random.default_rng(0).normal(size=(32, 32, 24)).astype(np.float32))
    store = tmp_path / "p.zarr"
    first = predict(run, tmp_path / "v.npy", store, patch=16, chunks=16, device="cpu", part="1/2", quiet=True)
    with pytest.raises(VolsegError, match="of 8 patch groups written"):
        stitch(store, tmp_path / "o.zarr", chunks=16, quiet=True)
    assert not (tmp_path / "o.zarr").exists()
    second = predict(run, tmp_path / "v.npy", store, patch=16, chunks=16, device="cpu", quiet=True)
    assert second["groups_done_before"] == first["groups_written"] > 0
    stitch(store, tmp_path / "o.zarr", chunks=16, quiet=True)


def test_kill_9_midway_then_rerun_finishes_identically(tmp_path):
    run = make_run(tmp_path / "run", ch=4)
    np.save(tmp_path / "v.npy", np.random.default_rng(5).normal(size=(48, 48, 32)).astype(np.float32))
    out = tmp_path / "killed.zarr"
    cmd = [VOLSEG, "predict", str(run), str(tmp_path / "v.npy"), "-o", str(out), "--patch", "16",
           "--chunks", "16", "--stitch", "--device", "cpu", "--workers", "1", "--tile", "16", "--quiet"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    markers = out / MARKERS
    while time.time() < deadline and proc.poll() is None:
        if markers.is_dir() and len(list(markers.glob("c*"))) >= 4:  # past the first tile (3 chunks)
            break
        time.sleep(0.02)
    assert proc.poll() is None, "finished before it could be killed: " + proc.stderr.read().decode()[-500:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_at_kill = len(list(markers.glob("c*")))
    assert 4 <= done_at_kill < 18
    rerun = subprocess.run(cmd + ["--json", "-"], env=env, capture_output=True, text=True, timeout=300, check=False)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    assert summary["chunks_done_before"] == done_at_kill
    assert summary["chunks_written"] == 18 - done_at_kill
    clean = list(cmd)  # one untiled pass with the same process settings (torch threads)
    clean[clean.index(str(out))] = str(tmp_path / "clean.zarr")
    clean[clean.index("--tile") + 1] = "0"
    assert subprocess.run(clean, env=env, capture_output=True, timeout=300, check=False).returncode == 0
    np.testing.assert_array_equal(read(out), read(tmp_path / "clean.zarr"))  # killed + resumed across 6 tiles
