"""Patch grids, output chunks, halos and parts: the geometry every stage shares.

Pure numpy, no I/O and no torch. Axis order is (z, y, x); all sizes and positions are in voxels.

Conventions
-----------
* A *patch grid* places patches of size ``patch`` every ``stride`` voxels along each axis,
  starting at 0, with the last patch flush against the far border, so every voxel is covered
  and every patch lies inside the volume. Along an axis of length ``L`` the grid has
  ``ceil((L - P) / S) + 1`` patches, the fewest that cover the axis with that stride.
* Padding: an axis shorter than the patch cannot hold a patch. :func:`padded_shape` gives the
  shape the volume is padded to (at the far end of each short axis, up to the patch size); the
  grid is then computed on the padded shape and outputs are cropped back to the original shape.
  Callers decide the pad values (patchify pads with zeros, predict mirrors the volume).
* *Chunks* tile the output volume (``chunks`` voxels per side, the last one shorter). One task
  per output chunk writes that chunk and nothing else.
* *Parts* (``--part I/N``) split the list of chunks into N contiguous, disjoint runs that
  together cover all chunks, for job arrays.
"""

from __future__ import annotations

import itertools
import math
from typing import Iterable, Sequence

import numpy as np

from volseg.errors import VolsegError

Triple = tuple[int, int, int]


def parse_size3(value, *, name: str = "--patch") -> Triple:
    """Parse a size given as an int, ``"64"``, ``"32x64x64"``, ``"32,64,64"`` or a sequence.

    Returns a (z, y, x) tuple of positive ints; anything else raises :class:`VolsegError`
    naming ``name``.
    """
    if isinstance(value, str):
        text = value.strip().lower().replace(",", "x")
        parts = [p for p in text.split("x") if p != ""]
        try:
            numbers = [int(p) for p in parts]
        except ValueError:
            raise VolsegError(name, f"expected N or DxHxW (e.g. 64 or 32x64x64), got {value!r}") from None
    elif isinstance(value, (int, np.integer)):
        numbers = [int(value)]
    else:
        try:
            numbers = [int(v) for v in value]
        except (TypeError, ValueError):
            raise VolsegError(name, f"expected N or DxHxW, got {value!r}") from None
    if len(numbers) == 1:
        numbers = numbers * 3
    if len(numbers) != 3:
        raise VolsegError(name, f"expected 1 or 3 sizes (z, y, x), got {len(numbers)} in {value!r}")
    if any(n <= 0 for n in numbers):
        raise VolsegError(name, f"sizes must be positive, got {value!r}")
    return tuple(numbers)  # type: ignore[return-value]


def stride_from_overlap(patch: Sequence[int], overlap: float) -> Triple:
    """The stride for a fractional ``overlap`` in [0, 1): ``max(1, round(P * (1 - overlap)))``."""
    overlap = float(overlap)
    if not 0.0 <= overlap < 1.0 or math.isnan(overlap):
        raise VolsegError("--overlap", f"must be in [0, 1), got {overlap}")
    return tuple(max(1, int(round(p * (1.0 - overlap)))) for p in patch)  # type: ignore[return-value]


def parse_stride(stride, patch: Sequence[int]) -> Triple:
    """Parse ``--stride`` (like :func:`parse_size3`); each side must be in [1, patch]."""
    if isinstance(stride, str) and stride.strip().lstrip("-").isdigit() and int(stride) <= 0:
        raise VolsegError("--stride", f"must be positive, got {stride!r}")
    if isinstance(stride, (int, np.integer)) and stride <= 0:
        raise VolsegError("--stride", f"must be positive, got {stride}")
    s = parse_size3(stride, name="--stride")
    if any(si > pi for si, pi in zip(s, patch)):
        raise VolsegError("--stride", f"{'x'.join(map(str, s))} is larger than the patch "
                          f"{'x'.join(map(str, patch))}: voxels would be skipped; use a stride <= patch")
    return s


def padded_shape(shape: Sequence[int], patch: Sequence[int]) -> Triple:
    """The shape a volume is padded to so that every axis holds at least one patch."""
    return tuple(max(int(s), int(p)) for s, p in zip(shape, patch))  # type: ignore[return-value]


def axis_origins(length: int, patch: int, stride: int) -> np.ndarray:
    """Patch starts along one axis: 0, S, 2S, ... and a last one flush at ``length - patch``.

    ``length`` must be >= ``patch`` (pad first, see :func:`padded_shape`).
    """
    if length < patch:
        raise VolsegError("--patch", f"patch {patch} is larger than the axis length {length}; "
                          "pad the volume or use a smaller patch")
    if stride <= 0:
        raise VolsegError("--stride", f"must be positive, got {stride}")
    count = math.ceil((length - patch) / stride) + 1
    starts = np.arange(count, dtype=np.int64) * stride
    starts[-1] = length - patch
    return starts


