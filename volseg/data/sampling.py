"""Seeded, label-balanced random patch positions, without loading the whole label volume.

A :class:`ForegroundIndex` holds the number of foreground voxels (label 1) in every block of a
region of the label volume, counted once with Dask, block by block. A foreground draw picks a
block with probability proportional to its count, reads only that block, picks one of its
foreground voxels uniformly and places the patch so that it contains that voxel (at a uniform
offset). A background draw places the patch uniformly in the region and, when labels are given,
rejects patches that contain label 1 (a few tries), so the share of patches holding foreground
matches the requested fraction on sparse labels.

Axis order (z, y, x); positions and sizes in voxels; a region is ``[start, stop)``.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import numpy as np

from volseg.errors import VolsegError
from volseg.io.boxes import read_box

FOREGROUND = 1
COUNT_BLOCK = 128        # side of the counting blocks when the storage chunks are larger
_MAX_NATIVE_BLOCK = 256  # storage chunks up to this side are counted as they are
_CACHE_BLOCKS = 8        # foreground coordinates of this many blocks are kept per process


def parse_fraction(value, *, name: str = "--foreground-fraction") -> float | None:
    """Validate a fraction in [0, 1] (None stays None)."""
    if value is None:
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise VolsegError(name, f"expected a number in [0, 1], got {value!r}") from None
    if not 0.0 <= f <= 1.0:
        raise VolsegError(name, f"must be in [0, 1], got {value}")
    return f


def item_rng(seed: int, *keys: int) -> np.random.Generator:
    """A generator determined by ``seed`` and integer keys (e.g. epoch and item index)."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, *(int(k) & 0xFFFFFFFFFFFF for k in keys)])


def direct_array(array):
    """The sliceable object a Dask array wraps (a Zarr array or a volseg file source), else ``array``.

    Slicing a Dask array costs a graph build per read, which grows with the number of chunks
    (about 0.7 s per patch on a 2048^3 volume of 32^3 chunks); patch readers that read one small
    box at a time go straight to the source when the array is a plain ``from_array``/``from_zarr``
    wrapper (two graph layers: ``original-<name>`` holding the source and the chunk layer).
    """
    graph = getattr(array, "__dask_graph__", None)
    if graph is None:
        return array
    layers = getattr(graph(), "layers", {})
    key = f"original-{array.name}"
    if len(layers) != 2 or key not in layers or len(layers[key]) != 1:
        return array
    source = next(iter(layers[key].values()))
    same_dtype = np.dtype(getattr(source, "dtype", None)) == array.dtype
    if tuple(getattr(source, "shape", ())) != tuple(array.shape) or not same_dtype:
        return array
    return source


def uniform_origin(rng: np.random.Generator, start: Sequence[int], stop: Sequence[int],
                   patch: Sequence[int]) -> np.ndarray:
    """A patch corner drawn uniformly so that the patch lies inside ``[start, stop)``."""
    lo = np.asarray(start, dtype=np.int64)
    hi = np.asarray(stop, dtype=np.int64) - np.asarray(patch, dtype=np.int64)
    return lo + (rng.random(3) * (hi - lo + 1)).astype(np.int64)


