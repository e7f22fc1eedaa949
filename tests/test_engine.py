"""The fused engine's pieces: accumulating weighted pieces into a chunk, normalising, merged
stats, and independent tasks run in an open session (results in order)."""

import numpy as np
import pytest

from volseg.inference.engine import accumulate, map_tasks, merge_stats, normalise, open_session


def test_accumulate_and_normalise():
    wv, w = np.zeros((1, 4, 4, 4), np.float32), np.zeros((4, 4, 4), np.float32)
    piece = ((10, 10, 10), np.full((1, 4, 4, 2), 6.0, np.float32), np.full((4, 4, 2), 2.0, np.float32))
    accumulate(wv, w, (10, 10, 10), [piece, None, ((10, 10, 12), np.ones((1, 4, 4, 2), np.float32) * 3,
                                                   np.ones((4, 4, 2), np.float32))])
    np.testing.assert_array_equal(normalise(wv, w)[0, :, :, :2], 3.0)
    np.testing.assert_array_equal(normalise(wv, w)[0, :, :, 2:], 3.0)
    with pytest.raises(RuntimeError, match="blend: 16 voxels received no patch weight"):
        normalise(wv, np.where(np.arange(4) < 3, w, 0))
    assert merge_stats([{"a": 1, "mem_peak": 5}, None, {"a": 2, "mem_peak": 3}]) == {"a": 3, "mem_peak": 5}


def test_map_tasks_keeps_the_order():
    with open_session("threads", 2) as session:
        assert map_tasks(lambda k: k * k, list(range(6)), session=session, quiet=True) == [0, 1, 4, 9, 16, 25]
