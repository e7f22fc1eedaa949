"""Betti numbers of known shapes, the chunked Euler characteristic equal to the whole volume's,
and the leaderboard's feature counts."""

import numpy as np

from volseg.metrics.topology import betti_numbers, euler_chunked, feature_counts


def _shapes():
    ball = np.zeros((9, 9, 9), bool)
    ball[2:7, 2:7, 2:7] = True
    hollow = ball.copy()
    hollow[4, 4, 4] = False                      # one cavity
    ring = np.zeros((5, 11, 11), bool)
    ring[2, 2:9, 2:9] = True
    ring[2, 4:7, 4:7] = False                    # one tunnel
    two = np.zeros((6, 6, 6), bool)
    two[1, 1, 1] = two[4, 4, 4] = True           # two components
    return {(1, 0, 0): ball, (1, 0, 1): hollow, (1, 1, 0): ring, (2, 0, 0): two}


def test_betti_numbers_and_chunked_euler():
    for betti, mask in _shapes().items():
        assert betti_numbers(mask) == betti
        b0, b1, b2 = betti
        assert euler_chunked(mask, chunks=3) == b0 - b1 + b2
    assert feature_counts((2, 1, 0)) == (1, 1, 0) and feature_counts((0, 0, 0)) == (0, 0, 0)
