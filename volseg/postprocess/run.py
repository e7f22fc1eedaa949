"""The streamed ``volseg postprocess`` pass: the task graph around :mod:`.kernels`.

Pass 1 (read-only) walks the chunks one group of z-layers at a time on the chosen scheduler;
each task binarises its chunk, labels it and returns its faces, component sizes and flags;
:class:`~volseg.metrics.components.FaceMerger` merges the ids across chunk faces as layers
arrive, so memory holds one layer of faces plus one small table entry per component. The
resulting per-id decisions (keep / fill) are saved next to the output (``volseg_tables/``,
written atomically), so a resumed run or another ``--part`` reuses them. Pass 2 writes one output
chunk per task and its completion marker (:mod:`volseg.inference.resume`); ``--part I/N`` takes
a contiguous share of the chunks. The input is only read.
"""

from __future__ import annotations

import functools
import itertools
import os
import time
from pathlib import Path

import numpy as np

from volseg.errors import VolsegError
from volseg.geometry import as_slices, chunk_bounds, chunk_counts
from volseg.metrics import components as cc
from volseg.postprocess.kernels import (close_box, component_table, filled_block, kept_block,
                                        smooth_values, summarise_block)
from volseg.postprocess.options import Options

TABLES = "volseg_tables"
_BATCH_BLOCKS = 256
#: Chunks whose kept masks pass 2 keeps for the next tasks' halos (neighbouring tasks share 18
#: of their 27 chunks; at most this many binarised chunks, e.g. 64 MB of 128^3 chunks).
_KEPT_CACHE = 32


@functools.lru_cache(maxsize=4)
def _source(path: str):
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


def _read(path: str, start, stop) -> np.ndarray:
    region = _source(path)[as_slices(start, stop)]
    if hasattr(region, "compute"):
        region = region.compute(scheduler="synchronous")
    return np.asarray(region)


def _values(path: str, start, stop, shape, binarise) -> tuple[np.ndarray, np.ndarray]:
    """(raw values, values to binarise) of the block ``[start, stop)``: with smoothing, the block
    is read with ``binarise.halo`` voxels of context, filtered, and cropped back."""
    if not binarise.smooth:
        values = _read(path, start, stop)
        return values, values
    from volseg.geometry import with_halo

    lo, hi = with_halo(start, stop, binarise.halo, shape)
    box = _read(path, lo, hi)
    inner = as_slices([s - a for s, a in zip(start, lo)], [t - a for t, a in zip(stop, lo)])
    return box[inner], smooth_values(box, binarise.smooth)[inner]


def _summary_task(index, *, path, chunks, shape, binarise, fill) -> dict:
    start, stop = chunk_bounds(index, chunks, shape)
    values, smoothed = _values(path, start, stop, shape, binarise)
    fg, strong = binarise.masks(smoothed)
    out = summarise_block(fg, strong, fill=fill, start=start, stop=stop, shape=shape)
    out["index"] = tuple(index)
    out["range"] = _value_range(values)
    if binarise.smooth:
        out["smoothed_range"] = _value_range(smoothed)
    return out


def _value_range(values: np.ndarray) -> tuple[float, float]:
    return (float(values.min()), float(values.max())) if values.size else (np.inf, -np.inf)


def _union(ranges) -> tuple[float, float]:
    """The (min, max) covering every (lo, hi) of ``ranges``."""
    los, his = zip(*ranges)
    return min(los), max(his)


