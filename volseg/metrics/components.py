"""Connected components of a chunked volume: label each chunk, merge across chunk faces.

Every chunk is labelled on its own with :func:`skimage.measure.label`; the labels are then made
globally unique (*provisional* ids: local label + a running offset) and the provisional ids that
touch across a chunk face are merged with :func:`scipy.sparse.csgraph.connected_components`.
The result is the same partition as labelling the whole volume at once, up to relabelling.

Chunks are fed one z-layer (one row of chunks along z) at a time, so the merger only keeps the
faces of the current layer and the top faces of the previous one: memory is bounded by the
chunk faces of a layer, not by the volume.

Axis order is (z, y, x); sizes in voxels. ``connectivity`` follows scikit-image: 1 = 6-connected
(faces), 3 = 26-connected (faces, edges and corners).
"""

from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np

from volseg.errors import VolsegError


def label_block(mask: np.ndarray, *, connectivity: int = 3) -> tuple[np.ndarray, int]:
    """Label the foreground of one chunk with :func:`skimage.measure.label`.

    Returns ``(labels, n)``: labels 1..n (0 is background) in the smallest unsigned dtype.
    """
    from skimage.measure import label

    labels, n = label(np.asarray(mask, dtype=bool), connectivity=connectivity,
                      background=0, return_num=True)
    return labels.astype(np.min_scalar_type(max(int(n), 1)), copy=False), int(n)


def block_faces(labels: np.ndarray) -> dict[tuple[int, int], np.ndarray]:
    """The six boundary planes of a labelled chunk: ``{(axis, side): 2D array}``, side 0 = low."""
    return {(axis, side): np.ascontiguousarray(np.take(labels, 0 if side == 0 else -1, axis=axis))
            for axis in range(3) for side in (0, 1)}


def border_labels(labels: np.ndarray, start: Sequence[int], stop: Sequence[int],
                  shape: Sequence[int]) -> np.ndarray:
    """Local labels of a chunk ``[start, stop)`` that touch the border of the whole volume."""
    found = []
    for axis in range(3):
        if start[axis] == 0:
            found.append(np.unique(np.take(labels, 0, axis=axis)))
        if stop[axis] == shape[axis]:
            found.append(np.unique(np.take(labels, -1, axis=axis)))
    if not found:
        return np.zeros(0, dtype=np.int64)
    values = np.unique(np.concatenate(found).astype(np.int64))
    return values[values > 0]


