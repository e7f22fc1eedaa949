"""volseg.io.boxes.read_box: every border policy equals numpy.pad of the whole array, sliced,
for boxes partly (or wholly) outside the volume on every side; Zarr, Dask and a chunk reader."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

from volseg.io.boxes import PADS, read_box


@st.composite
def volume_and_box(draw):
    shape = tuple(draw(st.integers(1, 6)) for _ in range(3))
    start = [draw(st.integers(-9, n + 3)) for n in shape]
    stop = [a + draw(st.integers(0, 12)) for a in start]
    return shape, start, stop


def _expected(data, start, stop, pad, fill):
    """numpy.pad of the whole array, wide enough for the box, then sliced."""
    widths = [(max(0, -a), max(0, b - n)) for a, b, n in zip(start, stop, data.shape)]
    if pad == "constant":
        padded = np.pad(data, widths, mode="constant", constant_values=fill)
    else:
        padded = np.pad(data, widths, mode=pad)
    return padded[tuple(slice(a + w[0], b + w[0]) for a, b, w in zip(start, stop, widths))]


@settings(max_examples=300, deadline=None)
@given(case=volume_and_box(), pad=st.sampled_from(["constant", "edge", "reflect"]), fill=st.integers(-3, 3))
def test_every_policy_equals_numpy_pad_then_slice(case, pad, fill):
    shape, start, stop = case
    data = np.arange(np.prod(shape), dtype=np.int32).reshape(shape)
    got = read_box(data, start, stop, pad=pad, fill=fill)
    assert got.dtype == data.dtype
    np.testing.assert_array_equal(got, _expected(data, start, stop, pad, fill))


@settings(max_examples=60, deadline=None)
@given(case=volume_and_box())
def test_none_reads_inside_boxes_and_refuses_others(case):
    shape, start, stop = case
    data = np.arange(np.prod(shape), dtype=np.int16).reshape(shape)
    if all(a >= 0 and b <= n for a, b, n in zip(start, stop, shape)):
        np.testing.assert_array_equal(read_box(data, start, stop), data[tuple(map(slice, start, stop))])
    else:
        with pytest.raises(ValueError, match="reaches outside the array"):
            read_box(data, start, stop, pad="none")


def test_only_the_needed_voxels_are_read(tmp_path):
    data = np.random.default_rng(0).normal(size=(10, 12, 14)).astype(np.float32)
    store = zarr.create_array(str(tmp_path / "a.zarr"), shape=data.shape, chunks=(4, 4, 4), dtype="f4")
    store[:] = data
    calls = []

    def read(lo, hi):
        calls.append((tuple(lo), tuple(hi)))
        return data[tuple(map(slice, lo, hi))]

    box = read_box(store, (-2, 3, 10), (4, 9, 18), pad="constant", fill=-1, read=read)
    assert calls == [((0, 3, 10), (4, 9, 14))]  # the part inside only
    np.testing.assert_array_equal(box, _expected(data, (-2, 3, 10), (4, 9, 18), "constant", -1))
    inside = read_box(store, (1, 2, 3), (5, 6, 7))
    np.testing.assert_array_equal(inside, data[1:5, 2:6, 3:7])
    lazy = da.from_zarr(store)
    for pad in PADS[1:]:
        np.testing.assert_array_equal(read_box(lazy, (0, 0, 6), (10, 12, 20), pad=pad),
                                      _expected(data, (0, 0, 6), (10, 12, 20), pad, 0))


def test_a_box_wholly_outside_is_fill_without_a_read():
    data = np.ones((3, 3, 3), np.uint8)

    def read(lo, hi):
        raise AssertionError("nothing inside to read")

    np.testing.assert_array_equal(read_box(data, (5, 0, 0), (7, 2, 2), pad="constant", fill=4, read=read),
                                  np.full((2, 2, 2), 4, np.uint8))


def test_bad_arguments_name_the_value():
    data = np.zeros((2, 2, 2))
    with pytest.raises(ValueError, match="unknown pad 'mirror'; use one of none, constant, edge, reflect"):
        read_box(data, (0, 0, 0), (1, 1, 1), pad="mirror")
    with pytest.raises(ValueError, match="runs backwards"):
        read_box(data, (1, 0, 0), (0, 1, 1))
