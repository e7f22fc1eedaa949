"""The fused engine's pieces: accumulating weighted pieces into a chunk, normalising, merged
stats, and a pass run in an open executor (every chunk finalised once, with all its groups)."""

import numpy as np
import pytest

from volseg.inference.engine import accumulate, merge_stats, normalise, run_pass
from volseg.inference.plan import Plan
from volseg.parallel import Execution


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


def _group(b, wanted):
    return {"stats": {"groups": 1}, **{tuple(c): tuple(b) for c in wanted}}


def _final(c, pieces):
    return (tuple(c), sorted(set(pieces)))


@pytest.mark.parametrize("window", [1, 3, None])
def test_a_pass_finalises_every_chunk_once_with_all_its_groups(window):
    plan = Plan.build((12, 12, 12), (4, 4, 4), (2, 2, 2), (4, 4, 4))
    todo = plan.chunk_list()
    with Execution.parse(workers=2, quiet=True).executor() as executor:
        finals, stats = run_pass(plan, todo, _group, _final, executor=executor, window=window)
    assert sorted(c for c, _ in finals) == sorted(tuple(c) for c in todo)
    for c, groups in finals:
        assert groups == sorted(tuple(b) for b in plan.groups_for(c))
    assert merge_stats(stats)["groups"] == len({b for c in todo for b in plan.groups_for(tuple(c))})
