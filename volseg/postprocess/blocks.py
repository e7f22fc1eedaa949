"""Blocks of a ``volseg postprocess`` run: reading the input, the saved tables, and the kept and
closed masks of a chunk as every pass after the labelling sees them.

Every pass after pass 1 rebuilds a chunk's masks from the input and the tables saved next to the
output (``volseg_tables/``): the binarised foreground, the kept foreground (its components mapped
through ``keep_fg``), and the kept mask of a box of chunks around it, repaired
(:meth:`~volseg.postprocess.repairs.Repairs.box`). Relabelling a chunk is deterministic, so the
provisional ids agree with pass 1. Axis order (z, y, x), sizes in voxels.
"""

from __future__ import annotations

import functools
import itertools
from pathlib import Path

import numpy as np

from volseg.errors import VolsegError
from volseg.geometry import as_slices, chunk_bounds, chunk_counts, with_halo
from volseg.io.boxes import read_box
from volseg.postprocess.kernels import kept_block, smooth_values
from volseg.roi import clip_box

TABLES = "volseg_tables"
#: Chunks whose kept masks a process keeps for the next tasks' halos (neighbouring tasks share 18
#: of their 27 chunks; at most this many binarised chunks, e.g. 64 MB of 128^3 chunks).
_KEPT_CACHE = 32


@functools.lru_cache(maxsize=4)
def source(path: str):
    """Level 0 of a 3D Zarr / OME-Zarr input as a checked zarr array (one call reads a halo box
    of many chunks concurrently; a damaged chunk is named), else the lazy volume of
    :func:`volseg.io.open_volume`."""
    import zarr

    from volseg.io import open_volume
    from volseg.io.checked import checked
    from volseg.io.remote import open_node

    volume = open_volume(path)  # validates the input
    try:
        node = open_node(path)
        if isinstance(node, zarr.Group):
            attrs = node.attrs.asdict()
            node = node[(attrs.get("ome") or attrs)["multiscales"][0]["datasets"][0]["path"]]
        if isinstance(node, zarr.Array) and tuple(node.shape) == tuple(volume.shape) \
                and node.dtype == volume.dtype:
            return checked(node, path)
    except Exception:  # not a plain 3D Zarr: read through the lazy volume
        pass
    return volume


def read_block(path: str, start, stop, box=None) -> np.ndarray:
    """The input's values in ``[start, stop)``; with ``box`` (start, stop of ``--roi``) 0 outside
    it (a block outside it is not read)."""
    if box is None:
        return read_box(source(path), start, stop, pad="none")
    if any(a >= e or b <= s for a, b, s, e in zip(start, stop, *box)):
        return np.zeros([b - a for a, b in zip(start, stop)], source(path).dtype)
    return clip_box(np.require(read_box(source(path), start, stop, pad="none"), requirements="W"), start, stop, *box)


def block_values(path: str, start, stop, shape, binarise) -> tuple[np.ndarray, np.ndarray]:
    """(raw values, values to binarise) of the block ``[start, stop)``: with smoothing, the block
    is read with ``binarise.halo`` voxels of context, filtered, and cropped back. With
    ``binarise.box`` (``--roi``) the input reads as 0 outside that box."""
    if not binarise.smooth:
        values = read_block(path, start, stop, binarise.box)
        return values, values
    lo, hi = with_halo(start, stop, binarise.halo, shape)
    box = read_block(path, lo, hi, binarise.box)
    inner = as_slices([s - a for s, a in zip(start, lo)], [t - a for t, a in zip(stop, lo)])
    return box[inner], smooth_values(box, binarise.smooth)[inner]


def load_tables(output: Path, name: str = TABLES) -> dict | None:
    """The tables saved under ``output/name`` (memory-mapped), or None when not (yet) saved."""
    folder = Path(output) / name
    if not (folder / "stats.npy").is_file():
        return None
    return {p.stem: np.load(p, mmap_mode="r") for p in folder.glob("*.npy")}


