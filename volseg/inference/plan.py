"""The work plan of a patch-wise pass: which patches each task computes and each chunk needs.

Axis order (z, y, x); sizes and positions in voxels. A pass covers a *domain* (the volume,
padded at the far end of any axis shorter than the patch, see
:func:`volseg.geometry.padded_shape`) with a patch grid (:func:`volseg.geometry.grid_origins`)
and tiles the *output* with chunks. The grid is a product of three 1D grids, so every question
("which patches touch chunk c", "which patches does group b own") is answered per axis as a
contiguous range, with no search over all patches.

* A *group* b is the set of patches whose centre lies in output chunk b
  (:func:`volseg.geometry.patch_owners`): each patch belongs to exactly one group, so a pass
  that runs every group once computes every patch once.
* Output chunk c needs the groups of all patches that overlap it (:meth:`Plan.groups_for`).
  A group asked for only some chunks (a tile, a part, a resumed pass) computes only the patches
  that overlap them (:meth:`Plan.needed`).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from volseg.errors import VolsegError
from volseg.geometry import axis_origins, chunk_bounds, chunk_counts, padded_shape
from volseg.io.boxes import read_box as read_padded
from volseg.io.boxes import read_region

Triple = tuple[int, int, int]


@dataclass(frozen=True)
class Plan:
    """A patch grid over a (padded) domain and the output chunks it fills.

    Attributes
    ----------
    shape : tuple of int
        The output shape (z, y, x): the source volume's shape.
    domain : tuple of int
        ``padded_shape(shape, patch)``: where patches live.
    patch, stride, chunks : tuple of int
        Patch size, grid stride and output chunk size (z, y, x).
    starts : tuple of numpy.ndarray
        The patch starts along each axis.
    """

    shape: Triple
    domain: Triple
    patch: Triple
    stride: Triple
    chunks: Triple
    starts: tuple

    @classmethod
    def build(cls, shape: Sequence[int], patch: Sequence[int], stride: Sequence[int],
              chunks: Sequence[int]) -> Plan:
        """Plan a grid of ``patch`` every ``stride`` over ``shape`` (padded), output ``chunks``."""
        shape = tuple(int(s) for s in shape)
        patch = tuple(int(p) for p in patch)
        domain = padded_shape(shape, patch)
        chunks = tuple(min(int(c), s) for c, s in zip(chunks, shape))
        starts = tuple(axis_origins(d, p, int(s)) for d, p, s in zip(domain, patch, stride))
        return cls(shape, domain, patch, tuple(int(s) for s in stride), chunks, starts)

    @classmethod
    def from_origins(cls, origins: np.ndarray, *, shape: Sequence[int], patch: Sequence[int],
                     chunks: Sequence[int], where: str = "patches") -> tuple[Plan, np.ndarray]:
        """Rebuild a plan from stored patch corners (any row order) of a full grid.

        Returns the plan and ``rows``: an array of the grid's shape giving, for each patch
        (per-axis indices), its row in ``origins``.
        """
        origins = np.asarray(origins, dtype=np.int64).reshape(-1, 3)
        starts = tuple(np.unique(origins[:, a]) for a in range(3))
        counts = tuple(len(s) for s in starts)
        if origins.shape[0] != int(np.prod(counts)):
            raise VolsegError(where, f"the {origins.shape[0]} patches do not form a full grid "
                              f"({'x'.join(map(str, counts))} starts); stitch needs a grid patch store "
                              "(`volseg predict` output or `patchify` grid mode)")
        rows = np.full(counts, -1, dtype=np.int64)
        idx = tuple(np.searchsorted(starts[a], origins[:, a]) for a in range(3))
        rows[idx] = np.arange(origins.shape[0])
        if (rows < 0).any():
            raise VolsegError(where, "duplicate patch origins; the patch store is not a grid")
        shape = tuple(int(s) for s in shape)
        patch = tuple(int(p) for p in patch)
        domain = padded_shape(shape, patch)
        stride = tuple(int(np.diff(s).min()) if len(s) > 1 else p for s, p in zip(starts, patch))
        chunks = tuple(min(int(c), s) for c, s in zip(chunks, shape))
        return cls(shape, domain, patch, stride, chunks, starts), rows

    # --- patches -----------------------------------------------------------------------------
    @property
    def counts(self) -> Triple:
        """Number of patches along each axis."""
        return tuple(len(s) for s in self.starts)  # type: ignore[return-value]

    @property
    def n_patches(self) -> int:
        return int(np.prod(self.counts))

    def origins(self, axis_index: Sequence[np.ndarray] | None = None) -> np.ndarray:
        """(N, 3) corners of the patches in the product of per-axis index ranges (C order)."""
        ranges = axis_index if axis_index is not None else [np.arange(n) for n in self.counts]
        mesh = np.meshgrid(*[self.starts[a][np.asarray(r)] for a, r in enumerate(ranges)], indexing="ij")
        return np.stack([m.ravel() for m in mesh], axis=1).astype(np.int64)

    def patch_ids(self, axis_index: Sequence[np.ndarray]) -> np.ndarray:
        """Flat (C-order grid) ids of the patches in the product of per-axis index ranges."""
        mesh = np.meshgrid(*[np.asarray(r) for r in axis_index], indexing="ij")
        return np.ravel_multi_index([m.ravel() for m in mesh], self.counts).astype(np.int64)

    # --- chunks and groups -------------------------------------------------------------------
    @property
    def chunk_counts(self) -> Triple:
        return chunk_counts(self.shape, self.chunks)

    def chunk_list(self) -> list[Triple]:
        """Every output chunk index, C order."""
        return list(itertools.product(*(range(n) for n in self.chunk_counts)))

    def bounds(self, chunk: Sequence[int]) -> tuple[Triple, Triple]:
        """(start, stop) of an output chunk, clipped to the output shape."""
        return chunk_bounds(chunk, self.chunks, self.shape)

    def _owner_axis(self, a: int) -> np.ndarray:
        # Owner chunk index along axis a of each patch; centres past the output (padding) go
        # to the last chunk, centres before it (nnU-Net's grid pads small crops on both sides)
        # to the first.
        centre = self.starts[a] + self.patch[a] // 2
        return np.clip(centre // self.chunks[a], 0, self.chunk_counts[a] - 1)

    def owned(self, group: Sequence[int]) -> list[np.ndarray]:
        """Per-axis patch indices owned by ``group`` (empty arrays when it owns none)."""
        return [np.nonzero(self._owner_axis(a) == int(group[a]))[0] for a in range(3)]

    def needed(self, group: Sequence[int], wanted: Sequence[Sequence[int]] | None = None) -> np.ndarray:
        """Which patches owned by ``group`` overlap a chunk in ``wanted`` (all when None).

        Returns a boolean array of the owned patches' per-axis counts (z, y, x), in the order
        of :meth:`owned`.
        """
        idx = self.owned(group)
        mask = np.zeros(tuple(len(i) for i in idx), bool)
        if wanted is None:
            mask[...] = True
            return mask
        for chunk in wanted:
            sel = [np.isin(i, t) for i, t in zip(idx, self.touching(chunk))]
            mask |= sel[0][:, None, None] & sel[1][None, :, None] & sel[2][None, None, :]
        return mask

    def group_list(self) -> list[Triple]:
        """The groups that own at least one patch, C order."""
        per_axis = [np.unique(self._owner_axis(a)) for a in range(3)]
        return [tuple(int(v) for v in g) for g in itertools.product(*per_axis)]

    def touching(self, chunk: Sequence[int]) -> list[np.ndarray]:
        """Per-axis indices of the patches that overlap output chunk ``chunk``."""
        start, stop = self.bounds(chunk)
        return [np.nonzero((self.starts[a] < stop[a]) & (self.starts[a] + self.patch[a] > start[a]))[0]
                for a in range(3)]

    def groups_for(self, chunk: Sequence[int]) -> list[Triple]:
        """The groups whose patches overlap output chunk ``chunk``, C order."""
        per_axis = [np.unique(self._owner_axis(a)[idx]) for a, idx in enumerate(self.touching(chunk))]
        return [tuple(int(v) for v in g) for g in itertools.product(*per_axis)]

    def chunks_for_group(self, group: Sequence[int]) -> list[Triple]:
        """The output chunks that the patches of ``group`` overlap, C order."""
        per_axis = []
        for a, idx in enumerate(self.owned(group)):
            lo = max(int(self.starts[a][idx].min()), 0)
            hi = min(int(self.starts[a][idx].max()) + self.patch[a], self.shape[a])
            per_axis.append(range(lo // self.chunks[a], (hi - 1) // self.chunks[a] + 1))
        return [tuple(int(v) for v in c) for c in itertools.product(*per_axis)]

    def group_box(self, group: Sequence[int]) -> tuple[Triple, Triple]:
        """Bounding box (start, stop) in the domain of the patches owned by ``group``."""
        lo, hi = [], []
        for a, idx in enumerate(self.owned(group)):
            lo.append(int(self.starts[a][idx].min()))
            hi.append(int(self.starts[a][idx].max()) + self.patch[a])
        return tuple(lo), tuple(hi)  # type: ignore[return-value]


def read_box(volume, start: Sequence[int], stop: Sequence[int], shape: Sequence[int], *,
             key: str | None = None, chunks: Sequence[int] | None = None) -> tuple[np.ndarray, int]:
    """Read [start, stop) of the mirrored-padded ``volume``: (numpy array, bytes read from storage).

    ``volume`` is any array-like of ``shape`` (dask, zarr, numpy; the padding follows its own
    shape, which is ``shape``). With ``key`` and ``chunks``
    (the storage chunk shape) the read goes through the per-process chunk cache
    (:mod:`volseg.inference.cache`). Where ``stop`` runs past the volume (only on axes shorter
    than the patch, whose boxes then start at 0) the missing far end is filled by reflection
    (:func:`volseg.io.boxes.read_box` with ``pad="reflect"``; a one-voxel axis repeats).
    """
    nbytes = [0]

    def read(lo, hi) -> np.ndarray:
        if key is not None and chunks is not None:
            from volseg.inference.cache import cached_region

            data, nbytes[0] = cached_region(volume, key, lo, hi, chunks)
        else:
            data = read_region(volume, lo, hi)
            nbytes[0] = data.nbytes
        return data

    return read_padded(volume, start, stop, pad="reflect", read=read), nbytes[0]