def grid_origins(shape: Sequence[int], patch: Sequence[int], stride: Sequence[int]) -> np.ndarray:
    """All patch corners of the grid over ``shape`` as an (N, 3) int64 array, C order (z slowest).

    ``shape`` must be at least ``patch`` on every axis (see :func:`padded_shape`).
    """
    axes = [axis_origins(int(s), int(p), int(st)) for s, p, st in zip(shape, patch, stride)]
    mesh = np.meshgrid(*axes, indexing="ij")
    return np.stack([m.ravel() for m in mesh], axis=1).astype(np.int64)


def grid_counts(shape: Sequence[int], patch: Sequence[int], stride: Sequence[int]) -> Triple:
    """Number of patches along each axis: ``ceil((L - P) / S) + 1``."""
    return tuple(math.ceil((int(s) - int(p)) / int(st)) + 1
                 for s, p, st in zip(shape, patch, stride))  # type: ignore[return-value]


def chunk_counts(shape: Sequence[int], chunks: Sequence[int]) -> Triple:
    """Number of chunks along each axis."""
    return tuple(math.ceil(int(s) / int(c)) for s, c in zip(shape, chunks))  # type: ignore[return-value]


def chunk_indices(shape: Sequence[int], chunks: Sequence[int]) -> list[Triple]:
    """Every chunk index (iz, iy, ix) of a volume, in C order."""
    return list(itertools.product(*(range(n) for n in chunk_counts(shape, chunks))))


def chunk_bounds(index: Sequence[int], chunks: Sequence[int], shape: Sequence[int]) -> tuple[Triple, Triple]:
    """(start, stop) of chunk ``index``; the last chunk along an axis stops at the border."""
    start = tuple(int(i) * int(c) for i, c in zip(index, chunks))
    stop = tuple(min(s + int(c), int(n)) for s, c, n in zip(start, chunks, shape))
    return start, stop  # type: ignore[return-value]


def axis_cuts(n: int, parts: int) -> list[tuple[int, int]]:
    """Split ``[0, n)`` into ``parts`` contiguous (start, stop) pieces, the first ``n % parts``
    one voxel longer (the leaderboard's tiles); at most ``n`` pieces, at least one.
    """
    n = int(n)
    parts = max(1, min(int(parts), n))
    base, extra = divmod(n, parts)
    cuts, start = [], 0
    for i in range(parts):
        stop = start + base + (1 if i < extra else 0)
        cuts.append((start, stop))
        start = stop
    return cuts


def as_slices(start: Sequence[int], stop: Sequence[int]) -> tuple[slice, slice, slice]:
    """(start, stop) corners as a tuple of slices."""
    return tuple(slice(int(a), int(b)) for a, b in zip(start, stop))  # type: ignore[return-value]


def with_halo(start: Sequence[int], stop: Sequence[int], halo: Sequence[int] | int,
              shape: Sequence[int]) -> tuple[Triple, Triple]:
    """A region grown by ``halo`` voxels on each side, clipped to the volume."""
    h = (halo,) * 3 if isinstance(halo, (int, np.integer)) else tuple(halo)
    lo = tuple(max(0, int(a) - int(hh)) for a, hh in zip(start, h))
    hi = tuple(min(int(n), int(b) + int(hh)) for b, hh, n in zip(stop, h, shape))
    return lo, hi  # type: ignore[return-value]


def patches_overlapping(origins: np.ndarray, patch: Sequence[int],
                        start: Sequence[int], stop: Sequence[int]) -> np.ndarray:
    """Indices of the patches that share at least one voxel with the box [start, stop)."""
    origins = np.asarray(origins, dtype=np.int64).reshape(-1, 3)
    p = np.asarray(patch, dtype=np.int64)
    lo = np.asarray(start, dtype=np.int64)
    hi = np.asarray(stop, dtype=np.int64)
    hit = np.all((origins < hi) & (origins + p > lo), axis=1)
    return np.nonzero(hit)[0]


def patch_owners(origins: np.ndarray, patch: Sequence[int], chunks: Sequence[int]) -> np.ndarray:
    """The chunk index (N, 3) that holds each patch's centre voxel ``origin + patch // 2``.

    Each patch has exactly one owner, so work grouped by owner computes every patch once.
    """
    origins = np.asarray(origins, dtype=np.int64).reshape(-1, 3)
    centre = origins + np.asarray(patch, dtype=np.int64) // 2
    return centre // np.asarray(chunks, dtype=np.int64)


def split_parts(items: Sequence, n_parts: int) -> list[list]:
    """Split ``items`` into ``n_parts`` contiguous runs, disjoint and covering all items.

    Sizes differ by at most one; runs may be empty when there are fewer items than parts.
    """
    if n_parts < 1:
        raise VolsegError("--part", f"the number of parts must be >= 1, got {n_parts}")
    items = list(items)
    bounds = [round(k * len(items) / n_parts) for k in range(n_parts + 1)]
    return [items[bounds[k]:bounds[k + 1]] for k in range(n_parts)]


def select_part(items: Iterable, part: tuple[int, int] | None) -> list:
    """The items of part ``(i, n)`` (0-based i, from :func:`volseg.parallel.parse_part`); all if None."""
    items = list(items)
    if part is None:
        return items
    i, n = part
    return split_parts(items, n)[i]