def label_pass(path: str, shape, chunks, opts: Options, *, scheduler, workers, quiet) -> dict:
    """Pass 1: the global keep/fill decision of every provisional id, and each chunk's offsets."""
    from volseg.parallel import run_layers

    counts = chunk_counts(shape, chunks)
    nz, ny, nx = counts
    fill = opts.fill_holes > 0
    kinds = ("fg", "bg") if fill else ("fg",)
    mergers = {k: cc.FaceMerger(counts, connectivity=3 if k == "fg" else 1) for k in kinds}
    sizes = {k: [] for k in kinds}
    strong: list = []
    raw, smoothed = [], []                                     # (lo, hi) of every block
    task = functools.partial(_summary_task, path=path, chunks=chunks, shape=tuple(shape),
                             binarise=opts.binarise, fill=fill)
    layers = run_layers(task, counts, per_batch=_BATCH_BLOCKS // (ny * nx), scheduler=scheduler,
                        workers=workers, description="labelling", quiet=quiet)
    for iz, layer in layers:                                   # layer: (iy, ix) order
        for k in kinds:
            mergers[k].add_layer(iz, {r["index"][1:]: r[k] for r in layer})
            sizes[k].extend(r[f"{k}_size"] for r in layer)
        strong.extend(r["fg_strong"] for r in layer if r["fg_strong"] is not None)
        raw.extend(r["range"] for r in layer)
        smoothed.extend(r["smoothed_range"] for r in layer if "smoothed_range" in r)
    opts.check_range(*_union(raw), where=path)
    if smoothed:
        opts.warn_smoothed_range(*_union(smoothed), where=path)
    final, n, _ = mergers["fg"].finish()
    size, flag = component_table(final, n, _cat(sizes["fg"]), _cat(strong) if strong else None)
    keep = (size >= opts.min_size) & flag
    keep[0] = False
    tables = {"keep_fg": keep[final], "fg_offsets": _offsets(mergers["fg"], counts)}
    if fill:
        final_b, m, touches = mergers["bg"].finish()
        bsize, _ = component_table(final_b, m, _cat(sizes["bg"]))
        cavity = (~touches) & (bsize <= opts.fill_holes)
        cavity[0] = False
        tables.update(fill_bg=cavity[final_b], bg_offsets=_offsets(mergers["bg"], counts))
    tables["stats"] = np.array([n, int(np.count_nonzero(~keep[1:])),
                                int(np.count_nonzero(cavity)) if fill else 0], dtype=np.int64)
    return tables


def _cat(parts) -> np.ndarray:
    parts = [np.asarray(p) for p in parts]
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def _offsets(merger, counts) -> np.ndarray:
    out = np.zeros(counts, dtype=np.int64)
    for index in itertools.product(*(range(c) for c in counts)):
        out[index] = merger.offset(index)
    return out


def save_tables(output: Path, tables: dict) -> None:
    """Write the tables under ``output/volseg_tables`` atomically (a complete folder or none)."""
    from volseg.io.atomic import remove_path, temp_sibling

    final = output / TABLES
    tmp = temp_sibling(final)
    remove_path(tmp)
    tmp.mkdir(parents=True)
    for name, value in tables.items():
        np.save(tmp / f"{name}.npy", value)
    try:
        os.rename(tmp, final)
    except OSError:  # another part saved the same tables first
        remove_path(tmp)


def _version(path: str) -> str:
    """Identifies the input's content for resuming: its volseg fingerprint, else its mtime (for a
    URL: the fingerprint, else nothing)."""
    import json

    from volseg.io.remote import is_url, open_node

    if is_url(path):
        return str((open_node(path).attrs.get("volseg") or {}).get("fingerprint"))
    try:
        attrs = json.loads((Path(path) / "zarr.json").read_text()).get("attributes", {})
        if (attrs.get("volseg") or {}).get("fingerprint"):
            return f"{attrs['volseg']['fingerprint']}@{os.stat(path).st_mtime_ns}"
    except (OSError, ValueError):
        pass
    return str(os.stat(path).st_mtime_ns)


def _same_settings(output: Path, settings: dict) -> bool:
    import json

    from volseg.inference.resume import fingerprint

    try:
        info = json.loads((output / "zarr.json").read_text()).get("attributes", {}).get("volseg", {})
    except (OSError, ValueError):
        return False
    return info.get("fingerprint") == fingerprint(settings)


def load_tables(output: Path) -> dict | None:
    folder = output / TABLES
    if not (folder / "stats.npy").is_file():
        return None
    return {p.stem: np.load(p, mmap_mode="r") for p in folder.glob("*.npy")}


@functools.lru_cache(maxsize=2)
def _cached_tables(output: str, token: int) -> dict:
    """The tables of ``output``; ``token`` (their mtime) keeps a long-lived worker from reusing
    another run's tables or chunks."""
    tables = load_tables(Path(output))
    if tables is None:
        raise VolsegError(output, f"lost its {TABLES} folder while running; rerun the command")
    return tables


def _kept(path, index, chunks, shape, binarise, t) -> tuple[np.ndarray, np.ndarray]:
    """(binarised foreground, kept foreground) of chunk ``index``."""
    start, stop = chunk_bounds(index, chunks, shape)
    fg, _ = binarise.masks(_values(path, start, stop, shape, binarise)[1])
    return fg, kept_block(fg, t["keep_fg"], int(t["fg_offsets"][tuple(index)]))


