"""`volseg.metrics.betti_matching`: hand-checked cases, barcodes against labelling, ranks against 4D."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from skimage.measure import euler_number, label

from volseg.errors import VolsegError
from volseg.metrics.betti_matching import (_cripser, barcode, betti_from_barcode, betti_matching,
                                           feature_counts_of, tile_counts)
from volseg.metrics.topology import betti_numbers

Z, Y, X = np.mgrid[:24, :24, :24] - 11.5
R = np.sqrt(Z ** 2 + Y ** 2 + X ** 2)
BALL = R < 8
SHELL = (R < 8) & (R > 4)
TORUS = (np.sqrt(Y ** 2 + X ** 2) - 7) ** 2 + Z ** 2 < 9
EMPTY = np.zeros_like(BALL)


def _cubes(*corners, size=4):
    out = np.zeros((24, 24, 24), bool)
    for z, y, x in corners:
        out[z:z + size, y:y + size, x:x + size] = True
    return out


def _whole(pred, truth):
    return betti_matching(pred, truth, tiles=(1, 1, 1))


def test_identical_volumes_score_one():
    for mask in (BALL, SHELL, TORUS, _cubes((2, 2, 2), (14, 14, 14))):
        got = _whole(mask, mask)
        assert got["matched"] == got["pred"] == got["truth"] and got["topology"] == 1.0


def test_known_feature_counts():
    assert _whole(SHELL, SHELL)["truth"] == [0, 0, 1]          # one cavity
    assert _whole(TORUS, TORUS)["truth"] == [0, 1, 0]          # one tunnel
    assert _whole(_cubes((2, 2, 2), (14, 14, 14)), EMPTY)["pred"] == [1, 0, 0]  # b0 - 1


def test_components_matched_only_where_they_overlap():
    truth = _cubes((2, 2, 2), (14, 14, 14))
    near = _cubes((2, 2, 3), (14, 14, 14))       # one cube moved by a voxel: still overlapping
    far = _cubes((2, 2, 12), (14, 14, 14))       # moved apart: no longer the same feature
    assert _whole(near, truth)["matched"] == [1, 0, 0]
    got = _whole(far, truth)
    assert got["matched"] == [0, 0, 0] and got["pred"] == got["truth"] == [1, 0, 0]
    assert got["topology"] == 0.0                # same counts, wrong place: count matching says 1.0


def test_extra_cavity_and_tunnel():
    got = _whole(SHELL, BALL)                    # a cavity the truth does not have
    assert got["pred"] == [0, 0, 1] and got["truth"] == [0, 0, 0]
    assert got["f1"] == [None, None, pytest.approx(0.5 / 1.5)]
    got = _whole(BALL, SHELL)                    # the cavity missed
    assert got["f1"] == [None, None, 0.0] and got["topology"] == 0.0
    two_tori = TORUS | np.roll(TORUS, 7, axis=0)    # stacked, one voxel apart
    got = _whole(two_tori, TORUS)                # the true tunnel matched, one extra
    assert got["matched"][1] == 1 and got["pred"][1] == 2 and got["truth"][1] == 1
    shifted = _whole(np.roll(TORUS, 1, axis=2), TORUS)
    assert shifted["matched"] == shifted["truth"] == [0, 1, 0]


def test_empty_prediction_and_empty_truth():
    assert _whole(EMPTY, EMPTY)["topology"] == 1.0                     # nothing active
    assert _whole(EMPTY, TORUS)["topology"] == 0.0
    got = _whole(TORUS, EMPTY)                                         # 1 tunnel, truth none
    assert got["f1"] == [None, pytest.approx(0.5 / 1.5), None]


def test_leaderboard_tiles_sum_counts():
    truth = _cubes((2, 2, 2), (14, 14, 14))
    got = betti_matching(truth, truth)                                 # 2 x 2 x 2 tiles
    assert got["truth"] == [0, 0, 0] and got["topology"] == 1.0        # one cube per tile
    got = betti_matching(TORUS, TORUS)                                 # cut into 8 arcs
    assert got["truth"] == [0, 0, 0] and got["topology"] == 1.0


def test_refuses_large_volumes():
    big = np.zeros((321, 320, 320), bool)
    with pytest.raises(VolsegError, match="320"):
        betti_matching(big, big)


def _betti_6(mask):
    """(b0, b1, b2) with a 6-connected foreground and 26-connected background, by labelling."""
    b0 = label(mask, connectivity=1).max()
    bg = label(~mask, connectivity=3)
    border = set(np.unique(np.concatenate([np.take(bg, i, axis=a).ravel()
                                           for a in range(3) for i in (0, -1)])))
    b2 = len(set(np.unique(bg)) - border - {0})
    return int(b0), int(b0 + b2 - euler_number(mask, connectivity=1)), int(b2)


masks = arrays(bool, (6, 7, 5), elements=st.booleans())


@settings(max_examples=40, deadline=None)
@given(masks)
def test_barcode_betti_numbers_match_labelling(mask):
    assert betti_from_barcode(barcode(mask, connectivity=6)) == _betti_6(mask)
    assert betti_from_barcode(barcode(mask, connectivity=26)) == betti_numbers(mask)
    b0, b1, b2 = _betti_6(mask)
    assert feature_counts_of(barcode(mask)) == (max(b0 - 1, 0), b1, b2)


def _matched_by_4d_ranks(p, g):
    """Reference: m_k = r(P) + r(G) - r(P + G), every rank from a 4D barcode (all dimensions)."""
    u = p | g

    def ranks(layers, born):
        bars = _cripser().computePH(np.stack(layers), maxdim=2)
        keep = (bars[:, 1] <= born) & (bars[:, 2] > 1.0)
        return [int(np.count_nonzero(keep & (bars[:, 0] == k))) for k in range(3)]

    lp, lu, lg = np.where(p, 0.0, 2.0), np.where(u, 1.0, 2.0), np.where(g, 0.0, 2.0)
    r_p, r_g = ranks([lp, lu], 0.0), ranks([lg, lu], 0.0)
    r_pg = ranks([lp, lu, np.where(g, 0.5, 2.0)], 0.5)
    m = [a + b - c for a, b, c in zip(r_p, r_g, r_pg)]
    return [max(m[0] - 1, 0), m[1], m[2]]


@settings(max_examples=25, deadline=None)
@given(masks, masks)
def test_matched_counts_equal_4d_persistent_ranks(p, g):
    counts = tile_counts(p, g)
    expected = _matched_by_4d_ranks(p, g) if p.any() and g.any() else [0, 0, 0]
    assert counts[0].tolist() == expected
    assert all(counts[0] <= np.minimum(counts[1], counts[2]))


def test_available_with_the_topology_extra():
    from volseg.metrics.betti_matching import available

    assert available() is True        # dev installs volseg[topology]'s cripser
