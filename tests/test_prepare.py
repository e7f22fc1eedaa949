"""prepare(): every input kind and dtype to OME-Zarr, exactly; spacing kept; dtype checks; schedulers."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from test_io_readers import DTYPES, KINDS, SHAPE, make_volume, write_input
from volseg.errors import VolsegError
from volseg.io import open_volume, read_meta
from volseg.io.info import volume_info
from volseg.io.prepare import prepare
from volseg.parallel import Execution


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", KINDS)
def test_prepare_round_trip_exact(kind, dtype, tmp_path):
    vol = make_volume(dtype)
    src = write_input(kind, tmp_path, vol)
    summary = prepare(src, tmp_path / "out.zarr", chunks=16)
    assert summary["shape"] == list(SHAPE) and summary["dtype"] == np.dtype(dtype).name
    out = open_volume(tmp_path / "out.zarr")
    assert out.dtype == vol.dtype
    np.testing.assert_array_equal(out.compute(), vol)
    assert read_meta(tmp_path / "out.zarr").chunks == (16, 16, 16)


def test_prepare_keeps_nifti_spacing_and_makes_levels(tmp_path):
    vol = make_volume("int16")
    src = write_input("nifti", tmp_path, vol, spacing=(3.0, 0.5, 0.25))
    prepare(src, tmp_path / "out.zarr", chunks="8x16x16", levels=3)
    meta = read_meta(tmp_path / "out.zarr")
    assert meta.spacing == (3.0, 0.5, 0.25) and meta.unit == "millimeter"
    assert meta.levels == 3 and meta.chunks == (8, 16, 16)


def test_prepare_dtype_conversion(tmp_path):
    vol = make_volume("uint16")
    src = write_input("npy", tmp_path, vol)
    prepare(src, tmp_path / "f.zarr", dtype="float32")
    np.testing.assert_array_equal(open_volume(tmp_path / "f.zarr").compute(), vol.astype(np.float32))
    with pytest.raises(VolsegError, match="do not fit uint8"):
        prepare(src, tmp_path / "u8.zarr", dtype="uint8")
    assert not (tmp_path / "u8.zarr").exists() and not list(tmp_path.glob("*.tmp-*"))
    small = write_input("tiff", tmp_path, (vol % 200).astype(np.uint16))
    prepare(small, tmp_path / "ok.zarr", dtype="uint8")
    np.testing.assert_array_equal(open_volume(tmp_path / "ok.zarr").compute(), (vol % 200).astype(np.uint8))


def test_prepare_existing_output_and_overwrite(tmp_path):
    src = write_input("npy", tmp_path, make_volume("uint8"))
    prepare(src, tmp_path / "out.zarr")
    with pytest.raises(VolsegError, match="exists; pass --overwrite"):
        prepare(src, tmp_path / "out.zarr")
    np.save(src, make_volume("uint8", seed=5))
    prepare(src, tmp_path / "out.zarr", execution=Execution.parse(overwrite=True))
    np.testing.assert_array_equal(open_volume(tmp_path / "out.zarr").compute(), make_volume("uint8", seed=5))


def test_prepare_refuses_output_inside_input(tmp_path):
    src = write_input("zarr-v3", tmp_path, make_volume("uint8"))
    with pytest.raises(VolsegError, match="inside the input"):
        prepare(src, src / "copy.zarr")


@pytest.mark.parametrize("scheduler", ["synchronous", "processes"])
def test_prepare_other_schedulers(scheduler, tmp_path):
    vol = make_volume("uint16", (20, 9, 11))
    src = write_input("tiff-folder", tmp_path, vol)
    prepare(src, tmp_path / "out.zarr", chunks=8, levels=2,
            execution=Execution.parse(scheduler=scheduler, workers=2))
    np.testing.assert_array_equal(open_volume(tmp_path / "out.zarr").compute(), vol)


def test_prepare_bad_scheduler(tmp_path):
    src = write_input("npy", tmp_path, make_volume("uint8"))
    with pytest.raises(VolsegError, match="--scheduler"):
        prepare(src, tmp_path / "out.zarr", execution=Execution.parse(scheduler="carrier-pigeon"))


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shape=st.tuples(*[st.integers(1, 21)] * 3), chunk=st.integers(4, 9), levels=st.integers(1, 3))
def test_any_shape_and_chunk_round_trips(tmp_path_factory, shape, chunk, levels):
    tmp = tmp_path_factory.mktemp("prop")
    vol = make_volume("int16", shape)
    src = write_input("npy", tmp, vol)
    prepare(src, tmp / "out.zarr", chunks=chunk, levels=levels)
    np.testing.assert_array_equal(open_volume(tmp / "out.zarr").compute(), vol)


def test_info_exact_and_sampled_range(tmp_path):
    vol = make_volume("float32", (40, 16, 16))
    vol[3, 3, 3] = np.nan
    src = write_input("npy", tmp_path, vol)
    info = volume_info(src)
    assert info["range_sampled"] is False
    assert info["min"] == pytest.approx(float(np.nanmin(vol))) and info["max"] == pytest.approx(float(np.nanmax(vol)))
    prepare(src, tmp_path / "v.zarr", chunks=8, levels=2)
    sampled = volume_info(tmp_path / "v.zarr", exact_bytes=1000, sample_chunks=4)
    assert sampled["range_sampled"] is True and sampled["sampled_chunks"] == 4
    assert np.nanmin(vol) <= sampled["min"] <= sampled["max"] <= np.nanmax(vol)
    assert sampled["levels"] == 2 and sampled["level_shapes"] == [[40, 16, 16], [20, 8, 8]]


@pytest.mark.slow
def test_prepare_on_a_local_distributed_cluster(tmp_path):
    vol = make_volume("float32", (20, 9, 11))
    src = write_input("tiff", tmp_path, vol)
    prepare(src, tmp_path / "out.zarr", chunks=8, levels=2,
            execution=Execution.parse(scheduler="distributed", workers=2))
    np.testing.assert_array_equal(open_volume(tmp_path / "out.zarr").compute(), vol)


def test_two_prepare_runs_to_one_output_started_together(tmp_path):
    """One converts; the other is refused with one line (lock held, or the finished output
    exists) and never replaces the finished output without --overwrite."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    vol = np.random.default_rng(3).integers(0, 255, (64, 64, 64), dtype=np.uint8)
    np.save(tmp_path / "v.npy", vol)
    out = tmp_path / "v.zarr"
    cmd = [str(Path(sys.executable).with_name("volseg")), "prepare", str(tmp_path / "v.npy"), "-o", str(out),
           "--chunks", "16", "--levels", "2", "--quiet"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "COLUMNS": "200"}) for _ in range(2)]
    errs = [p.communicate(timeout=180)[1] for p in procs]
    assert sorted(p.returncode for p in procs) == [0, 2], errs
    err = next(e for p, e in zip(procs, errs) if p.returncode == 2).strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {out}: "), err
    assert "another volseg (pid " in err[0] or "exists; pass --overwrite" in err[0], err
    np.testing.assert_array_equal(open_volume(out).compute(), vol)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.npy", "v.zarr"]  # no lock, no temporary


def test_prepare_refuses_an_output_another_process_is_writing(tmp_path):
    import os

    from volseg.io.locks import output_lock

    np.save(tmp_path / "v.npy", np.zeros((8, 8, 8), np.uint8))
    with output_lock(tmp_path / "v.zarr"):
        with pytest.raises(VolsegError, match=rf"another volseg \(pid {os.getpid()}\) is writing it"):
            prepare(tmp_path / "v.npy", tmp_path / "v.zarr")
    assert not (tmp_path / "v.zarr").exists()


def test_a_bad_input_is_refused_before_the_lock_makes_any_folder(tmp_path):
    (tmp_path / "bad.npy").write_bytes(b"not a numpy file")
    with pytest.raises(VolsegError):
        prepare(tmp_path / "bad.npy", tmp_path / "new" / "sub" / "out.zarr")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.npy"]