@functools.lru_cache(maxsize=_KEPT_CACHE)
def _kept_cached(path, output, token, index, chunks, shape, binarise) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_kept` of one chunk, kept (read-only) for the neighbouring tasks."""
    masks = _kept(path, index, chunks, shape, binarise, _cached_tables(output, token))
    for m in masks:
        m.setflags(write=False)
    return masks


def _write_task(index, *, path, output, token, chunks, shape, binarise, close, holes) -> int:
    import zarr

    from volseg.geometry import with_halo
    from volseg.inference.resume import Markers

    t = _cached_tables(output, token)
    index = tuple(index)
    start, stop = chunk_bounds(index, chunks, shape)
    fg, out = _kept_cached(path, output, token, index, chunks, shape, binarise)
    if close or holes:
        # The closing and the slice holes need the kept mask 2r + N voxels around the chunk:
        # relabel the neighbouring chunks exactly as pass 1 did and map their ids through the
        # same table.
        lo, hi = with_halo(start, stop, 2 * close + holes + 1, shape)
        box = np.zeros([b - a for a, b in zip(lo, hi)], dtype=bool)
        counts = chunk_counts(shape, chunks)
        ks = [-(-(2 * close + holes + 1) // c) for c in chunks]  # chunks the halo reaches, per axis
        reach = [range(-k, k + 1) for k in ks]
        for step in itertools.product(*reach):
            nb = tuple(i + d for i, d in zip(index, step))
            if not all(0 <= i < c for i, c in zip(nb, counts)):
                continue
            s0, s1 = chunk_bounds(nb, chunks, shape)
            a = [max(x, y) for x, y in zip(s0, lo)]
            b = [min(x, y) for x, y in zip(s1, hi)]
            if any(x >= y for x, y in zip(a, b)):
                continue
            kept = out if nb == index else \
                _kept_cached(path, output, token, nb, chunks, shape, binarise)[1]
            box[as_slices([x - y for x, y in zip(a, lo)], [x - y for x, y in zip(b, lo)])] = \
                kept[as_slices([x - y for x, y in zip(a, s0)], [x - y for x, y in zip(b, s0)])]
        out = close_box(box, lo, hi, start, stop, shape, radius=close, holes=holes)
    if "fill_bg" in t:
        out = out | filled_block(fg, t["fill_bg"], int(t["bg_offsets"][index]))
    zarr.open_array(os.path.join(output, "0"), mode="r+")[as_slices(start, stop)] = out.astype(np.uint8)
    Markers(output).mark(index)
    return 1


def postprocess(pred: str | os.PathLike, output: str | os.PathLike, *, threshold: float | None = None,
                hysteresis=None, smooth: float | None = None, close: int | None = None,
                min_size: int | None = None, fill_holes: int | None = None,
                chunks=128, scheduler: str = "threads", workers: int | None = None, part=None,
                overwrite: bool = False, quiet: bool = False) -> dict:
    """Clean a prediction volume into uint8 labels, streamed chunk by chunk (see module docstring).

    Parameters
    ----------
    pred : path
        Probability map (float, with ``threshold`` or ``hysteresis``; default threshold 0.5) or
        labels (integer: foreground > 0), (z, y, x).
    output : path
        OME-Zarr uint8 labels (0 background, 1 foreground) of the same shape; must not be,
        contain or lie inside ``pred``.
    threshold : float, optional
        Foreground where ``value >= threshold``.
    hysteresis : (low, high) or "LOW,HIGH", optional
        Weak ``> low``, strong ``> high``; weak 26-connected components holding a strong voxel
        anywhere in the volume survive.
    smooth : float, optional
        Sigma (voxels) of a Gaussian filter applied to a probability map before the threshold
        (each block is read with 4 sigma of context, so the result equals the whole volume's).
        Default :data:`volseg.postprocess.options.DEFAULT_SMOOTH` for float input, 0 (none) for
        integer labels, where any other value is refused.
    close : int, optional
        Radius r of a binary closing (ball) applied to the kept components: closes tunnels
        (holes through a sheet) up to ~2r voxels across, and gaps up to ~2r between surfaces.
        With a closing or ``fill_holes``, each chunk relabels the neighbouring chunks its halo
        (2r + N + 1 voxels) reaches, to know which halo voxels are kept: pass 2 then costs up to 27
        labellings per chunk while 2r + N + 1 <= the chunk size. Default
        :data:`volseg.postprocess.options.DEFAULT_CLOSE`; 0 = none.
    min_size : int, optional
        26-connected components of fewer voxels are removed (whole volume). Default
        :data:`volseg.postprocess.options.DEFAULT_MIN_SIZE`.
    fill_holes : int, optional
        N: 2D holes of at most N pixels in every axis-aligned slice of the kept mask (tunnels
        through sheets, :func:`~volseg.postprocess.kernels.fill_slice_holes`) and 6-connected
        background components not touching the border (cavities) of at most N voxels are
        filled. Default
        :data:`volseg.postprocess.options.DEFAULT_FILL_HOLES`.
    chunks : int or (z, y, x)
        Output chunks = blocks of both passes.
    scheduler, workers, part
        As for every block-wise command.
    overwrite : bool
        Replace an output made with other settings (the same settings resume).

    Returns
    -------
    dict
        ``{"output", "components", "components_removed", "cavities_filled", "chunks_total",
        "chunks_done_before", "chunks_written", "seconds"}``.
    """
    from volseg.geometry import select_part
    from volseg.inference.resume import finish_output, open_output, removed_if_empty
    from volseg.io import create_volume, read_meta
    from volseg.io.completion import check_complete
    from volseg.io.outputs import guard_output
    from volseg.io.streaming import parse_chunks
    from volseg.parallel import parse_part, parse_scheduler, parse_workers, run_tasks

    t0 = time.perf_counter()
    part = parse_part(part) if isinstance(part, (str, type(None))) else part
    scheduler, workers = parse_scheduler(scheduler), parse_workers(workers)
    chunks = parse_chunks(chunks)
    guard_output(output, inputs=[pred], kind="volume", overwrite=overwrite)
    check_complete(pred)
    meta = read_meta(pred)
    opts = Options.parse(meta.dtype, threshold=threshold, hysteresis=hysteresis, smooth=smooth,
                         close=close, min_size=min_size, fill_holes=fill_holes, where=str(pred))
    from volseg.io.remote import is_url

    path, shape = (pred if is_url(pred) else os.path.abspath(pred)), tuple(meta.shape)
    chunks = tuple(min(c, s) for c, s in zip(chunks, shape))
    settings = {"command": "postprocess", "input": path, "input_version": _version(path),
                "shape": list(shape), "chunks": list(chunks), **opts.settings()}
    out_path = Path(output)
    tables = load_tables(out_path) if _same_settings(out_path, settings) else None
    if tables is None:  # pass 1 before the output exists: a bad threshold leaves nothing behind
        tables = label_pass(path, shape, chunks, opts, scheduler=scheduler, workers=workers, quiet=quiet)

    def create(tmp: Path, attrs: dict) -> None:
        create_volume(tmp, shape=shape, dtype=np.uint8, chunks=chunks, spacing=meta.spacing,
                      unit=meta.unit, attrs=attrs)

    grid = list(itertools.product(*(range(c) for c in chunk_counts(shape, chunks))))
    out, markers, resumed = open_output(output, settings=settings, create=create, overwrite=overwrite,
                                        total=len(grid))
    if not resumed or load_tables(out) is None:
        save_tables(out, tables)
    _cached_tables.cache_clear()
    stats = [int(v) for v in load_tables(out)["stats"]]
    mine = select_part(grid, part)
    todo = markers.todo(mine)
    token = (out / TABLES / "stats.npy").stat().st_mtime_ns
    task = functools.partial(_write_task, path=path, output=str(out), token=token, chunks=chunks,
                             shape=shape, binarise=opts.binarise, close=opts.close, holes=opts.fill_holes)
    with removed_if_empty(out, resumed or part is not None):
        try:
            run_tasks(task, todo, scheduler=scheduler, workers=workers, description="post-processing",
                      quiet=quiet)
        finally:
            _kept_cached.cache_clear()
    complete = finish_output(output, out, total=len(grid))
    return {"output": str(output), "complete": complete, "components": stats[0], "components_removed": stats[1],
            "cavities_filled": stats[2], "chunks_total": len(mine),
            "chunks_done_before": len(mine) - len(todo), "chunks_written": len(todo),
            "seconds": round(time.perf_counter() - t0, 3)}
