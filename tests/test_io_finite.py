"""Non-finite voxels: described with count, kinds and first position; refused or replaced per block."""

import dask.array as da
import numpy as np
import pytest

from volseg.errors import VolsegError
from volseg.io.finite import check_array, count_nonfinite, describe, guard, parse_nan_value


def test_described_refused_or_replaced():
    v = np.zeros((4, 4, 4), np.float32)
    v[1, 2, 3], v[3, 0, 0] = np.nan, -np.inf
    assert describe(v, offset=(10, 0, 0)) == "2 non-finite voxels (NaN, -Inf) at (11, 2, 3)"
    assert describe(np.zeros(3, np.int8)) is None
    np.testing.assert_array_equal(check_array(v, "v", nan_value=7), np.where(np.isfinite(v), v, 7))
    lazy = guard(da.from_array(v, chunks=2), "v.zarr")
    with pytest.raises(VolsegError, match=r"^v.zarr: 1 non-finite voxel \(NaN\) at \(1, 2, 3\)"):
        lazy[0:2, 2:4, 2:4].compute(scheduler="synchronous")
    assert count_nonfinite(da.from_array(v, chunks=2)) == 2
    assert parse_nan_value("0") == 0.0 and parse_nan_value(None) is None
    with pytest.raises(VolsegError, match=r"^--nan-value: must be a finite number, got 'inf'"):
        parse_nan_value("inf")
