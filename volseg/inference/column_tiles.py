"""Column tiles: run a fused pass tile by tile so its memory follows the tile, not the volume.

Axis order (z, y, x), sizes in voxels. A fused pass (:func:`volseg.inference.engine.run_pass`)
walks its groups in C order and carries thin overlap slabs of the next chunk row and z-plane;
over the whole (y, x) cross-section of a scroll those slabs reach tens of GB. A *tile* is the set
of output chunks whose (y, x) chunk index falls in a window of ``tile`` voxels (rounded down to
whole chunks, at least one), through all z. :func:`run_tiled` runs one pass per tile, so what a
pass holds is bounded by the tile's cross-section.

Each tile computes the patches its chunks need (see :meth:`volseg.inference.plan.Plan.needed`);
patches straddling a tile border are computed by both tiles: about ``(patch - stride) / tile``
extra forwards per tiled axis when the tile is a multiple of the stride (tile borders on grid
lines), up to ``patch / tile`` otherwise (:func:`forward_count` gives the exact figure). Every chunk is
still finalised by exactly one task, from the same patches summed in the same order, so the
output does not depend on the tiling.

``--part I/N`` splits :func:`tile_order` (chunks tile by tile) into N contiguous shares, so a
part's work is whole tiles except at most one tile at each end of its share; so the parts of one
job must use the same ``--tile``, which is why ``predict --stitch`` records it in the output's
settings (a rerun with another ``--tile`` is refused). Diffusion sampling (no parts) and the
patch-store mode do not record it.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Sequence

import numpy as np

from volseg.errors import VolsegError

DEFAULT_TILE = 1024


def parse_tile(value) -> tuple[int, int] | None:
    """``--tile``: ``N`` or ``YxX`` voxels (y, x), or ``0``/``none`` for no tiling.

    Returns ``(y, x)`` in voxels, or None.
    """
    if value is None:
        return None
    if isinstance(value, (int, np.integer)):
        text = str(int(value))
    elif isinstance(value, (tuple, list)):
        text = "x".join(str(v) for v in value)
    else:
        text = str(value).strip().lower()
    if text in ("0", "none", "off", "0x0"):
        return None
    match = re.fullmatch(r"(\d+)(?:x(\d+))?", text)
    if not match or int(match.group(1)) < 1 or (match.group(2) is not None and int(match.group(2)) < 1):
        raise VolsegError("--tile", f"{value!r} is not a tile size; use N or YxX voxels (e.g. 1024 or "
                          "512x2048), or 0/none for no tiling")
    y = int(match.group(1))
    return y, int(match.group(2) or y)


def tile_chunks(tile: tuple[int, int] | None, plan) -> tuple[int, int] | None:
    """The tile in whole chunks (y, x): ``tile // chunk`` per axis, at least 1; None if untiled."""
    if tile is None:
        return None
    return tuple(max(1, int(t) // int(c)) for t, c in zip(tile, plan.chunks[1:]))  # type: ignore[return-value]


def tiles(plan, tile: tuple[int, int] | None) -> list[list[tuple[int, int, int]]]:
    """The output chunks of ``plan`` tile by tile: tiles in C order of (y, x), each tile's chunks
    in C order (z, y, x). ``tile`` is in chunks (:func:`tile_chunks`); None gives one tile."""
    nz, ny, nx = plan.chunk_counts
    ty, tx = tile if tile is not None else (ny, nx)
    out = []
    for y0, x0 in itertools.product(range(0, ny, ty), range(0, nx, tx)):
        out.append(list(itertools.product(range(nz), range(y0, min(y0 + ty, ny)), range(x0, min(x0 + tx, nx)))))
    return out


def tile_order(plan, tile: tuple[int, int] | None) -> list[tuple[int, int, int]]:
    """Every output chunk, tile by tile (the order ``--part`` splits)."""
    return [c for t in tiles(plan, tile) for c in t]


def split_by_tile(plan, chunks: Sequence[Sequence[int]], tile: tuple[int, int] | None) -> list[list[tuple]]:
    """``chunks`` grouped by tile (tiles in order of first appearance, order kept within a tile)."""
    out: dict[tuple, list] = {}
    ty, tx = tile if tile is not None else plan.chunk_counts[1:]
    for c in chunks:
        c = tuple(int(v) for v in c)
        out.setdefault((c[1] // ty, c[2] // tx), []).append(c)
    return list(out.values())


def forward_count(plan, tile: tuple[int, int] | None) -> int:
    """Patch forwards of a whole tiled pass with one patch per batch (no batch rounding).

    A tile computes every patch that overlaps one of its chunks; with tiles spanning all z this
    is ``n_z * n_y(tile) * n_x(tile)`` where ``n_a`` counts the patches overlapping the tile's
    range along axis a. Divide by ``plan.n_patches`` for the recomputation factor.
    """
    total = 0
    for chunks in tiles(plan, tile):
        count = plan.counts[0]
        for a in (1, 2):
            lo = min(c[a] for c in chunks) * plan.chunks[a]
            hi = min((max(c[a] for c in chunks) + 1) * plan.chunks[a], plan.shape[a])
            s = plan.starts[a]
            count *= int(np.count_nonzero((s < hi) & (s + plan.patch[a] > lo)))
        total += count
    return total


def run_tiled(plan, todo: Sequence[Sequence[int]], group_fn: Callable, final_fn: Callable, *,
              tile: tuple[int, int] | None, executor, bar=None, window: int | None = None) -> tuple[list, list]:
    """:func:`~volseg.inference.engine.run_pass` over ``todo``, one pass per tile (in chunks), all
    in one open :class:`volseg.parallel.Executor` and advancing one progress ``bar``.

    Returns ``(final results, group stats)`` of all tiles together.
    """
    from volseg.inference.engine import run_pass

    finals: list = []
    stats: list = []
    for chunks in split_by_tile(plan, todo, tile):
        f, s = run_pass(plan, chunks, group_fn, final_fn, executor=executor, bar=bar, window=window)
        finals += f
        stats += s
    return finals, stats


__all__ = ["DEFAULT_TILE", "forward_count", "parse_tile", "run_tiled", "split_by_tile", "tile_chunks",
           "tile_order", "tiles"]