@functools.lru_cache(maxsize=4)
def cached_tables(output: str, token: int, name: str = TABLES) -> dict:
    """The tables of ``output``; ``token`` (their mtime) keeps a long-lived worker from reusing
    another run's tables or chunks."""
    tables = load_tables(Path(output), name)
    if tables is None:
        raise VolsegError(output, f"lost its {name} folder while running; rerun the command")
    return tables


def kept(path, index, chunks, shape, binarise, t) -> tuple[np.ndarray, np.ndarray]:
    """(binarised foreground, kept foreground) of chunk ``index``."""
    start, stop = chunk_bounds(index, chunks, shape)
    fg, _ = binarise.masks(block_values(path, start, stop, shape, binarise)[1])
    return fg, kept_block(fg, t["keep_fg"], int(t["fg_offsets"][tuple(index)]))


@functools.lru_cache(maxsize=_KEPT_CACHE)
def kept_cached(path, output, token, index, chunks, shape, binarise) -> tuple[np.ndarray, np.ndarray]:
    """:func:`kept` of one chunk, kept (read-only) for the neighbouring tasks."""
    masks = kept(path, index, chunks, shape, binarise, cached_tables(output, token))
    for m in masks:
        m.setflags(write=False)
    return masks


def closed_kept(path, output, token, index, chunks, shape, binarise, *, close,
                halo: int) -> tuple[np.ndarray, tuple, tuple]:
    """The kept mask repaired by ``close`` (:class:`~volseg.postprocess.repairs.Repairs`:
    opening, closing, plugging), over chunk ``index`` grown by ``halo`` voxels (clipped to the
    volume): ``(box, lo, hi)``.

    The repairs read the kept mask ``close.reach`` voxels further (per axis), so the box holds
    the whole volume's repaired mask wherever it lies ``halo`` voxels or less from the chunk.
    """
    start, stop = chunk_bounds(index, chunks, shape)
    reach = [halo + r for r in close.reach]
    lo, hi = with_halo(start, stop, reach, shape)
    box = np.zeros([b - a for a, b in zip(lo, hi)], dtype=bool)
    counts = chunk_counts(shape, chunks)
    ks = [-(-r // c) for r, c in zip(reach, chunks)]  # chunks the halo reaches, per axis
    for step in itertools.product(*(range(-k, k + 1) for k in ks)):
        nb = tuple(i + d for i, d in zip(index, step))
        if not all(0 <= i < c for i, c in zip(nb, counts)):
            continue
        s0, s1 = chunk_bounds(nb, chunks, shape)
        a = [max(x, y) for x, y in zip(s0, lo)]
        b = [min(x, y) for x, y in zip(s1, hi)]
        if any(x >= y for x, y in zip(a, b)):
            continue
        mask = kept_cached(path, output, token, nb, chunks, shape, binarise)[1]
        box[as_slices([x - y for x, y in zip(a, lo)], [x - y for x, y in zip(b, lo)])] = \
            mask[as_slices([x - y for x, y in zip(a, s0)], [x - y for x, y in zip(b, s0)])]
    closed = close.box(box, lo, hi, shape)
    inner_lo, inner_hi = with_halo(start, stop, halo, shape)
    crop = as_slices([x - y for x, y in zip(inner_lo, lo)], [x - y for x, y in zip(inner_hi, lo)])
    return closed[crop], inner_lo, inner_hi


def clear_caches() -> None:
    """Forget the cached tables and masks (between runs and passes)."""
    cached_tables.cache_clear()
    kept_cached.cache_clear()


def concat(parts) -> np.ndarray:
    """The per-chunk arrays of a pass, end to end (int64 zeros(0) for none)."""
    parts = [np.asarray(p) for p in parts]
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def offsets(merger, counts) -> np.ndarray:
    """Every chunk's provisional-id offset in ``merger``, as an array over the chunk grid."""
    out = np.zeros(counts, dtype=np.int64)
    for index in itertools.product(*(range(c) for c in counts)):
        out[index] = merger.offset(index)
    return out
