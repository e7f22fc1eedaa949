"""``--fill-sheet-holes N``: large holes through a sheet, filled along the sheet's height map.

The first place of the Vesuvius surface-detection challenge filled the large holes of its
predicted sheets by interpolating the sheet's position over each hole. This is that repair,
made local so that chunks repaired with a halo equal the repair of the whole volume bitwise.

For each axis ``a`` (the sheet's normal direction, taken in turn as z, y and x) and each *slab*
of ``D`` voxels along ``a`` (every start position, so nothing depends on a grid; ``D`` from
:func:`depths`), a column (one (u, v) position of the plane across ``a``) is *empty* when it
holds no foreground in the slab. A *hole* is an 8-connected set of empty columns of at most
``N`` columns and at most :func:`extent` columns across along u and v whose rim (the 8
neighbours of its columns) passes three checks:

* every rim column holds foreground, at least one voxel away from both slab faces (the slab
  does not cut the sheet); the column's first and last voxel give the sheet's faces there and
  their mean its height map;
* the spans (first to last voxel) of neighbouring rim columns overlap or touch along ``a``
  (no step between two sheets at different heights);
* the foreground of the columns within 2 of the hole, between the rim's lowest and highest
  voxel (and one more each side), is one 26-connected piece: one sheet. Two wraps crossing the
  rim columns are two pieces there (unless already joined right at the hole), so the gap
  between them is never filled; a rim column holding two runs of one sheet (the rounded edge
  of a hole that thins the sheet from inside) passes.

Each hole column gets a run from the harmonic interpolation (the discrete Laplace equation,
:func:`harmonic`) of the rim's first and last voxels, rounded: a plane's hole gets the plane's
position back, a curved sheet's the smoothest surface through its rim; each rim column's inner
gap is filled too (so the rounded edge leaves no cavity).

Why gaps between wraps stay open: every filled voxel lies between the rim's lowest and highest
voxel, in a hole column (empty in the slab) or a rim column, so every foreground voxel it
touches lies within 2 columns of the hole in those rows: the one sheet of the last check.
Everything is decided on the input mask and the fills of all holes, slabs and axes are added
together, so the result at a voxel depends on the mask within :func:`reach` voxels only.
Axis order (z, y, x); sizes in voxels.
"""

from __future__ import annotations

import math

import numpy as np

from volseg.errors import VolsegError

#: Largest ``--fill-sheet-holes`` (a hole of 100 x 100 voxels).
MAX_AREA = 10_000
#: Slab depths tried, voxels along the normal: a hole is found when a slab holds its rim's runs
#: (with a voxel to spare at each face) and no other sheet: thin sheets next to close wraps need
#: a thin slab, tilted sheets a deep one.
_DEPTHS = (6, 9, 13, 19, 28, 40, 58, 84, 122, 177)
_PLANE8 = np.zeros((3, 3, 3), bool)
_PLANE8[1] = True                                   # 8-connected within a slab, never across slabs


def extent(max_area: int) -> int:
    """Largest side (columns) of a hole's bounding box along u and v: ``ceil(2 sqrt(N))``, a
    hole of ``N`` columns up to 4 times longer than wide."""
    return math.ceil(2 * math.sqrt(max_area))


def depths(max_area: int) -> tuple[int, ...]:
    """Slab depths used for holes of at most ``max_area`` columns: 6 voxels and up, the deepest
    at most :func:`extent` + 6 (a sheet tilted by 45 degrees over the widest hole)."""
    return tuple(d for d in _DEPTHS if d == _DEPTHS[0] or d <= extent(max_area) + 6)


def reach(max_area: int) -> int:
    """Voxels of context the repair reads around a voxel, along every axis (0: off)."""
    if max_area <= 0:
        return 0
    return max(depths(max_area)[-1] - 1, extent(max_area) + 2)


