"""Stitching a patch store: identity for every blend mode, parts, threads vs processes, resume."""

import numpy as np
import pytest
import zarr

from volseg.data.patchstore import create_store
from volseg.errors import VolsegError
from volseg.geometry import grid_origins, stride_from_overlap
from volseg.inference import stitch
from volseg.inference.output import OutputOptions
from volseg.parallel import Execution


def _identity_store(path, volume, patch, overlap=0.5, dtype="float32", perm=None):
    """A predictions store whose patches are the input's own crops (an identity model)."""
    origins = grid_origins(volume.shape, patch, stride_from_overlap(patch, overlap))
    if perm is not None:
        origins = origins[perm(len(origins))]
    patches = np.stack([volume[o[0]:o[0] + patch[0], o[1]:o[1] + patch[1], o[2]:o[2] + patch[2]]
                        for o in origins])[:, None]
    group = create_store(path, n=len(origins), channels=1, patch=patch, dtype=dtype, origins=origins,
                         attrs={"kind": "predictions", "source": "test", "source_shape": list(volume.shape),
                                "patch": list(patch), "mode": "grid"})
    group["patches"][:] = patches
    return path


@pytest.fixture(scope="module")
def volume():
    return np.random.default_rng(1).normal(size=(23, 31, 17)).astype(np.float32)


@pytest.mark.parametrize("blend", ["gaussian", "hann", "constant", "crop"])
def test_identity_patches_stitch_back_to_the_input(tmp_path, volume, blend):
    store = _identity_store(tmp_path / "p.zarr", volume, (8, 12, 6))
    result = stitch(store, tmp_path / "out.zarr", blend=blend, chunks=(10, 9, 7),
                    execution=Execution.parse(quiet=True))
    out = zarr.open_array(str(tmp_path / "out.zarr" / "0"))[:]
    np.testing.assert_allclose(out, volume, rtol=1e-5, atol=1e-5)
    assert result["chunks_written"] == 3 * 4 * 3


def test_stitch_does_not_depend_on_patch_row_order(tmp_path, volume):
    rng = np.random.default_rng(0)
    store = _identity_store(tmp_path / "p.zarr", volume, (8, 8, 8), perm=rng.permutation)
    stitch(store, tmp_path / "out.zarr", blend="crop", chunks=8, execution=Execution.parse(quiet=True))
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "out.zarr" / "0"))[:], volume)


def test_parts_and_processes_give_the_one_run_result(tmp_path, volume):
    store = _identity_store(tmp_path / "p.zarr", volume, (8, 8, 8), dtype="float16")
    stitch(store, tmp_path / "one.zarr", chunks=8, execution=Execution.parse(quiet=True))
    stitch(store, tmp_path / "parts.zarr", chunks=8, execution=Execution.parse(part="1/2", quiet=True))
    half = zarr.open_array(str(tmp_path / "parts.zarr" / "0"))[:]
    assert (half == 0).any()  # part 2 not written yet
    r2 = stitch(store, tmp_path / "parts.zarr", chunks=8,
                execution=Execution.parse(scheduler="processes", workers=2, part="2/2", quiet=True))
    assert r2["chunks_done_before"] == 0
    one = zarr.open_array(str(tmp_path / "one.zarr" / "0"))[:]
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "parts.zarr" / "0"))[:], one)
    np.testing.assert_allclose(one, volume, atol=2e-3)  # float16 store


def test_rerun_skips_done_chunks_and_other_settings_are_refused(tmp_path, volume):
    store = _identity_store(tmp_path / "p.zarr", volume, (8, 8, 8))
    out = tmp_path / "out.zarr"
    stitch(store, out, chunks=8, execution=Execution.parse(quiet=True))
    before = zarr.open_array(str(out / "0"))[:]
    again = stitch(store, out, chunks=8, execution=Execution.parse(quiet=True))
    assert again["chunks_written"] == 0 and again["chunks_done_before"] == again["chunks_total"]
    with pytest.raises(VolsegError, match="other settings"):
        stitch(store, out, chunks=8, blend="hann", execution=Execution.parse(quiet=True))
    np.testing.assert_array_equal(zarr.open_array(str(out / "0"))[:], before)
    stitch(store, out, chunks=8, blend="hann", execution=Execution.parse(overwrite=True, quiet=True))
    np.testing.assert_allclose(zarr.open_array(str(out / "0"))[:], volume, rtol=1e-5, atol=1e-5)


def test_threshold_writes_uint8_labels(tmp_path):
    probs = np.random.default_rng(2).uniform(size=(16, 16, 16)).astype(np.float32)
    store = _identity_store(tmp_path / "p.zarr", probs, (8, 8, 8))
    stitch(store, tmp_path / "lab.zarr", chunks=8, execution=Execution.parse(quiet=True), output_options=OutputOptions.parse(threshold=0.5))
    labels = zarr.open_array(str(tmp_path / "lab.zarr" / "0"))[:]
    assert labels.dtype == np.uint8
    expected = (probs >= 0.5).astype(np.uint8)
    assert (labels == expected).mean() > 0.999  # ties at 0.5 within float rounding
