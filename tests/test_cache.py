"""The per-process chunk cache: boxes assembled from whole storage chunks, each decoded once."""

import numpy as np
import zarr

from volseg.inference import cache


def test_each_chunk_is_read_once_and_the_budget_evicts(tmp_path, monkeypatch):
    data = np.random.default_rng(0).normal(size=(12, 10, 9)).astype(np.float32)
    arr = zarr.create_array(str(tmp_path / "a.zarr"), shape=data.shape, chunks=(4, 4, 4), dtype="f4")
    arr[:] = data
    box, missed = cache.cached_region(arr, "cache-test", (1, 2, 3), (9, 10, 9), (4, 4, 4))
    np.testing.assert_array_equal(box, data[1:9, 2:10, 3:9])
    assert missed == data[0:12, 0:10, 0:9].nbytes  # rows 0-11: 3 x 3 x 3 whole chunks, clipped at the border
    box, missed = cache.cached_region(arr, "cache-test", (0, 0, 0), (4, 4, 4), (4, 4, 4))
    assert missed == 0 and np.array_equal(box, data[:4, :4, :4])
    monkeypatch.setenv("VOLSEG_CHUNK_CACHE_MB", "0")
    _, missed = cache.cached_region(arr, "cache-test-2", (0, 0, 0), (8, 4, 4), (4, 4, 4))
    _, again = cache.cached_region(arr, "cache-test-2", (0, 0, 0), (4, 4, 4), (4, 4, 4))
    assert missed == 2 * data[:4, :4, :4].nbytes and again == data[:4, :4, :4].nbytes  # evicted
    monkeypatch.setenv("VOLSEG_CHUNK_CACHE_MB", "x")
    assert cache.budget_bytes() == 256 * 2**20
