"""The holes pass of postprocess (over the kept mask, merged across chunk faces): a hole split
over eight chunks is filled exactly when the reference fills it (each of its slice holes has 16
pixels, the cavity 64 voxels)."""

import numpy as np
import zarr

from volseg.parallel import Execution
from volseg.postprocess.kernels import postprocess_array
from volseg.postprocess.run import postprocess


def test_a_hole_over_eight_chunks(tmp_path):
    values = np.zeros((16, 16, 16), np.uint8)
    values[2:14, 2:14, 2:14] = 1
    values[6:10, 6:10, 6:10] = 0                 # 8 voxels in each of the 8 chunks
    np.save(tmp_path / "l.npy", values)
    for n, filled in ((15, False), (16, True), (64, True)):
        out = tmp_path / f"o{n}.zarr"
        postprocess(tmp_path / "l.npy", out, fill_holes=n, chunks=8, execution=Execution.parse(quiet=True))
        got = zarr.open_group(str(out))["0"][:]
        np.testing.assert_array_equal(got, postprocess_array(values, fill_holes=n))
        assert int(got.sum()) == int(values.sum()) + (64 if filled else 0)
