"""Streamed postprocess over several chunks equals the whole-volume reference, and a rerun after
a lost chunk marker rewrites only that chunk (resume through io.markers)."""

import numpy as np
import zarr

from volseg.parallel import Execution
from volseg.io.markers import MARKERS
from volseg.postprocess.kernels import postprocess_array
from volseg.postprocess.run import postprocess


def test_streamed_equals_reference_and_resumes(tmp_path):
    values = np.full((16, 16, 16), 0.1, np.float32)
    values[2:14, 3:13, 3:13] = 0.9
    values[6:10, 6:10, 6:10] = 0.1               # a cavity spread over 8 chunks
    values[0, 15, 15] = 0.9                      # a speck
    np.save(tmp_path / "p.npy", values)
    kw = dict(threshold=0.5, smooth=0, min_size=2, fill_holes=100, chunks=8, execution=Execution.parse(quiet=True))  # float input: smoothed by default
    first = postprocess(tmp_path / "p.npy", tmp_path / "o.zarr", **kw)
    out = zarr.open_group(str(tmp_path / "o.zarr"))["0"]
    ref = postprocess_array(values, threshold=0.5, min_size=2, fill_holes=100)
    np.testing.assert_array_equal(out[:], ref)
    assert first["complete"] and first["chunks_written"] == 8 and out[8, 8, 8] == 1 and out[0, 15, 15] == 0
    (tmp_path / "o.zarr" / MARKERS / "c1.1.1").unlink()
    out[8:, 8:, 8:] = 0
    again = postprocess(tmp_path / "p.npy", tmp_path / "o.zarr", **kw)
    assert again["chunks_written"] == 1 and again["chunks_done_before"] == 7
    np.testing.assert_array_equal(out[:], ref)