def parse_max_area(value, default: int = 0) -> int:
    """``--fill-sheet-holes N`` -> N, a whole number of voxels (hole area) in 0..:data:`MAX_AREA`."""
    if value is None:
        return default
    form = "the largest hole to fill, in voxels of hole area, a whole number >= 0 such as 25 (0 = off)"
    try:
        area = float(value)
    except (TypeError, ValueError):
        raise VolsegError("--fill-sheet-holes", f"expected {form}, got {value!r}") from None
    if not (math.isfinite(area) and area >= 0 and area == int(area)):
        raise VolsegError("--fill-sheet-holes", f"expected {form}, got {value!r}")
    if area > MAX_AREA:
        raise VolsegError("--fill-sheet-holes", f"{value!r} is too large: at most {MAX_AREA} (a hole of "
                          "100 x 100 voxels); larger openings are gaps, not holes")
    return int(area)


def check_chunks(max_area: int, shape, chunks) -> None:
    """Refuse ``--fill-sheet-holes N`` whose :func:`reach` exceeds a chunk side (along an axis
    with more than one chunk): every chunk would read beyond its neighbours."""
    r = reach(max_area)
    for axis, (s, c) in enumerate(zip(shape, chunks)):
        if s > c and r > c:
            largest = max((n for n in range(1, c * c + 1) if reach(n) <= c), default=0)
            fix = f"use --chunks {r} or more" + (f", or --fill-sheet-holes {largest} or less" if largest else "")
            raise VolsegError("--fill-sheet-holes", f"{max_area} reads {r} voxels around every chunk, more than "
                              f"the {c}-voxel chunks along {'zyx'[axis]}; {fix}")


def fill_sheet_holes(mask: np.ndarray, max_area: int) -> np.ndarray:
    """The mask with every hole of at most ``max_area`` columns through a sheet filled along
    the sheet (see the module docstring); exact :func:`reach` voxels or more inside the array.

    Parameters
    ----------
    mask : ndarray of bool, shape (z, y, x)
    max_area : int
        Largest hole filled, in columns (voxels of hole area across the sheet); 0: none.

    Returns
    -------
    ndarray of bool, shape (z, y, x)
        ``mask`` with the filled runs added (a new array; ``mask`` itself when off).
    """
    mask = np.asarray(mask, dtype=bool)
    if max_area <= 0 or min(mask.shape) < 3:
        return mask
    out = mask.copy()
    for axis in range(3):
        _fill_axis(np.moveaxis(mask, axis, 0), np.moveaxis(out, axis, 0), max_area)
    return out