def face_pairs(low: np.ndarray, high: np.ndarray, *, connectivity: int = 3) -> np.ndarray:
    """Pairs of ids that touch across a face: ``low`` and ``high`` are the two adjacent planes.

    ``low[i, j]`` touches ``high[i + di, j + dj]`` for ``di, dj`` in {-1, 0, 1} (26-connected,
    ``connectivity=3``) or only ``di = dj = 0`` (6-connected, ``connectivity=1``). Zeros are
    background. Returns a (K, 2) int64 array of unique pairs.
    """
    offsets = [(0, 0)] if connectivity == 1 else list(itertools.product((-1, 0, 1), repeat=2))
    n0, n1 = low.shape
    lows, highs = [], []
    for di, dj in offsets:
        a = low[max(0, -di):n0 - max(0, di), max(0, -dj):n1 - max(0, dj)]
        b = high[max(0, di):n0 - max(0, -di), max(0, dj):n1 - max(0, -dj)]
        keep = (a > 0) & (b > 0)
        if keep.any():
            lows.append(a[keep].astype(np.int64))
            highs.append(b[keep].astype(np.int64))
    if not lows:
        return np.zeros((0, 2), dtype=np.int64)
    # One int64 key per pair (sorted like the pairs): far faster than np.unique(axis=0).
    a, b = np.concatenate(lows), np.concatenate(highs)
    base = int(b.max()) + 1
    keys = np.unique(a * base + b)
    return np.stack([keys // base, keys % base], axis=1)


class FaceMerger:
    """Merge provisional component ids across chunk faces, one z-layer of chunks at a time.

    Parameters
    ----------
    counts : tuple of int
        Number of chunks along (z, y, x).
    connectivity : int
        1 (6-connected) or 3 (26-connected), as for :func:`skimage.measure.label`.

    Feed every z-layer in order with :meth:`add_layer`; then :meth:`finish` gives the final
    component of every provisional id. :meth:`offset` gives a chunk's provisional-id offset.
    Chunks may also put their ids in *groups* (the leaderboard's tiles,
    :func:`volseg.metrics.leaderboard_tiles.label_cells`): :meth:`finish_groups` then counts the
    components when ids of different groups are never merged.
    """

    def __init__(self, counts: Sequence[int], *, connectivity: int = 3):
        self.counts = tuple(int(c) for c in counts)
        self.connectivity = int(connectivity)
        self.total = 0
        self._offsets: dict[tuple[int, int, int], int] = {}
        self._pairs: list[np.ndarray] = []
        self._border: list[np.ndarray] = []
        self._groups: list[np.ndarray] = [np.zeros(1, dtype=np.int16)]
        self._group_border: list[np.ndarray] = []
        self._previous_top: np.ndarray | None = None
        self._next_layer = 0

    def offset(self, index: Sequence[int]) -> int:
        """Provisional id offset of chunk ``index`` (provisional id = local label + offset)."""
        return self._offsets[tuple(int(i) for i in index)]

    def add_layer(self, iz: int, blocks: dict) -> None:
        """Add z-layer ``iz``: ``blocks[(iy, ix)] = (n, faces, border[, extra])`` for every chunk.

        ``n`` is the chunk's label count, ``faces`` its :func:`block_faces`, ``border`` the local
        labels touching the volume border (may be empty). ``extra`` (optional) holds
        ``groups`` (the group of every local label, label 0 first), ``pairs`` (local labels
        to merge inside the chunk, never within a group) and ``group_border`` (local labels
        touching the border of their group).
        """
        if iz != self._next_layer:
            raise ValueError(f"layers must be added in order: expected {self._next_layer}, got {iz}")
        _, ny, nx = self.counts
        shifted = {}
        for iy, ix in itertools.product(range(ny), range(nx)):
            n, faces, border, *extra = blocks[(iy, ix)]
            off = self.total
            self._offsets[(iz, iy, ix)] = off
            self.total += int(n)
            groups = extra[0]["groups"][1:] if extra else np.zeros(int(n), dtype=np.int16)
            self._groups.append(np.asarray(groups, dtype=np.int16))
            if extra and len(extra[0]["pairs"]):
                self._pairs.append(np.asarray(extra[0]["pairs"], dtype=np.int64) + off)
            if extra and len(extra[0]["group_border"]):
                self._group_border.append(np.asarray(extra[0]["group_border"], dtype=np.int64) + off)
            shifted[(iy, ix)] = {key: _shift(face, off) for key, face in faces.items()}
            if len(border):
                self._border.append(np.asarray(border, dtype=np.int64) + off)

        # Faces across z: the previous layer's top against this layer's bottom (full y-x plane).
        bottom = np.block([[shifted[(iy, ix)][(0, 0)] for ix in range(nx)] for iy in range(ny)])
        if self._previous_top is not None:
            self._pairs.append(face_pairs(self._previous_top, bottom, connectivity=self.connectivity))
        self._previous_top = np.block([[shifted[(iy, ix)][(0, 1)] for ix in range(nx)]
                                       for iy in range(ny)])
        # Faces across y inside the layer: planes spanning the layer's z and the full x.
        for iy in range(1, ny):
            low = np.concatenate([shifted[(iy - 1, ix)][(1, 1)] for ix in range(nx)], axis=1)
            high = np.concatenate([shifted[(iy, ix)][(1, 0)] for ix in range(nx)], axis=1)
            self._pairs.append(face_pairs(low, high, connectivity=self.connectivity))
        # Faces across x inside the layer: planes spanning the layer's z and the full y.
        for ix in range(1, nx):
            low = np.concatenate([shifted[(iy, ix - 1)][(2, 1)] for iy in range(ny)], axis=1)
            high = np.concatenate([shifted[(iy, ix)][(2, 0)] for iy in range(ny)], axis=1)
            self._pairs.append(face_pairs(low, high, connectivity=self.connectivity))
        self._pairs = [p for p in self._pairs if len(p)]
        self._next_layer += 1

    def finish(self) -> tuple[np.ndarray, int, np.ndarray]:
        """Resolve the merges.

        Returns ``(final, n, touches_border)``: ``final[p]`` is the component (1..n) of
        provisional id ``p`` (``final[0] == 0``), ``n`` the number of components and
        ``touches_border[c]`` whether component ``c`` touches the volume border.
        """
        if self._next_layer != self.counts[0]:
            raise ValueError(f"{self.counts[0] - self._next_layer} z-layers were never added")
        size = self.total + 1
        comp = _components(self._all_pairs(), size)
        # Renumber components 1..n in order of first provisional id; id 0 stays background.
        _, first, inverse = np.unique(comp[1:], return_index=True, return_inverse=True)
        order = np.argsort(np.argsort(first))
        final = np.zeros(size, dtype=np.int64)
        final[1:] = order[inverse] + 1
        n = len(first)
        touches = np.zeros(n + 1, dtype=bool)
        if self._border:
            touches[final[np.concatenate(self._border)]] = True
        touches[0] = False
        return final, n, touches

    def finish_groups(self, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
        """Components when ids of different groups are never merged, counted per group.

        Returns ``(count, enclosed)``, int64 arrays of length ``n_groups``: the components of
        each group and those of them that touch no ``group_border`` id.
        """
        if self._next_layer != self.counts[0]:
            raise ValueError(f"{self.counts[0] - self._next_layer} z-layers were never added")
        groups = np.concatenate(self._groups)
        pairs = self._all_pairs()
        pairs = pairs[groups[pairs[:, 0]] == groups[pairs[:, 1]]]
        comp = _components(pairs, self.total + 1)
        ids, first = np.unique(comp[1:], return_index=True)
        group_of = groups[1:][first].astype(np.int64)
        touching = np.zeros(int(comp.max()) + 1, dtype=bool)
        if self._group_border:
            touching[comp[np.concatenate(self._group_border)]] = True
        count = np.bincount(group_of, minlength=n_groups)
        enclosed = np.bincount(group_of[~touching[ids]], minlength=n_groups)
        return count.astype(np.int64), enclosed.astype(np.int64)

    def _all_pairs(self) -> np.ndarray:
        return np.concatenate(self._pairs) if self._pairs else np.zeros((0, 2), dtype=np.int64)


def _components(pairs: np.ndarray, size: int) -> np.ndarray:
    """Connected component of every id 0..size-1 of the graph with edges ``pairs``."""
    from scipy.sparse import coo_array
    from scipy.sparse.csgraph import connected_components

    graph = coo_array((np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])),
                      shape=(size, size))
    return connected_components(graph, directed=False)[1]


def _shift(face: np.ndarray, offset: int) -> np.ndarray:
    face = face.astype(np.int64)
    return np.where(face > 0, face + offset, 0)


def label_chunked(mask, *, chunks: Sequence[int] | int = 64, connectivity: int = 3,
                  background: bool = False) -> tuple[np.ndarray, int]:
    """Label the connected components of a 3D mask chunk by chunk (in memory).

    The reference implementation of the chunked labelling that :mod:`volseg.metrics.evaluate`
    streams: each chunk is labelled with :func:`skimage.measure.label`, then ids are merged across
    chunk faces. The partition equals ``skimage.measure.label(mask, connectivity=connectivity)``
    up to relabelling (components are numbered in the order their first chunk is visited).

    Parameters
    ----------
    mask : array_like of bool, shape (z, y, x)
        Foreground mask (numpy or dask).
    chunks : int or tuple of 3 ints
        Chunk size in voxels along (z, y, x).
    connectivity : {1, 3}
        1: 6-connected; 3: 26-connected.
    background : bool
        Label the background (``~mask``) instead of the foreground.

    Returns
    -------
    labels : ndarray of int64, shape (z, y, x)
    n : int
        Number of components.
    """
    from volseg.geometry import as_slices, chunk_bounds, chunk_counts, parse_size3

    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 3:
        raise VolsegError(None, f"expected a 3D (z, y, x) mask, got shape {mask.shape}")
    if background:
        mask = ~mask
    chunks = parse_size3(chunks, name="chunks")
    counts = chunk_counts(mask.shape, chunks)
    merger = FaceMerger(counts, connectivity=connectivity)
    local: dict[tuple[int, int, int], np.ndarray] = {}
    for iz in range(counts[0]):
        layer = {}
        for iy, ix in itertools.product(range(counts[1]), range(counts[2])):
            start, stop = chunk_bounds((iz, iy, ix), chunks, mask.shape)
            labels, n = label_block(mask[as_slices(start, stop)], connectivity=connectivity)
            local[(iz, iy, ix)] = labels
            layer[(iy, ix)] = (n, block_faces(labels), ())
        merger.add_layer(iz, layer)
    final, n, _ = merger.finish()
    out = np.zeros(mask.shape, dtype=np.int64)
    for index, labels in local.items():
        start, stop = chunk_bounds(index, chunks, mask.shape)
        out[as_slices(start, stop)] = final[_shift(labels, merger.offset(index))]
    return out, n
