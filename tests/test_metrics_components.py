"""Chunked connected components, chunk-wise Euler characteristic and Betti numbers vs whole-volume scikit-image."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from skimage.measure import euler_number, label

from volseg.metrics.components import FaceMerger, block_faces, face_pairs, label_chunked
from volseg.metrics.topology import betti_numbers, euler_chunked, topology_score


def _same_partition(a, b):
    """Two labellings are the same partition iff (a, b) pairs are in 1-1 correspondence."""
    assert ((a > 0) == (b > 0)).all()
    pairs = np.unique(np.stack([a.ravel(), b.ravel()], 1), axis=0)
    return len(pairs) == len(np.unique(a)) == len(np.unique(b))


@pytest.mark.parametrize("chunks", [(8, 9, 7), 5, (64, 64, 64), (2, 3, 40)])
@pytest.mark.parametrize("connectivity,background", [(3, False), (1, False), (1, True)])
def test_chunked_components_equal_whole(chunks, connectivity, background):
    rng = np.random.default_rng(0)
    mask = rng.random((23, 31, 29)) < 0.3
    labels, n = label_chunked(mask, chunks=chunks, connectivity=connectivity, background=background)
    ref, n_ref = label(~mask if background else mask, connectivity=connectivity, return_num=True)
    assert n == n_ref
    assert _same_partition(labels, ref)


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(0.05, 0.6), st.integers(2, 9))
def test_chunked_components_random(seed, density, chunk):
    mask = np.random.default_rng(seed).random((13, 17, 11)) < density
    labels, n = label_chunked(mask, chunks=chunk, connectivity=3)
    ref, n_ref = label(mask, connectivity=3, return_num=True)
    assert n == n_ref and _same_partition(labels, ref)


def test_diagonal_contacts_across_chunk_corners_merge():
    mask = np.zeros((4, 4, 4), bool)
    mask[1, 1, 1] = mask[2, 2, 2] = True  # corner contact across the (2, 2, 2) chunk corner
    labels, n = label_chunked(mask, chunks=2, connectivity=3)
    assert n == 1
    labels, n = label_chunked(mask, chunks=2, connectivity=1)
    assert n == 2


def test_face_pairs_offsets():
    low = np.array([[1, 0], [0, 0]])
    high = np.array([[0, 0], [0, 5]])
    assert face_pairs(low, high, connectivity=3).tolist() == [[1, 5]]
    assert face_pairs(low, high, connectivity=1).tolist() == []


@pytest.mark.parametrize("density", [0.2, 0.5, 0.8])
@pytest.mark.parametrize("chunks", [(5, 6, 7), 2, 64])
def test_chunked_euler_equals_skimage(density, chunks):
    shape = (9, 10, 11) if chunks == 2 else (19, 23, 17)
    mask = np.random.default_rng(3).random(shape) < density
    assert euler_chunked(mask, chunks=chunks) == euler_number(mask, connectivity=3)


def _shapes():
    z, y, x = np.mgrid[:32, :32, :32] - 15.5
    r = np.sqrt(z ** 2 + y ** 2 + x ** 2)
    torus = (np.sqrt(y ** 2 + x ** 2) - 9) ** 2 + z ** 2 < 16
    return {"ball": (r < 10, (1, 0, 0)), "shell": ((r < 10) & (r > 6), (1, 0, 1)),
            "torus": (torus, (1, 1, 0)), "two balls": ((r < 4) | (np.abs(z - 10) + np.abs(y) + np.abs(x) < 3), (2, 0, 0)),
            "empty": (r < 0, (0, 0, 0))}


@pytest.mark.parametrize("name", list(_shapes()))
def test_betti_numbers_of_known_shapes(name):
    mask, expected = _shapes()[name]
    assert betti_numbers(mask) == expected


def test_topology_score():
    assert topology_score((1, 0, 0), (1, 0, 0)) == 1.0
    assert topology_score((0, 0, 0), (0, 0, 0)) == 1.0
    # b0 counts one component fewer (the oldest bar never dies): 2 against 0 features, the truth
    # has none, so F1 = 0.5 / (2 + 0.5); the other dimensions are inactive
    assert topology_score((3, 0, 0), (1, 0, 0)) == pytest.approx(0.2)
    assert topology_score((3, 0, 0), (2, 0, 0)) == pytest.approx(2 * 1 / (2 + 1))
    # b1 missing entirely, b0 inactive (one component each): F1_1 = 0
    assert topology_score((1, 0, 0), (1, 2, 0)) == 0.0
    # extra cavities where the truth has none: 0.5 / (p + 0.5), not 0
    assert topology_score((1, 0, 3), (1, 0, 0)) == pytest.approx(0.5 / 3.5)
    # active dimensions renormalised: b1 perfect (0.33), b2 spurious (0.33)
    assert topology_score((1, 2, 1), (1, 2, 0)) == pytest.approx((0.33 * 1 + 0.33 * 0.5 / 1.5) / 0.66)


def test_face_merger_groups_never_merge_across_groups():
    # Two chunks along z; each chunk's two labels sit in groups 0 and 1 (like two tiles in y).
    merger = FaceMerger((2, 1, 1), connectivity=3)
    for iz in range(2):
        labels = np.zeros((2, 4, 2), np.uint8)
        labels[:, :2] = 1
        labels[:, 2:] = 2
        extra = {"groups": np.array([0, 0, 1]), "pairs": np.array([[1, 2]]),   # touch inside the chunk
                 "group_border": np.array([1]) if iz == 0 else np.zeros(0, np.int64)}
        merger.add_layer(iz, {(0, 0): (2, block_faces(labels), (), extra)})
    _, n, _ = merger.finish()
    assert n == 1                                    # the whole volume: one component
    count, enclosed = merger.finish_groups(2)
    assert count.tolist() == [1, 1]                  # per group: merged across the z face only
    assert enclosed.tolist() == [0, 1]               # group 0's component touches its border
