"""CheckedZarr: reads like the array; a damaged chunk is a VolsegError naming the array and chunk."""

import numpy as np
import pytest
import zarr

from volseg.errors import VolsegError
from volseg.io.checked import array_name, checked


def test_damaged_chunk_is_named(tmp_path):
    data = np.arange(8 * 8 * 8, dtype=np.float32).reshape(8, 8, 8)
    group = zarr.open_group(str(tmp_path / "v.zarr"), mode="w")
    arr = group.create_array("0", shape=data.shape, chunks=(4, 4, 4), dtype="f4")
    arr[:] = data
    safe = checked(arr, array_name(tmp_path / "v.zarr", arr))
    np.testing.assert_array_equal(safe[0:4, 4:8, :], data[0:4, 4:8, :])
    (tmp_path / "v.zarr" / "0" / "c" / "1" / "0" / "1").write_bytes(b"not a chunk")
    with pytest.raises(VolsegError, match=r"v.zarr/0.*1[./]0[./]1"):
        safe[:]
