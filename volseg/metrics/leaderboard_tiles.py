"""The leaderboard's tiles: topology counted per tile and summed, in memory and block by block.

The Vesuvius surface-detection leaderboard (``compute_leaderboard_score`` in the
``topometrics`` package's ``leaderboard.py``) cuts each volume into 2 x 2 x 2 tiles
(:func:`volseg.geometry.axis_cuts`: the first ``n % 2`` halves one voxel longer; one tile along
an axis shorter than 2 voxels), takes the topology of every tile on its own, sums the counts
(m_k, p_k, g_k) over the tiles per homology dimension k and only then computes the F1s and the
TopoScore. A rolled sheet that is one component of the whole volume is many arcs in the tiles,
so the tiles decide what the score sees.

Per tile, with the Betti numbers of :mod:`volseg.metrics.topology` (cavities are background
components that do not touch the *tile's* border): p_k, g_k = :func:`feature_counts`
(b0 - 1 per non-empty tile, b1, b2) and m_k = min(p_k, g_k).

Streaming (:mod:`volseg.metrics.evaluate`): every evaluation block is split at the tile cuts
into up to 8 *cells*. :func:`label_cells` labels each cell on its own (ids never cross a tile
cut), records the tile (*group*) of every label, the pairs of labels touching across the cut
planes inside the block (they join the whole-volume components only) and the labels touching
the volume border and the tile border; :class:`volseg.metrics.components.FaceMerger` then
merges ids across block faces twice, for the whole volume and within tiles. :func:`euler_cells`
gives the block's share of the whole volume's Euler characteristic and of every tile's. Axis
order (z, y, x); sizes in voxels.
"""

from __future__ import annotations

import itertools
from typing import Any, Sequence

import numpy as np

from volseg.metrics.topology import (TOPOLOGY_WEIGHTS, betti_from_counts, betti_numbers, euler_block_term,
                                     feature_counts, topology_f1, weighted_topology)

LEADERBOARD_TILES = (2, 2, 2)


def tile_cuts(shape: Sequence[int], tiles: Sequence[int] = LEADERBOARD_TILES) -> list[list[tuple[int, int]]]:
    """Per axis (z, y, x), the (start, stop) of each tile (:func:`volseg.geometry.axis_cuts`)."""
    from volseg.geometry import axis_cuts

    return [axis_cuts(n, t) for n, t in zip(shape, tiles)]


def tile_index(cuts: Sequence[Sequence[tuple[int, int]]], tile: Sequence[int]) -> int:
    """Flat (C-order) number of the tile with per-axis index ``tile``."""
    return int(np.ravel_multi_index(tuple(tile), tuple(len(c) for c in cuts)))


def tile_counts(pred_betti: Sequence[Sequence[int]], truth_betti: Sequence[Sequence[int]]) -> np.ndarray:
    """(3, 3) int64 rows matched, pred, truth; columns k = 0, 1, 2; summed over tiles.

    ``pred_betti[i]`` and ``truth_betti[i]`` are the Betti numbers (b0, b1, b2) of tile i.
    """
    totals = np.zeros((3, 3), dtype=np.int64)
    for bp, bg in zip(pred_betti, truth_betti):
        p, g = np.array(feature_counts(bp)), np.array(feature_counts(bg))
        totals += np.stack([np.minimum(p, g), p, g])
    return totals


def counts_result(totals: np.ndarray, cuts: Sequence[Sequence[tuple[int, int]]], *,
                  weights: Sequence[float] = TOPOLOGY_WEIGHTS) -> tuple[dict[str, Any], float]:
    """(``{"matched", "pred", "truth": [k=0, 1, 2], "tiles": [nz, ny, nx]}``, TopoScore)."""
    totals = np.asarray(totals, dtype=np.int64)
    f1s = [topology_f1(*totals[:, k]) for k in range(3)]
    counts = {"matched": totals[0].tolist(), "pred": totals[1].tolist(), "truth": totals[2].tolist(),
              "tiles": [len(c) for c in cuts]}
    return counts, weighted_topology(f1s, weights=weights)


