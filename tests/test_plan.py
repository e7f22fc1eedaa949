"""Plan: every patch is owned by exactly one group, groups_for finds every patch over a chunk,
and read_box mirrors a volume shorter than the patch at its far end (through the chunk cache)."""

import numpy as np
import zarr

from volseg.inference.plan import Plan, read_box


def test_ownership_partitions_the_patches():
    plan = Plan.build((40, 30, 20), patch=(16, 16, 16), stride=(8, 8, 8), chunks=(16, 16, 16))
    owned = [tuple(int(v) for v in o) for g in plan.group_list()
             for o in plan.origins([np.asarray(i) for i in plan.owned(g)])]
    assert len(owned) == len(set(owned)) == plan.n_patches
    for chunk in plan.chunk_list():
        lo, hi = plan.bounds(chunk)
        over = {tuple(int(v) for v in o) for o in plan.origins()
                if all(o[a] < hi[a] and o[a] + 16 > lo[a] for a in range(3))}
        mine = {tuple(int(v) for v in o) for g in plan.groups_for(chunk)
                for o in plan.origins([np.asarray(i) for i in plan.owned(g)])}
        assert over <= mine


def test_read_box_mirrors_the_far_end_and_counts_bytes(tmp_path):
    data = np.arange(5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7)
    arr = zarr.create_array(str(tmp_path / "a.zarr"), shape=data.shape, chunks=(4, 4, 4), dtype="f4")
    arr[:] = data
    for key, chunks in ((None, None), ("plan-test", (4, 4, 4))):
        box, nbytes = read_box(arr, (0, 0, 0), (8, 6, 9), data.shape, key=key, chunks=chunks)
        np.testing.assert_array_equal(box, np.pad(data, ((0, 3), (0, 0), (0, 2)), mode="reflect"))
        assert nbytes == data.nbytes  # the volume once; the mirrored part is no extra read
    again, nbytes = read_box(arr, (1, 2, 3), (5, 6, 7), data.shape, key="plan-test", chunks=(4, 4, 4))
    np.testing.assert_array_equal(again, data[1:5, 2:6, 3:7])
    assert nbytes == 0  # every chunk was cached
