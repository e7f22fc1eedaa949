"""Property tests for the shared patch/chunk/part geometry."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from volseg import geometry as g
from volseg.errors import VolsegError

sides = st.integers(1, 40)


@st.composite
def grid_case(draw):
    patch = tuple(draw(st.integers(1, 16)) for _ in range(3))
    shape = tuple(p + draw(st.integers(0, 30)) for p in patch)
    stride = tuple(draw(st.integers(1, p)) for p in patch)
    return shape, patch, stride


@settings(max_examples=200, deadline=None)
@given(grid_case())
def test_grid_covers_every_voxel_in_bounds_with_minimal_count(case):
    shape, patch, stride = case
    origins = g.grid_origins(shape, patch, stride)
    assert origins.dtype == np.int64 and origins.shape[1] == 3
    # in bounds
    assert (origins >= 0).all()
    assert (origins + np.asarray(patch) <= np.asarray(shape)).all()
    # every voxel covered
    cover = np.zeros(shape, dtype=bool)
    for o in origins:
        cover[o[0]:o[0] + patch[0], o[1]:o[1] + patch[1], o[2]:o[2] + patch[2]] = True
    assert cover.all()
    # minimal count per axis = ceil((L - P) / S) + 1
    counts = tuple(math.ceil((l - p) / s) + 1 for l, p, s in zip(shape, patch, stride))
    assert g.grid_counts(shape, patch, stride) == counts
    assert len(origins) == int(np.prod(counts))
    assert len({tuple(o) for o in origins}) == len(origins)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 200), st.integers(1, 50), st.integers(1, 50))
def test_axis_origins_last_patch_flush(length, patch, stride):
    if length < patch:
        with pytest.raises(VolsegError):
            g.axis_origins(length, patch, stride)
        return
    starts = g.axis_origins(length, patch, min(stride, patch))
    assert starts[0] == 0 and starts[-1] == length - patch
    assert (np.diff(starts) > 0).all()
    assert (np.diff(starts) <= min(stride, patch)).all()


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 999), max_size=60), st.integers(1, 12))
def test_parts_disjoint_and_complete(items, n):
    parts = g.split_parts(items, n)
    assert len(parts) == n
    assert [x for p in parts for x in p] == items
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    assert g.select_part(items, None) == items
    assert [x for i in range(n) for x in g.select_part(items, (i, n))] == items


@settings(max_examples=60, deadline=None)
@given(grid_case(), st.tuples(st.integers(6, 20), st.integers(6, 20), st.integers(6, 20)))
def test_chunks_tile_and_overlapping_patches_are_exact(case, chunks):
    shape, patch, stride = case
    origins = g.grid_origins(shape, patch, stride)
    seen = np.zeros(shape, dtype=np.int32)
    owners = g.patch_owners(origins, patch, chunks)
    owned = 0
    for idx in g.chunk_indices(shape, chunks):
        start, stop = g.chunk_bounds(idx, chunks, shape)
        seen[g.as_slices(start, stop)] += 1
        hits = set(g.patches_overlapping(origins, patch, start, stop).tolist())
        # brute force, axis by axis: the patch starts whose voxel range meets the chunk's range
        meets = [{o for o in set(origins[:, a].tolist())
                  if set(range(o, o + patch[a])) & set(range(start[a], stop[a]))} for a in range(3)]
        brute = {k for k, o in enumerate(origins.tolist()) if all(o[a] in meets[a] for a in range(3))}
        assert hits == brute
        owned += int(np.all(owners == np.asarray(idx), axis=1).sum())
        # a patch's owner chunk always overlaps it
        for k in np.nonzero(np.all(owners == np.asarray(idx), axis=1))[0]:
            assert k in hits
    assert (seen == 1).all()
    assert owned == len(origins)


def test_with_halo_clips_to_volume():
    lo, hi = g.with_halo((0, 10, 20), (8, 20, 30), 4, (10, 24, 32))
    assert lo == (0, 6, 16) and hi == (10, 24, 32)


def test_padded_shape_for_small_volume():
    assert g.padded_shape((10, 64, 70), (32, 32, 32)) == (32, 64, 70)


@pytest.mark.parametrize("text,expected", [
    ("64", (64, 64, 64)), (32, (32, 32, 32)), ("16x32x48", (16, 32, 48)),
    ("16,32,48", (16, 32, 48)), ([8, 8, 4], (8, 8, 4)),
])
def test_parse_size3(text, expected):
    assert g.parse_size3(text) == expected


@pytest.mark.parametrize("bad", ["0", "-4", "ax4", "4x4", "4x4x4x4", 0])
def test_parse_size3_rejects(bad):
    with pytest.raises(VolsegError, match="--patch"):
        g.parse_size3(bad)


@pytest.mark.parametrize("bad", ["0", "-1", 0, -3, "40"])
def test_parse_stride_rejects(bad):
    with pytest.raises(VolsegError, match="--stride"):
        g.parse_stride(bad, (32, 32, 32))


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan")])
def test_overlap_rejects(bad):
    with pytest.raises(VolsegError, match="--overlap"):
        g.stride_from_overlap((32, 32, 32), bad)


def test_overlap_half():
    assert g.stride_from_overlap((64, 32, 5), 0.5) == (32, 16, 2)
    assert g.stride_from_overlap((64, 64, 64), 0.0) == (64, 64, 64)
