"""Label-balanced sampling: block counts, foreground draws, background rejection, seeding."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

from volseg.data.sampling import (ForegroundIndex, direct_array, draw_patch, item_rng, origin_containing,
                                  parse_fraction, uniform_origin)
from volseg.errors import VolsegError
from volseg.io.boxes import read_box


@pytest.fixture
def labels():
    rng = np.random.default_rng(0)
    lab = np.zeros((40, 36, 30), np.uint8)
    lab[rng.random(lab.shape) < 0.002] = 1
    lab[rng.random(lab.shape) < 0.01] = 2
    return lab


def test_block_counts_match_numpy(labels):
    arr = da.from_array(labels, chunks=(16, 10, 30))
    index = ForegroundIndex.build(arr, start=(8, 0, 0), stop=(40, 36, 30), scheduler="synchronous")
    assert index.total == int((labels[8:] == 1).sum())
    for flat in range(index.counts.size):
        lo, hi = index.block_bounds(flat)
        box = labels[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        assert index.counts.ravel()[flat] == (box == 1).sum()
    assert index.edges[0][0] == 8 and index.edges[0][-1] == 40


def test_foreground_draws_contain_label_1_and_stay_in_region(labels):
    arr = da.from_array(labels, chunks=16)
    start, stop = (0, 0, 0), (30, 36, 30)
    index = ForegroundIndex.build(arr, start=start, stop=stop)
    for k in range(50):
        origin, lab = draw_patch(item_rng(0, k), patch=(6, 8, 8), start=start, stop=stop, labels=arr,
                                 index=index, foreground=True)
        assert (lab == 1).any()
        assert (origin >= 0).all() and (origin + (6, 8, 8) <= stop).all()
        assert np.array_equal(lab, labels[origin[0]:origin[0] + 6, origin[1]:origin[1] + 8, origin[2]:origin[2] + 8])


def test_background_draws_avoid_label_1(labels):
    hits = 0
    for k in range(50):
        _, lab = draw_patch(item_rng(1, k), patch=(4, 4, 4), start=(0, 0, 0), stop=labels.shape, labels=labels,
                            foreground=False)
        hits += bool((lab == 1).any())
    assert hits == 0


def test_empty_labels_cannot_give_foreground():
    index = ForegroundIndex.build(da.zeros((8, 8, 8), dtype=np.uint8, chunks=4))
    assert index.total == 0
    with pytest.raises(VolsegError, match="foreground"):
        index.foreground_voxel(np.random.default_rng(0), np.zeros((8, 8, 8), np.uint8))


def test_seeded_generators():
    assert item_rng(3, 1, 2).random() == item_rng(3, 1, 2).random()
    assert item_rng(3, 1, 2).random() != item_rng(3, 1, 3).random()
    assert item_rng(3, 1, 2).random() != item_rng(4, 1, 2).random()


@settings(max_examples=200, deadline=None)
@given(st.tuples(*[st.integers(1, 12)] * 3), st.tuples(*[st.integers(0, 30)] * 3), st.integers(0, 10**6))
def test_origin_containing_holds_the_voxel(patch, extra, seed):
    stop = tuple(p + e for p, e in zip(patch, extra))
    rng = np.random.default_rng(seed)
    voxel = tuple(int(rng.integers(0, s)) for s in stop)
    o = origin_containing(rng, voxel, (0, 0, 0), stop, patch)
    assert (o >= 0).all() and (o + patch <= np.array(stop)).all()
    assert (o <= voxel).all() and (np.array(voxel) < o + patch).all()
    u = uniform_origin(rng, (0, 0, 0), stop, patch)
    assert (u >= 0).all() and (u + patch <= np.array(stop)).all()


def test_read_box_pads_outside_and_direct_array(tmp_path):
    z = zarr.create_array(str(tmp_path / "a.zarr"), shape=(10, 10, 10), chunks=(4, 4, 4), dtype="u1")
    z[:] = np.arange(1000, dtype=np.uint8).reshape(10, 10, 10)
    arr = da.from_zarr(z)
    src = direct_array(arr)
    assert isinstance(src, zarr.Array)
    assert direct_array(arr + 1) is not None and not isinstance(direct_array(arr + 1), zarr.Array)
    box = read_box(src, (8, -2, 0), (12, 3, 10), pad="constant")
    assert box.shape == (4, 5, 10)
    assert np.array_equal(box[:2, 2:], z[8:10, 0:3, :]) and not box[2:].any() and not box[:, :2].any()
    assert np.array_equal(read_box(arr, (1, 2, 3), (4, 5, 6), pad="constant"), z[1:4, 2:5, 3:6])


def test_parse_fraction():
    assert parse_fraction(None) is None and parse_fraction("0.5") == 0.5
    for bad in (-0.1, 1.01, "x"):
        with pytest.raises(VolsegError, match="--foreground-fraction"):
            parse_fraction(bad)
