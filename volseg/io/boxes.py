"""Read a box of a 3D volume into numpy, with a border policy where it reaches outside.

Every reader of a (z, y, x) box in volseg goes through :func:`read_box`: training patches and
patchify (``pad="constant"``: zeros outside), predict's patch groups (``pad="reflect"``: a
volume smaller than the patch mirrored at its far end, through the chunk cache of
:mod:`volseg.inference.cache`), evaluate and postprocess (``pad="none"``: blocks inside the
volume). Sizes and coordinates in voxels. numpy only (a Dask array is computed synchronously).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

PADS = ("none", "constant", "edge", "reflect")


def read_region(array, start: Sequence[int], stop: Sequence[int]) -> np.ndarray:
    """``array[start:stop]`` (a box inside a Dask/Zarr/numpy array) as numpy; a Dask array is
    computed with the synchronous scheduler (the caller is usually a task already)."""
    region = array[tuple(slice(int(a), int(b)) for a, b in zip(start, stop))]
    if hasattr(region, "compute"):
        region = region.compute(scheduler="synchronous")
    return np.asarray(region)


def _source_index(index: np.ndarray, n: int, pad: str) -> np.ndarray:
    """Where each (possibly outside) index along an axis of length ``n`` reads from, as
    ``numpy.pad(mode=pad)`` of the whole axis defines it (-1: outside, ``constant``)."""
    if pad == "edge":
        return np.clip(index, 0, n - 1)
    if pad == "reflect":
        if n == 1:
            return np.zeros_like(index)
        period = 2 * (n - 1)
        folded = np.mod(index, period)
        return np.where(folded < n, folded, period - folded)
    return np.where((index >= 0) & (index < n), index, -1)


def read_box(array, start: Sequence[int], stop: Sequence[int], *, pad: str = "none", fill=0,
             read: Callable[[Sequence[int], Sequence[int]], np.ndarray] | None = None) -> np.ndarray:
    """The box ``[start, stop)`` of a 3D ``array`` as numpy, padded by ``pad`` where it reaches
    outside the array: equal to ``numpy.pad(array, ..., mode=pad)`` sliced at the box.

    Parameters
    ----------
    array : array-like
        (z, y, x) Dask, Zarr or numpy array; only the part of the box inside it is read (for
        ``reflect`` and ``edge``: the voxels the outside part mirrors or repeats too).
    start, stop : sequence of int
        The box corners (z, y, x), voxels; may lie outside the array on any side, except with
        ``pad="none"``.
    pad : {"none", "constant", "edge", "reflect"}
        ``none``: the box must lie inside the array; ``constant``: ``fill`` outside; ``edge``:
        the nearest border voxel; ``reflect``: mirrored without repeating the border voxel
        (``numpy.pad(mode="reflect")``; an axis of one voxel repeats it).
    fill : scalar
        The value outside the array for ``pad="constant"``.
    read : callable, optional
        ``read(lo, hi) -> numpy array`` of an in-volume box (a chunk cache); default
        :func:`read_region`.

    Returns
    -------
    numpy.ndarray
        Shape ``stop - start``, the array's dtype. A box inside the array is returned as read
        (no copy).

    Raises
    ------
    ValueError
        ``pad`` is unknown, the box is empty backwards, the array has a zero-length axis with
        ``edge``/``reflect``, or it reaches outside the array with ``pad="none"``.

    Examples
    --------
    >>> a = np.arange(5).reshape(1, 1, 5)
    >>> read_box(a, (0, 0, -2), (1, 1, 7), pad="reflect")[0, 0].tolist()
    [2, 1, 0, 1, 2, 3, 4, 3, 2]
    >>> read_box(a, (0, 0, 3), (1, 1, 7), pad="constant", fill=9)[0, 0].tolist()
    [3, 4, 9, 9]
    >>> read_box(a, (0, 0, -1), (1, 1, 2), pad="edge")[0, 0].tolist()
    [0, 0, 1]
    """
    if pad not in PADS:
        raise ValueError(f"unknown pad {pad!r}; use one of {', '.join(PADS)}")
    read = read or (lambda lo, hi: read_region(array, lo, hi))
    shape = tuple(int(n) for n in array.shape)
    start, stop = tuple(int(a) for a in start), tuple(int(b) for b in stop)
    want = tuple(b - a for a, b in zip(start, stop))
    if any(w < 0 for w in want):
        raise ValueError(f"box [{start}, {stop}) runs backwards")
    if all(a >= 0 and b <= n for a, b, n in zip(start, stop, shape)):
        return read(start, stop)
    if pad == "none":
        raise ValueError(f"box [{start}, {stop}) reaches outside the array of shape {shape}")
    if 0 in want:
        return np.full(want, fill, dtype=array.dtype)
    if pad in ("edge", "reflect") and 0 in shape:
        raise ValueError(f"cannot pad an empty array of shape {shape} with {pad!r}")
    maps = [_source_index(np.arange(a, b), n, pad) for a, b, n in zip(start, stop, shape)]
    inside = [m[m >= 0] for m in maps]
    lo = [int(m.min()) if m.size else 0 for m in inside]
    hi = [int(m.max()) + 1 if m.size else 0 for m in inside]
    part = read(lo, hi) if all(m.size for m in inside) else np.empty((0, 0, 0), array.dtype)
    if pad == "constant":
        out = np.full(want, fill, dtype=part.dtype)
        if part.size:
            dst = tuple(slice(a - s, a - s + (b - a)) for a, b, s in zip(lo, hi, start))
            out[dst] = part
        return out
    return part[np.ix_(*(m - a for m, a in zip(maps, lo)))]