def _fill_axis(m: np.ndarray, out: np.ndarray, max_area: int) -> None:
    """Fill the holes of sheets whose normal is along axis 0 of ``m`` into ``out`` (views)."""
    from scipy import ndimage

    n = m.shape[0]
    kind = np.int16 if n < 2**15 - 1 else np.int32
    z = np.arange(n, dtype=kind)[:, None, None]
    nxt = np.minimum.accumulate(np.where(m, z, kind(n))[::-1], axis=0)[::-1]  # first voxel at or after z
    prv = np.maximum.accumulate(np.where(m, z, kind(-1)), axis=0)             # last voxel at or before z
    rise = m.copy()
    rise[1:] &= ~m[:-1]
    cum = np.cumsum(rise, axis=0, dtype=kind)                                 # runs begun up to z
    del rise
    seen: set = set()
    group = max(1, 2**21 // (m.shape[1] * m.shape[2]))
    for depth in depths(max_area):
        for g0 in range(0, n - depth + 1, group):
            starts = np.arange(g0, min(n - depth + 1, g0 + group))
            s3 = starts[:, None, None]
            runs = cum[starts + depth - 1] - cum[starts] + m[starts]
            empty = runs == 0
            inside = (runs >= 1) & (nxt[starts] - s3 >= 1) & (prv[starts + depth - 1] - s3 <= depth - 2)
            labels, count = ndimage.label(empty, structure=_PLANE8)
            if count == 0:
                continue
            reject = np.bincount(labels.ravel(), minlength=count + 1) > max_area
            for edge in (labels[:, :2], labels[:, -2:], labels[:, :, :2], labels[:, :, -2:]):
                reject[edge] = True                           # may go on beyond the array
            near = ndimage.binary_dilation(~empty & ~inside, structure=_PLANE8)
            reject[labels[near]] = True                       # a rim column cut by a slab face
            reject[0] = True
            if reject.all():
                continue
            objects = ndimage.find_objects(labels)
            for label in np.flatnonzero(~reject):
                zs, ys, xs = objects[label - 1]
                if ys.stop - ys.start > extent(max_area) or xs.stop - xs.start > extent(max_area):
                    continue
                box = (slice(ys.start - 2, ys.stop + 2), slice(xs.start - 2, xs.stop + 2))
                hole = labels[(zs.start, *box)] == label
                start = int(starts[zs.start])
                _fill_hole(m, out, hole, box, nxt[start][box], prv[start + depth - 1][box], seen)


def _fill_hole(m, out, hole, box, first, last, seen: set) -> None:
    """Check the rim of one hole (``hole`` in the columns ``box``, 2 columns around it;
    ``first``/``last``: each column's first and last foreground voxel in the slab) and fill it."""
    from scipy import ndimage

    rim = _grown(hole, 1) & ~hole
    first, last = first.astype(np.int64), last.astype(np.int64)
    key = (box[0].start, box[1].start, hole.shape, hole.tobytes(), first[rim].tobytes(), last[rim].tobytes())
    if key in seen:                                   # the same hole and rim in another slab
        return
    seen.add(key)
    ring = _grown(hole, 2) & ~hole
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        a = (slice(0, rim.shape[0] - dy), slice(max(0, -dx), rim.shape[1] - max(0, dx)))
        b = (slice(dy, None), slice(max(0, dx), rim.shape[1] + min(0, dx)))
        both = rim[a] & rim[b]
        apart = (first[a] > last[b] + 1) | (first[b] > last[a] + 1)
        if (apart & both).any():
            return                                    # a step: neighbouring spans do not meet
    lo, hi = int(first[rim].min()), int(last[rim].max())
    near = m[(slice(lo - 1, hi + 2), *box)] & ring   # every voxel next to a filled one, and more
    if ndimage.label(near, structure=np.ones((3, 3, 3), bool))[1] != 1:
        return                                        # not one sheet within 2 columns of the hole
    # heights relative to the rim's lowest voxel, rounded half up: the same numbers wherever the
    # hole lies in the array (a chunk's box or the whole volume), so the same voxels are filled
    top, bottom = (lo + np.floor(v + 0.5) for v in harmonic(hole, first - lo, last - lo))
    heights = np.arange(lo, hi + 1)[:, None]
    target = out[(slice(lo, hi + 1), *box)]
    target[:, hole] |= (heights >= top) & (heights <= bottom)
    target[:, rim] |= (heights >= first[rim]) & (heights <= last[rim])   # a rim column's inner gap


def _grown(mask: np.ndarray, r: int) -> np.ndarray:
    """``mask`` dilated by a (2r + 1) square, background outside (a small 2D array)."""
    from scipy import ndimage

    return ndimage.maximum_filter(mask, size=2 * r + 1, mode="constant", cval=False)


def harmonic(hole: np.ndarray, *values: np.ndarray) -> list[np.ndarray]:
    """The discrete harmonic interpolation of each of ``values`` over the pixels of ``hole``.

    Every hole pixel takes the mean of its 4 neighbours; the neighbours outside the hole keep
    their value (``hole`` must not touch the array's border). A linear function (a plane's
    height) is reproduced exactly, and every value lies between the rim's minimum and maximum.

    Returns
    -------
    list of ndarray of float64
        One array per value, the interpolated values of the hole pixels (``hole``'s order).
    """
    from scipy import sparse
    from scipy.sparse.linalg import spsolve

    ys, xs = np.nonzero(hole)
    count = ys.size
    ids = np.full(hole.shape, -1, np.int64)
    ids[ys, xs] = np.arange(count)
    rows, cols = [np.arange(count)], [np.arange(count)]
    data = [np.full(count, 4.0)]
    rhs = np.zeros((count, len(values)))
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        ny, nx = ys + dy, xs + dx
        inside = hole[ny, nx]
        rows.append(np.flatnonzero(inside))
        cols.append(ids[ny[inside], nx[inside]])
        data.append(np.full(int(inside.sum()), -1.0))
        for k, v in enumerate(values):
            rhs[~inside, k] += v[ny[~inside], nx[~inside]]
    matrix = sparse.csc_matrix((np.concatenate(data), (np.concatenate(rows), np.concatenate(cols))),
                               shape=(count, count))
    solved = np.asarray(spsolve(matrix, rhs)).reshape(count, len(values))
    return [solved[:, k] for k in range(len(values))]
