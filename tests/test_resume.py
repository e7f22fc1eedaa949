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

from volseg.inference.settings import predict_options
from volseg.errors import VolsegError
from volseg.inference import predict
from volseg.io.resume import MARKERS, Markers, fingerprint
from volseg.models import build_model
from volseg.parallel import Execution

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
    first = predict(run, tmp_path / "v.npy", out, *predict_options(patch=16, stitch=True, chunks=16, device="cpu", quiet=True))
    ref = read(out)
    for name in ("c0.0.0", "c0.1.0"):
        (out / MARKERS / name).unlink()
    again = predict(run, tmp_path / "v.npy", out, *predict_options(patch=16, stitch=True, chunks=16, device="cpu", quiet=True))
    assert again["chunks_written"] == 2 and again["chunks_done_before"] == first["chunks_total"] - 2
    assert again["patches"] < first["patches"]  # only the groups those chunks need
    np.testing.assert_array_equal(read(out), ref)
    with pytest.raises(VolsegError, match="other settings.*overlap"):
        predict(run, tmp_path / "v.npy", out, *predict_options(patch=16, overlap=0.25, stitch=True, chunks=16, device="cpu", quiet=True))
    np.testing.assert_array_equal(read(out), ref)


def test_patch_store_resumes_by_group_and_stitch_refuses_an_incomplete_store(tmp_path):
    from volseg.inference import stitch

    run = make_run(tmp_path / "run")
    np.save(tmp_path / "v.npy", np.random.default_rng(0).normal(size=(32, 32, 24)).astype(np.float32))
    store = tmp_path / "p.zarr"
    first = predict(run, tmp_path / "v.npy", store, *predict_options(patch=16, chunks=16, device="cpu", part="1/2", quiet=True))
    with pytest.raises(VolsegError, match="of 8 patch groups written"):
        stitch(store, tmp_path / "o.zarr", chunks=16, execution=Execution.parse(quiet=True))
    assert not (tmp_path / "o.zarr").exists()
    second = predict(run, tmp_path / "v.npy", store, *predict_options(patch=16, chunks=16, device="cpu", quiet=True))
    assert second["groups_done_before"] == first["groups_written"] > 0
    stitch(store, tmp_path / "o.zarr", chunks=16, execution=Execution.parse(quiet=True))


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


def _together(*cmds, timeout=300):
    """Start the commands at the same moment as real processes; (returncode, stderr) of each."""
    procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "COLUMNS": "200"}) for c in cmds]
    errs = [p.communicate(timeout=timeout)[1] for p in procs]
    return [(p.returncode, e) for p, e in zip(procs, errs)]


@pytest.mark.parametrize("mode", ["--stitch", "patches"])
def test_two_identical_overwrite_runs_started_together_both_finish(tmp_path, mode):
    """They share the work folder <out>.new; the one that completes it waits for the other
    before moving it into place, so neither loses its folder mid-run (was: exit 1,
    `pc.zarr.new/0 does not exist`)."""
    run = make_run(tmp_path / "run")
    np.save(tmp_path / "v.npy", np.random.default_rng(0).normal(size=(40, 40, 40)).astype(np.float32))
    stitch = [mode] if mode == "--stitch" else []
    cmd = [VOLSEG, "predict", str(run), str(tmp_path / "v.npy"), "-o", str(tmp_path / "pc.zarr"), "--patch", "16",
           "--chunks", "16", "--device", "cpu", "--quiet", *stitch]
    assert subprocess.run(cmd, capture_output=True, timeout=300).returncode == 0
    first = zarr.open_group(str(tmp_path / "pc.zarr"), mode="r")
    ref = read(tmp_path / "pc.zarr") if stitch else first["patches"][:]
    # one race per mode (three rounds of each were run by hand: no failure)
    results = _together(cmd + ["--overwrite"], cmd + ["--overwrite"])
    assert [rc for rc, _ in results] == [0, 0], results
    group = zarr.open_group(str(tmp_path / "pc.zarr"), mode="r")
    assert group.attrs["volseg"]["complete"] is True
    np.testing.assert_array_equal(read(tmp_path / "pc.zarr") if stitch else group["patches"][:], ref)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pc.zarr", "run", "v.npy"]  # nothing left over
    if not stitch:  # and `stitch --overwrite` of that store, twice at once
        scmd = [VOLSEG, "stitch", str(tmp_path / "pc.zarr"), "-o", str(tmp_path / "st.zarr"), "--chunks", "16",
                "--quiet", "--overwrite"]
        results = _together(scmd, scmd)
        assert [rc for rc, _ in results] == [0, 0], results
        assert zarr.open_group(str(tmp_path / "st.zarr"), mode="r").attrs["volseg"]["complete"] is True


def test_a_finishing_overwrite_waits_for_a_run_still_writing(tmp_path):
    """The work folder stays shared while a run writes; the finisher takes it alone only after."""
    import threading

    from volseg.io.resume import finish_output, open_output, work_path
    from volseg.io.locks import release_folder, share_folder

    out = tmp_path / "o.zarr"
    (out / MARKERS).mkdir(parents=True)
    (out / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {}}))

    def create(tmp, attrs):
        tmp.mkdir()
        (tmp / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group",
                                                   "attributes": {"volseg": attrs}}))

    work, markers, resumed = open_output(out, settings={"a": 1}, create=create, overwrite=True, total=1)
    assert work == work_path(out) and not resumed
    markers.mark((0, 0, 0))
    other = subprocess.Popen([sys.executable, "-c", (  # a second writer sharing the folder for 2 s
        "import sys, time; from volseg.io.locks import share_folder; "
        f"assert share_folder({str(work)!r}); print('in', flush=True); time.sleep(2)")],
        stdout=subprocess.PIPE, text=True)
    assert other.stdout.readline().strip() == "in"
    t0 = time.perf_counter()
    assert finish_output(out, work, total=1)
    waited = time.perf_counter() - t0
    other.wait(30)
    assert waited > 1.0 and not work.exists() and json.loads((out / "zarr.json").read_text())[
        "attributes"]["volseg"]["complete"] is True
    assert share_folder(out) and not share_folder(work)
    release_folder(out)