def streamed_result(fg, bg, euler, cuts, *,
                    weights: Sequence[float] = TOPOLOGY_WEIGHTS) -> tuple[dict[str, Any], float]:
    """:func:`counts_result` from streamed per-tile summaries.

    ``fg`` and ``bg``: for the prediction and the truth, :meth:`FaceMerger.finish_groups
    <volseg.metrics.components.FaceMerger.finish_groups>` of the foreground and of the
    background labels; ``euler``: (tiles, 2) Euler characteristics (prediction, truth).
    """
    per_side = []
    for side in (0, 1):
        (count, _), (_, enclosed) = fg[side], bg[side]
        per_side.append([betti_from_counts(count[t], enclosed[t], euler[t][side]) for t in range(len(count))])
    return counts_result(tile_counts(*per_side), cuts, weights=weights)


def tiled_topology(pred, truth, *, tiles: Sequence[int] = LEADERBOARD_TILES,
                   weights: Sequence[float] = TOPOLOGY_WEIGHTS) -> dict[str, Any]:
    """Count-matched topology of two binary masks summed over the leaderboard's tiles (in memory).

    The reference that the streamed ``topology`` metric of :func:`volseg.metrics.evaluate`
    equals for every block size.

    Parameters
    ----------
    pred, truth : array_like of bool, shape (z, y, x)
        Binary masks (apply the ignore label before).
    tiles : 3 ints
        Tiles per axis (default 2, 2, 2, as the leaderboard; at most one per voxel).
    weights : 3 floats
        Weights of dimensions 0, 1, 2.

    Returns
    -------
    dict
        ``matched``, ``pred``, ``truth``: feature counts [k=0, 1, 2] summed over the tiles
        (per tile b0 - 1 for a non-empty tile, b1, b2; matched min(p_k, g_k) per tile);
        ``tiles``: tiles per axis; ``topology``: the weighted TopoScore in [0, 1].
    """
    p, g = np.asarray(pred, dtype=bool), np.asarray(truth, dtype=bool)
    if p.shape != g.shape or p.ndim != 3:
        raise ValueError(f"expected two 3D masks of the same shape, got {p.shape} and {g.shape}")
    cuts = tile_cuts(p.shape, tiles)
    pred_betti, truth_betti = [], []
    for box in itertools.product(*cuts):
        region = tuple(slice(a, b) for a, b in box)
        pred_betti.append(betti_numbers(p[region]))
        truth_betti.append(betti_numbers(g[region]))
    counts, score = counts_result(tile_counts(pred_betti, truth_betti), cuts, weights=weights)
    return {**counts, "topology": score}


def block_cells(start: Sequence[int], stop: Sequence[int], cuts) -> list[tuple[tuple, tuple, tuple]]:
    """The block ``[start, stop)`` split at the tile cuts: (cell start, cell stop, tile) each.

    ``tile`` is the per-axis tile index; cells are in C order.
    """
    per_axis = []
    for a, b, axis_cuts in zip(start, stop, cuts):
        pieces = [(max(a, lo), min(b, hi), t) for t, (lo, hi) in enumerate(axis_cuts)
                  if max(a, lo) < min(b, hi)]
        per_axis.append(pieces)
    return [tuple(zip(*combo)) for combo in itertools.product(*per_axis)]  # type: ignore[misc]


