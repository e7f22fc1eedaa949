"""Fused patch-to-chunk passes as Dask task graphs: every patch computed once, memory bounded.

A pass over a :class:`~volseg.inference.plan.Plan` has two kinds of tasks:

``group b``
    computes the patches owned by output chunk b (one input read for all of them) and returns
    their weighted contributions cut per output chunk they touch: ``{c: (start, sum_wv, sum_w)}``
    with ``start`` the (z, y, x) corner of the box, ``sum_wv`` (C, ...) and ``sum_w`` float32.
``final c``
    depends on the groups whose patches overlap chunk c, adds their contributions in a fixed
    order (so the result does not depend on the scheduler), normalises by the weight sum and
    writes chunk c and its completion marker. No other task writes chunk c.

Groups are taken in C order in windows (one Dask graph each, :func:`run_pass`); a chunk is
finalised in the window of its last group and the pieces later chunks still need are carried to
the next window. So every patch is computed once and memory follows the C-order wavefront (a
window of groups plus thin overlap slabs of the next row and plane), not the volume's depth.
Those slabs span the pass's (y, x) cross-section, so ``predict`` runs one pass per column tile
(:mod:`volseg.inference.column_tiles`), bounding them by the tile instead of the scroll's plane.
Chunks already done (markers) get no task and a group computes only the patches its wanted
chunks need, so a resumed pass redoes nothing finished; with ``--part`` or tiles a pass runs
the groups its chunks need (patches straddling a part or tile border run in both).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from volseg.parallel import Executor

_NAMES = ("volseg-group", "volseg-piece", "volseg-stats", "volseg-final")


def _pick(result: dict, key):
    return result.get(key)


def accumulate(target_wv: np.ndarray, target_w: np.ndarray, start: Sequence[int],
               pieces: Sequence[tuple | None]) -> None:
    """Add contributions ``(corner, sum_wv, sum_w)`` into chunk accumulators starting at ``start``."""
    for piece in pieces:
        if piece is None:
            continue
        corner, wv, w = piece
        sl = tuple(slice(int(c) - int(s), int(c) - int(s) + n) for c, s, n in zip(corner, start, w.shape))
        target_wv[(slice(None),) + sl] += wv
        target_w[sl] += w


def normalise(sum_wv: np.ndarray, sum_w: np.ndarray, *, where: str = "blend") -> np.ndarray:
    """``sum_wv / sum_w`` (float32); a voxel no patch covered is an internal error."""
    if not np.all(sum_w > 0):
        raise RuntimeError(f"{where}: {int((sum_w <= 0).sum())} voxels received no patch weight")
    return (sum_wv / sum_w[None]).astype(np.float32, copy=False)


def _literal(value):
    return value


def run_pass(plan, todo: Sequence[tuple], group_fn: Callable, final_fn: Callable, *,
             executor: Executor, description: str = "chunks", window: int | None = None,
             bar=None) -> tuple[list, list]:
    """Run a fused pass over the output chunks ``todo`` in windows of groups (C order).

    ``group_fn(b, wanted)`` returns ``{c: piece, ..., "stats": dict}`` for the chunks in
    ``wanted``; ``final_fn(c, pieces)`` writes chunk c and returns a stats dict. Each window is
    one Dask graph: ``window`` consecutive groups (default 16 per worker), the final tasks of every
    chunk whose last group is in the window, and the pieces still needed by later chunks, which
    are carried into the next window's graph. Each group runs once; memory is bounded by the
    window's pieces plus the carried pieces (the C-order wavefront: thin overlap slabs of the
    next row and plane), not by the volume's depth. Run it per column tile
    (:func:`volseg.inference.column_tiles.run_tiled`) to bound it by the tile's cross-section too.
    ``executor`` (an open :class:`volseg.parallel.Executor`: one process pool or cluster) and
    ``bar`` (a progress bar advanced once per chunk; default one of ``description``, hidden when
    the execution is quiet) may be shared by many passes.

    Returns ``(final results, group stats)``; the stats also hold, per window,
    ``carried_bytes_peak``: the bytes of the pieces carried to the next window (the wavefront).
    """
    from volseg.progress import progress_bar

    todo = [tuple(int(v) for v in c) for c in todo]
    # Key names unique to this pass: a distributed scheduler may still hold a result of an earlier
    # graph (another tile, window or DDIM step) under the same key, and would hand it back.
    _G, _P, _S, _F = _names()
    needs = {c: plan.groups_for(c) for c in todo}
    wanted: dict[tuple, list] = {}
    for c, groups in needs.items():
        for b in groups:
            wanted.setdefault(b, []).append(c)
    order = sorted(wanted)
    rank = {b: i for i, b in enumerate(order)}
    last = {c: max(rank[b] for b in groups) for c, groups in needs.items()}
    finals: list = []
    stats: list = []
    carry: dict[tuple, Any] = {}
    with contextlib.ExitStack() as stack:
        size = max(1, int(window or 16 * executor.workers))
        if bar is None:
            bar = stack.enter_context(progress_bar(description, len(todo), quiet=executor.quiet))
        by_last: dict[int, list] = {}
        for c in todo:
            by_last.setdefault(last[c], []).append(c)
        for lo in range(0, len(order), size):
            hi = min(lo + size, len(order))
            dsk: dict[Any, Any] = {(_P, *bc): (_literal, piece) for bc, piece in carry.items()}
            stats_keys = []
            for b in order[lo:hi]:
                dsk[(_G, *b)] = (group_fn, list(b), [list(c) for c in wanted[b]])
                dsk[(_S, *b)] = (_pick, (_G, *b), "stats")
                stats_keys.append((_S, *b))
                for c in wanted[b]:
                    dsk[(_P, *b, *c)] = (_pick, (_G, *b), c)
            final_keys = []
            for i in range(lo, hi):
                for c in by_last.get(i, []):
                    dsk[(_F, *c)] = (final_fn, list(c), [(_P, *b, *c) for b in needs[c]])
                    final_keys.append((_F, *c))
            keep_keys = [k for k in dsk if k[0] == _P and last[tuple(k[4:7])] >= hi]
            results = executor.get(dsk, final_keys + stats_keys + keep_keys, bar=bar, counts=_is_final)
            finals += results[:len(final_keys)]
            stats += results[len(final_keys):len(final_keys) + len(stats_keys)]
            carry = {tuple(k[1:]): v for k, v in zip(keep_keys, results[len(final_keys) + len(stats_keys):])}
            held = sum(_nbytes(piece) for piece in carry.values())
            stats.append({"carried_bytes_peak": held})
    return finals, stats


def _nbytes(piece) -> int:
    """Bytes of the arrays in a piece ``(corner, sum_wv, sum_w)`` (0 for anything else)."""
    return sum(getattr(a, "nbytes", 0) for a in piece) if isinstance(piece, tuple) else 0


def _names() -> tuple[str, str, str, str]:
    """Group, piece, stats and final key names unique to one pass."""
    token = uuid.uuid4().hex[:12]
    return tuple(f"{name}-{token}" for name in _NAMES)  # type: ignore[return-value]


def _is_final(key) -> bool:
    return isinstance(key, tuple) and isinstance(key[0], str) and key[0].startswith(_NAMES[3])


def merge_stats(stats: Sequence[dict | None]) -> dict:
    """Sum numeric stats dicts key by key; keys ending in ``_peak`` take the maximum."""
    total: dict[str, float] = {}
    for s in stats:
        for k, v in (s or {}).items():
            total[k] = max(total.get(k, 0), v) if k.endswith("_peak") else total.get(k, 0) + v
    return total


__all__ = ["accumulate", "merge_stats", "normalise", "run_pass"]