class ForegroundIndex:
    """Foreground (label 1) voxel counts per block of a region of a label volume.

    Parameters
    ----------
    counts : numpy.ndarray
        (nz, ny, nx) int64 counts per block.
    edges : tuple of numpy.ndarray
        Per axis, the nb + 1 absolute block edges (z, y, x), from region start to region stop.
    """

    def __init__(self, counts: np.ndarray, edges: tuple[np.ndarray, np.ndarray, np.ndarray]):
        self.counts = np.asarray(counts, dtype=np.int64)
        self.edges = tuple(np.asarray(e, dtype=np.int64) for e in edges)
        flat = self.counts.ravel().astype(np.float64)
        self.total = int(flat.sum())
        self._cdf = np.cumsum(flat) / flat.sum() if self.total else None
        self._cache: OrderedDict = OrderedDict()

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_cache"] = OrderedDict()
        return state

    @classmethod
    def build(cls, labels, *, start: Sequence[int] | None = None, stop: Sequence[int] | None = None,
              scheduler: str = "threads") -> "ForegroundIndex":
        """Count label 1 per block of ``labels[start:stop]`` (a 3D Dask array), streamed by Dask."""
        import dask.array as da

        shape = tuple(int(s) for s in labels.shape)
        start = tuple(int(s) for s in (start or (0, 0, 0)))
        stop = tuple(int(s) for s in (stop or shape))
        lab = labels if isinstance(labels, da.Array) else da.from_array(labels, chunks=COUNT_BLOCK)
        lab = lab[tuple(slice(a, b) for a, b in zip(start, stop))]
        if any(max(c) > _MAX_NATIVE_BLOCK for c in lab.chunks):
            lab = lab.rechunk(COUNT_BLOCK)
        counts = lab.map_blocks(_count_block, chunks=(1, 1, 1), dtype=np.int64).compute(scheduler=scheduler)
        edges = tuple(a + np.concatenate([[0], np.cumsum(c)]) for a, c in zip(start, lab.chunks))
        return cls(np.asarray(counts), edges)  # type: ignore[arg-type]

    def block_bounds(self, flat: int) -> tuple[np.ndarray, np.ndarray]:
        """Absolute (start, stop) of block ``flat`` (C order)."""
        idx = np.unravel_index(int(flat), self.counts.shape)
        lo = np.array([self.edges[a][i] for a, i in enumerate(idx)], dtype=np.int64)
        hi = np.array([self.edges[a][i + 1] for a, i in enumerate(idx)], dtype=np.int64)
        return lo, hi

    def foreground_voxel(self, rng: np.random.Generator, labels) -> np.ndarray:
        """A foreground voxel (z, y, x), uniform over all foreground voxels of the region."""
        if not self.total:
            raise VolsegError("--foreground-fraction", "the labels have no foreground (label 1) voxels in "
                              "this region; use --foreground-fraction 0")
        flat = int(np.searchsorted(self._cdf, rng.random(), side="right"))
        flat = min(flat, self.counts.size - 1)
        while self.counts.ravel()[flat] == 0:  # guard against float rounding at the cdf edges
            flat -= 1
        lo, hi = self.block_bounds(flat)
        coords = self._cache.get(flat)
        if coords is None:
            block = read_box(labels, lo, hi, pad="constant")
            coords = np.flatnonzero(block == FOREGROUND)
            self._cache[flat] = coords
            while len(self._cache) > _CACHE_BLOCKS:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(flat)
        pick = coords[int(rng.integers(len(coords)))]
        return lo + np.asarray(np.unravel_index(int(pick), tuple(hi - lo)), dtype=np.int64)


def _count_block(block: np.ndarray) -> np.ndarray:
    return np.array(np.count_nonzero(block == FOREGROUND), dtype=np.int64).reshape(1, 1, 1)


def origin_containing(rng: np.random.Generator, voxel: Sequence[int], start: Sequence[int],
                      stop: Sequence[int], patch: Sequence[int]) -> np.ndarray:
    """A patch corner, uniform among those whose patch holds ``voxel`` and lies in ``[start, stop)``."""
    v = np.asarray(voxel, dtype=np.int64)
    p = np.asarray(patch, dtype=np.int64)
    lo = np.maximum(np.asarray(start, dtype=np.int64), v - p + 1)
    hi = np.minimum(v, np.asarray(stop, dtype=np.int64) - p)
    return lo + (rng.random(3) * (hi - lo + 1)).astype(np.int64)


def draw_patch(rng: np.random.Generator, *, patch: Sequence[int], start: Sequence[int],
               stop: Sequence[int], labels=None, index: ForegroundIndex | None = None,
               foreground: bool = False, reject: bool = True,
               tries: int = 8) -> tuple[np.ndarray, np.ndarray | None]:
    """Draw one patch position and read its labels.

    Parameters
    ----------
    rng : numpy.random.Generator
    patch, start, stop : sequence of int
        Patch size and the region ``[start, stop)`` it must lie in (z, y, x), voxels.
    labels : array, optional
        The 3D label volume (Dask/Zarr/numpy), read only where needed.
    index : ForegroundIndex, optional
        Required for ``foreground=True``.
    foreground : bool
        True: the patch contains a label-1 voxel. False: a uniform position; with ``labels`` and
        ``reject``, positions holding label 1 are rejected for up to ``tries`` draws (the last
        is kept), so that the share of patches with foreground follows the requested fraction.

    Returns
    -------
    (origin, label_patch)
        origin: (3,) int64; label_patch: (D, H, W) labels of the patch, or None without labels.
    """
    stop_box = lambda o: o + np.asarray(patch, dtype=np.int64)  # noqa: E731
    if foreground:
        if index is None or labels is None:
            raise VolsegError("--foreground-fraction", "label-balanced sampling needs a label volume")
        voxel = index.foreground_voxel(rng, labels)
        origin = origin_containing(rng, voxel, start, stop, patch)
        return origin, read_box(labels, origin, stop_box(origin), pad="constant")
    origin = uniform_origin(rng, start, stop, patch)
    if labels is None:
        return origin, None
    tries = max(1, int(tries)) if reject else 1
    for attempt in range(tries):
        lab = read_box(labels, origin, stop_box(origin), pad="constant")
        if attempt == tries - 1 or not np.any(lab == FOREGROUND):
            break
        origin = uniform_origin(rng, start, stop, patch)
    return origin, lab