def label_cells(mask: np.ndarray, start: Sequence[int], stop: Sequence[int], shape: Sequence[int],
                cuts, *, connectivity: int) -> tuple[np.ndarray, int, dict[str, Any]]:
    """Label a block cell by cell (ids never cross a tile cut).

    Parameters
    ----------
    mask : ndarray of bool, shape ``stop - start``
        The block's mask (foreground, or the background for cavities).
    start, stop : 3 ints
        The block in the volume.
    shape : 3 ints
        The volume's shape.
    cuts : per-axis tiles, as :func:`tile_cuts`
    connectivity : {1, 3}
        As :func:`skimage.measure.label`.

    Returns
    -------
    labels : ndarray, shape of ``mask``
        Labels 1..n unique in the block (0: not in the mask).
    n : int
    extra : dict
        ``groups`` (n + 1 tile numbers, label 0 first), ``pairs`` (labels touching across the
        cut planes inside the block), ``border`` (labels touching the volume border),
        ``group_border`` (labels touching the border of their tile), as
        :meth:`volseg.metrics.components.FaceMerger.add_layer` takes them.
    """
    from volseg.metrics.components import border_labels, face_pairs, label_block

    start, stop = [int(a) for a in start], [int(b) for b in stop]
    labels = np.zeros(mask.shape, dtype=np.int64)
    n, groups, border, group_border = 0, [np.zeros(1, np.int16)], [], []
    for lo, hi, tile in block_cells(start, stop, cuts):
        region = tuple(slice(a - s, b - s) for a, b, s in zip(lo, hi, start))
        local, k = label_block(mask[region], connectivity=connectivity)
        if not k:
            continue
        labels[region] = np.where(local > 0, local.astype(np.int64) + n, 0)
        groups.append(np.full(k, tile_index(cuts, tile), np.int16))
        border.append(border_labels(local, lo, hi, shape) + n)
        t_lo = [c[t][0] for c, t in zip(cuts, tile)]
        t_hi = [c[t][1] for c, t in zip(cuts, tile)]
        group_border.append(border_labels(local, [a - o for a, o in zip(lo, t_lo)],
                                          [b - o for b, o in zip(hi, t_lo)],
                                          [b - o for b, o in zip(t_hi, t_lo)]) + n)
        n += k
    pairs = []
    for axis, (a, b, axis_cuts) in enumerate(zip(start, stop, cuts)):
        for cut in sorted({lo for lo, _ in axis_cuts if a < lo < b}):
            pairs.append(face_pairs(np.take(labels, cut - 1 - a, axis=axis),
                                    np.take(labels, cut - a, axis=axis), connectivity=connectivity))
    empty = np.zeros(0, np.int64)
    extra = {"groups": np.concatenate(groups),
             "pairs": np.concatenate(pairs) if pairs else np.zeros((0, 2), np.int64),
             "border": np.concatenate(border) if border else empty,
             "group_border": np.concatenate(group_border) if group_border else empty}
    return labels.astype(np.min_scalar_type(max(n, 1)), copy=False), n, extra


def euler_cells(ext: np.ndarray, lo: Sequence[int], start: Sequence[int], stop: Sequence[int],
                shape: Sequence[int], cuts) -> tuple[int, dict[int, int]]:
    """A block's share of the Euler characteristic of the whole volume and of every tile.

    ``ext`` is the mask read from ``lo`` (the block with at least one voxel plane beyond
    ``stop`` along each axis where the volume goes on). Each cell is extended by one plane
    towards its higher neighbour (:func:`volseg.metrics.topology.euler_block_term`): across a
    tile cut for the whole volume, never across one for its tile.

    Returns
    -------
    (int, dict)
        The whole volume's term and ``{tile number: term}``.
    """
    whole, per_tile = 0, {}
    for c_lo, c_hi, tile in block_cells(start, stop, cuts):
        t_hi = [c[t][1] for c, t in zip(cuts, tile)]
        terms = {}
        for key, limits in (("whole", shape), ("tile", t_hi)):
            high = tuple(b < int(n) for b, n in zip(c_hi, limits))
            if high not in terms:
                region = tuple(slice(a - o, b - o + h) for a, b, o, h in zip(c_lo, c_hi, lo, high))
                terms[high] = euler_block_term(ext[region], high)
            terms[key] = terms[high]
        whole += terms["whole"]
        number = tile_index(cuts, tile)
        per_tile[number] = per_tile.get(number, 0) + terms["tile"]
    return whole, per_tile


def euler_pair(pred: np.ndarray, truth: np.ndarray, lo, start, stop, shape, cuts) -> tuple[tuple, list]:
    """:func:`euler_cells` of both masks: ``((pred, truth) whole terms, [(tile, pred, truth), ...])``."""
    (p_whole, p_tiles), (g_whole, g_tiles) = (euler_cells(m, lo, start, stop, shape, cuts)
                                              for m in (pred, truth))
    per_tile = [(t, p_tiles.get(t, 0), g_tiles.get(t, 0)) for t in sorted({*p_tiles, *g_tiles})]
    return (p_whole, g_whole), per_tile
