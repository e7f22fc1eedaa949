"""VOI over the union foreground of 26-connected components equals scikit-image's, streamed in many chunks."""

import numpy as np
import pytest
from skimage.measure import label
from skimage.metrics import variation_of_information as skimage_voi

from volseg.metrics import evaluate, variation_of_information, voi_score
from volseg.parallel import Execution


def _reference(pred, truth):
    g, p = label(truth, connectivity=3), label(pred, connectivity=3)
    union = truth | pred
    return skimage_voi(g[union], p[union]).sum()


@pytest.mark.parametrize("seed", [0, 1])
def test_voi_equals_skimage_whole_and_chunked(seed):
    rng = np.random.default_rng(seed)
    truth = rng.random((21, 25, 19)) < 0.25
    pred = (rng.random(truth.shape) < 0.2) | np.roll(truth, 1, axis=2)
    ref = _reference(pred, truth)
    assert variation_of_information(pred, truth) == pytest.approx(ref, rel=1e-12)
    for block in [(4, 5, 6), 64]:
        got = evaluate(pred, truth.astype(np.uint8), metrics="voi", block=block,
                       execution=Execution.parse(scheduler="synchronous", quiet=True))["voi"]
        assert got == pytest.approx(ref, rel=1e-12)


def test_voi_split_and_merge():
    truth = np.zeros((5, 5, 12), bool)
    truth[2, 2, 1:11] = True
    split = truth.copy()
    split[2, 2, 6] = False               # one component split in two
    assert variation_of_information(truth, truth) == 0.0
    assert variation_of_information(split, truth) > 0.9
    assert variation_of_information(np.zeros_like(truth), np.zeros_like(truth)) == 0.0
    assert voi_score(0.0) == 1.0 and voi_score(1.0) == pytest.approx(1 / 1.3)


def test_streamed_split_and_merge_terms():
    """A prediction cutting the truth's one rod in two is a false split (H(P|G) > 0, no merge);
    the prediction joining two true rods is a false merge (H(G|P) > 0, no split)."""
    truth = np.zeros((5, 5, 12), bool)
    truth[2, 2, 1:11] = True
    cut = truth.copy()
    cut[2, 2, 6] = False
    for block in [(2, 3, 4), 64]:
        split = evaluate(cut, truth.astype(np.uint8), metrics="voi", block=block,
                         execution=Execution.parse(scheduler="synchronous", quiet=True))
        merge = evaluate(truth, cut.astype(np.uint8), metrics="voi", block=block,
                         execution=Execution.parse(scheduler="synchronous", quiet=True))
        assert split["voi_split"] > 0.9 and split["voi_merge"] == 0.0, split
        assert merge["voi_merge"] > 0.9 and merge["voi_split"] == 0.0, merge
        assert split["voi"] == split["voi_split"] + split["voi_merge"]
