"""Non-finite voxels (NaN, +Inf, -Inf): found while data is read, never spread silently.

Policy (README, "Non-finite voxels and divergence"): a float volume holding a non-finite
voxel is refused with one line naming the count and the first position (z, y, x), unless the
user passes an explicit replacement value (``--nan-value V``), in which case every non-finite
voxel reads as ``V`` and the command warns once with the count. Integer volumes cannot hold
non-finite values and are never checked. The check runs block by block as the data is read
(one ``numpy.isfinite`` per block), so it costs no extra pass over the input.
"""

from __future__ import annotations

import math
import os
import sys

import numpy as np

from volseg.errors import VolsegError

HINT = "clean the input or pass --nan-value V"


def parse_nan_value(value) -> float | None:
    """``--nan-value``: None (refuse non-finite voxels) or a finite replacement value."""
    return None if value is None else parse_finite(value, "--nan-value", example="--nan-value 0")


def parse_finite(value, option: str, *, example: str | None = None) -> float:
    """A float option that must be finite (``--threshold nan`` is refused); ``example`` ends the error."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise VolsegError(option, f"expected a number, got {value!r}") from None
    if not math.isfinite(number):
        raise VolsegError(option, f"must be a finite number, got {value!r}" + (f"; e.g. {example}" if example else ""))
    return number


def parse_whole(value, option: str, *, low: int, fix: str) -> int:
    """A whole-number option ``>= low`` (``--batch-size 0`` or ``--seed 1.5`` are refused); ``fix`` ends the error."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise VolsegError(option, f"expected a whole number, got {value!r}") from None
    if number != float(value) or number < low:
        raise VolsegError(option, f"must be a whole number >= {low}, got {value!r}; {fix}")
    return number


def describe(values: np.ndarray, *, offset=(0, 0, 0)) -> str | None:
    """None if ``values`` is all finite, else ``N non-finite voxel(s) (kinds) at (z, y, x)``.

    ``offset`` is the (z, y, x) position of ``values[0, 0, 0]`` in the whole volume; the position
    reported is the first non-finite voxel in C order.
    """
    if values.dtype.kind not in "fc":
        return None
    bad = ~np.isfinite(values)
    if not bad.any():
        return None
    count = int(np.count_nonzero(bad))
    where = [int(f) for f in np.unravel_index(int(np.argmax(bad.ravel())), values.shape)]
    for axis, o in enumerate(offset[-values.ndim:]):
        where[values.ndim - min(len(offset), values.ndim) + axis] += int(o)
    bad_values = values[bad]
    kinds = [name for name, hit in (("NaN", np.isnan(bad_values).any()),
                                    ("+Inf", (bad_values == np.inf).any()),
                                    ("-Inf", (bad_values == -np.inf).any())) if hit]
    plural = "voxel" if count == 1 else "voxels"
    at = ", ".join(map(str, where))
    return f"{count} non-finite {plural} ({', '.join(kinds)}) at ({at})"


def check_array(values: np.ndarray, path, *, offset=(0, 0, 0), nan_value: float | None = None,
                hint: str = HINT, whole: bool = True) -> np.ndarray:
    """Return ``values`` unchanged if finite; replace non-finite voxels by ``nan_value``; else raise.

    ``whole`` False adds that the count is for the block read (the volume may hold more).
    """
    found = describe(values, offset=offset)
    if found is None:
        return values
    if nan_value is not None:
        return np.where(np.isfinite(values), values, np.asarray(nan_value, dtype=values.dtype))
    scope = "" if whole else f" in the block starting at ({', '.join(map(str, offset))})"
    raise VolsegError(path, f"{found}{scope}; {hint}")


def _check_block(block, *, path, nan_value, shape, block_info=None):
    loc = block_info[0]["array-location"] if block_info else [(0, n) for n in block.shape]
    offset = tuple(int(a) for a, _ in loc)
    whole = tuple(block.shape) == tuple(shape)
    return check_array(np.asarray(block), path, offset=offset, nan_value=nan_value, whole=whole)


def guard(arr, path, *, nan_value: float | None = None):
    """A lazy (Dask) volume whose float blocks are checked as they are read (see module docstring).

    Integer and boolean arrays are returned unchanged. The returned array has the same shape,
    dtype and chunks; reading a block with a non-finite voxel raises :class:`VolsegError` naming
    ``path``, the count in that block and the first position, unless ``nan_value`` is given.
    """
    if np.dtype(arr.dtype).kind not in "fc":
        return arr
    return arr.map_blocks(_check_block, path=os.fspath(path), nan_value=nan_value,
                          shape=tuple(arr.shape), dtype=arr.dtype, meta=np.empty((0,) * arr.ndim, arr.dtype))


def count_nonfinite(arr) -> int:
    """The number of non-finite voxels of a (Dask or numpy) float volume; 0 for integer ones."""
    if np.dtype(arr.dtype).kind not in "fc":
        return 0
    total = (~_isfinite(arr)).sum()
    return int(total.compute() if hasattr(total, "compute") else total)


def _isfinite(arr):
    if hasattr(arr, "dask"):
        import dask.array as da

        return da.isfinite(arr)
    return np.isfinite(arr)


def warn_replaced(path, count: int, nan_value: float) -> None:
    """Say once, on stderr, how many non-finite voxels of ``path`` read as ``nan_value``."""
    if count:
        plural = "voxel" if count == 1 else "voxels"
        print(f"warning: {os.fspath(path)}: {count} non-finite {plural} replaced by {nan_value:g} "
              "(--nan-value)", file=sys.stderr)
