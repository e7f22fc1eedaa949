"""The streamed ``volseg postprocess`` pass: the task graph around :mod:`.kernels`.

Pass 1 (read-only) walks the chunks one group of z-layers at a time on the chosen scheduler;
each task binarises its chunk, labels it and returns its faces, component sizes and flags;
:class:`~volseg.metrics.components.FaceMerger` merges the ids across chunk faces as layers
arrive, so memory holds one layer of faces plus one small table entry per component. The
resulting per-id keep decisions are saved next to the output (``volseg_tables/``, written
atomically), so a resumed run or another ``--part`` reuses them. With ``--fill-holes``, pass 2
(:mod:`.holes`) finds the cavities of the kept, closed mask the same way (``volseg_holes/``).
Pass 3 writes one output chunk per task and its completion marker
(:mod:`volseg.io.resume`); ``--part I/N`` takes a contiguous share of the chunks. The
input is only read.
"""

from __future__ import annotations

import functools
import itertools
import os
import time
from pathlib import Path

import numpy as np

from volseg.geometry import as_slices, chunk_bounds, chunk_counts
from volseg.metrics import components as cc
from volseg.parallel import Execution
from volseg.postprocess.blocks import (TABLES, block_values, cached_tables, clear_caches, concat, load_tables,
                                       offsets)
from volseg.postprocess.holes import CAVITIES, HOLES, filled_chunk, holes_pass
from volseg.postprocess.kernels import component_table, filled_block, summarise_block
from volseg.postprocess.options import Options
from volseg.roi import box_chunks, clip_box

_BATCH_BLOCKS = 256


def _summary_task(index, *, path, chunks, shape, binarise) -> dict:
    start, stop = chunk_bounds(index, chunks, shape)
    values, smoothed = block_values(path, start, stop, shape, binarise)
    if values.dtype.kind == "f":  # a NaN would only show as a range of (nan..nan) later
        from volseg.io.finite import check_array

        check_array(values, path, offset=start, whole=tuple(values.shape) == tuple(shape),
                    hint="a prediction must be finite; predict it again or clean it")
    fg, strong = binarise.masks(smoothed)
    out = summarise_block(fg, strong)
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


def label_pass(path: str, shape, chunks, opts: Options, *, executor) -> dict:
    """Pass 1: the global keep decision of every provisional foreground id, and each chunk's
    offsets (``keep_fg``, ``fg_offsets``, ``stats`` = [components, removed]), on the open
    :class:`volseg.parallel.Executor` ``executor``."""

    counts = chunk_counts(shape, chunks)
    nz, ny, nx = counts
    merger = cc.FaceMerger(counts, connectivity=3)
    sizes: list = []
    strong: list = []
    raw, smoothed = [], []                                     # (lo, hi) of every block
    task = functools.partial(_summary_task, path=path, chunks=chunks, shape=tuple(shape),
                             binarise=opts.binarise)
    layers = executor.layers(task, counts, per_batch=max(1, _BATCH_BLOCKS // (ny * nx)), description="labelling")
    for iz, layer in layers:                                   # layer: (iy, ix) order
        merger.add_layer(iz, {r["index"][1:]: r["fg"] for r in layer})
        sizes.extend(r["fg_size"] for r in layer)
        strong.extend(r["fg_strong"] for r in layer if r["fg_strong"] is not None)
        raw.extend(r["range"] for r in layer)
        smoothed.extend(r["smoothed_range"] for r in layer if "smoothed_range" in r)
    opts.check_range(*_union(raw), where=path)
    if smoothed:
        opts.warn_smoothed_range(*_union(smoothed), where=path)
    final, n, _ = merger.finish()
    size, flag = component_table(final, n, concat(sizes), concat(strong) if strong else None)
    keep = (size >= opts.min_size) & flag
    keep[0] = False
    return {"keep_fg": keep[final], "fg_offsets": offsets(merger, counts),
            "stats": np.array([n, int(np.count_nonzero(~keep[1:]))], dtype=np.int64)}


def save_tables(output: Path, tables: dict, name: str = TABLES) -> None:
    """Write the tables under ``output/name`` atomically (a complete folder or none)."""
    from volseg.io.atomic import remove_path, temp_sibling

    final = output / name
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

    from volseg.io.resume import fingerprint

    try:
        info = json.loads((output / "zarr.json").read_text()).get("attributes", {}).get("volseg", {})
    except (OSError, ValueError):
        return False
    return info.get("fingerprint") == fingerprint(settings)


def _holes(path, out: Path, token: int, shape, chunks, opts, executor, *,
           holes_token=None) -> tuple[int | None, int]:
    """(token of the cavity tables, cavities): pass 2, or the tables a resumed run saved; with
    ``holes_token``, the ``--fill-cavities`` pass after it."""
    name, size = (HOLES, opts.fill_holes) if holes_token is None else (CAVITIES, opts.fill_cavities)
    if size <= 0:
        return None, 0
    if load_tables(out, name) is None:
        save_tables(out, holes_pass(path, str(out), token, shape, chunks, opts, per_batch=_BATCH_BLOCKS,
                                    executor=executor, holes_token=holes_token), name)
    stats = out / name / "stats.npy"
    return stats.stat().st_mtime_ns, int(np.load(stats)[0])


def _write_task(index, *, path, output, token, holes_token, chunks, shape, binarise, close, holes,
                cavities_token=None) -> int:
    """Pass 3: one output chunk, the kept mask repaired and its holes filled, and its marker."""
    import zarr

    from volseg.io.resume import Markers

    index = tuple(index)
    start, stop = chunk_bounds(index, chunks, shape)
    out = filled_chunk(path, output, token, holes_token, index, chunks, shape, binarise, close=close,
                       holes=holes)
    if cavities_token is not None:  # --fill-cavities: the cavities of that mask
        c = cached_tables(output, cavities_token, CAVITIES)
        out = out | filled_block(out, c["fill_bg"], int(c["bg_offsets"][index]))
    out = out.astype(np.uint8)
    if binarise.box is not None:  # --roi: labels inside the box only
        clip_box(out, start, stop, *binarise.box)
    zarr.open_array(os.path.join(output, "0"), mode="r+")[as_slices(start, stop)] = out
    Markers(output).mark(index)
    return 1


def postprocess(pred: str | os.PathLike, output: str | os.PathLike, *, threshold: float | None = None,
                hysteresis=None, smooth: float | None = None, close: int | None = None,
                min_size: int | None = None, fill_holes: int | None = None, chunks=128, topology_report=None,
                execution: Execution | None = None, **repairs) -> dict:
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
    close : int, "Z,Y,X" or "box:Z,Y,X", optional
        Binary closing of the kept components with a ball of radius r (an int), an ellipsoid
        of radii Z,Y,X or a box of odd sides (:func:`volseg.postprocess.repairs.parse_element`):
        closes tunnels (holes through a sheet) up to ~2r voxels across, and gaps up to ~2r
        between surfaces. With repairs or ``fill_holes``, each chunk relabels the neighbouring
        chunks its halo (R + N + 1 voxels, R the repairs' reach) reaches, to know which halo
        voxels are kept: pass 2 then costs up to 27 labellings per chunk while R + N + 1 <= the
        chunk size. Default :data:`volseg.postprocess.options.DEFAULT_CLOSE`; 0 = none.
    **repairs
        ``open``, ``plug_holes``, ``fill_sheet_holes``, ``fill_cavities`` and ``roi`` below (passed on to
        :meth:`volseg.postprocess.options.Options.parse`, which refuses any other name).
    open : int, "Z,Y,X" or "box:Z,Y,X", optional
        Binary opening of the kept components (before the closing), same forms: removes
        bridges and spurs thinner than the element. Default
        :data:`volseg.postprocess.options.DEFAULT_OPEN`; 0 = none.
    plug_holes : bool, optional
        Plug one-voxel holes through sheets by the 2 x 2 x 2 lookup table
        (:func:`volseg.postprocess.repairs.plug_holes`), after the closing. Default
        :data:`volseg.postprocess.options.DEFAULT_PLUG_HOLES`.
    fill_sheet_holes : int, optional
        N: after the plugging, holes of at most N columns (voxels of hole area) through a sheet
        are filled along the sheet's interpolated height map, never where the rim crosses two
        wraps (:func:`volseg.postprocess.sheet_holes.fill_sheet_holes`); its reach
        (:func:`volseg.postprocess.sheet_holes.reach`, 12 voxels for N = 25) joins the repairs'
        halo and must not exceed the chunk. Default
        :data:`volseg.postprocess.options.DEFAULT_FILL_SHEET_HOLES`; 0 = none.
    fill_cavities : int, optional
        M: then the cavities of the result of ``fill_holes`` (filling 2D slice holes can
        enclose new ones) of at most M voxels are filled too (one more labelling pass).
        Default :data:`volseg.postprocess.options.DEFAULT_FILL_CAVITIES`; 0 = none.
    roi : str, optional
        ``z0:z1,y0:y1,x0:x1`` (:func:`volseg.roi.parse_roi`): the labels of the prediction with
        every voxel outside this box read as 0, kept inside the box (0 outside). Components are
        cut at the box (a component that leaves it is counted, kept or removed by its part
        inside), smoothing sees 0 outside. Only the output chunks overlapping the box are
        written and counted (the rest reads as the fill value 0), so it equals the whole
        post-processing of such a masked prediction, restricted to the box.
    topology_report : path, optional
        JSON file listing the output chunks that, each taken alone, still hold tunnels (b1) or
        cavities (b2), with their (z, y, x) voxel coordinates, Euler characteristic and Betti
        numbers (:mod:`volseg.postprocess.topology_check`); written once the output is complete.
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
    execution : volseg.parallel.Execution, optional
        Scheduler, workers, ``--part``, ``overwrite`` (replace an output made with other
        settings; the same settings resume) and ``quiet``; None: the defaults. Both passes run
        in one executor (one process pool or cluster).

    Returns
    -------
    dict
        ``{"output", "components", "components_removed", "cavities_filled", "chunks_total",
        "chunks_done_before", "chunks_written", "seconds"}``, and with ``topology_report``
        ``"topology_report": {"path", "blocks_with_tunnels", "blocks_with_cavities", "tunnels",
        "cavities"}``.

    Examples
    --------
    >>> import numpy as np
    >>> prob = np.full((16, 16, 16), 0.1, np.float32)
    >>> prob[4:12, 4:12, 4:12] = 0.9
    >>> np.save("prob.npy", prob)
    >>> from volseg.parallel import Execution
    >>> summary = postprocess("prob.npy", "clean.zarr", threshold=0.5, chunks=8, execution=Execution.parse(quiet=True))
    >>> summary["complete"], summary["components"]
    (True, 1)
    """

    execution = Execution.of(execution)
    options = dict(threshold=threshold, hysteresis=hysteresis, smooth=smooth, close=close, min_size=min_size,
                   fill_holes=fill_holes, **repairs)
    with execution.executor() as executor:
        return _postprocess(pred, output, options, chunks=chunks, topology_report=topology_report,
                            execution=execution, executor=executor)


def _postprocess(pred, output, options: dict, *, chunks, topology_report, execution, executor) -> dict:
    """:func:`postprocess` in its open executor (``options``: the cleaning options as given)."""
    from volseg.geometry import select_part
    from volseg.io.resume import finish_output, open_output, removed_if_empty
    from volseg.io import create_volume, read_meta
    from volseg.io.completion import check_complete
    from volseg.io.outputs import guard_output
    from volseg.io.streaming import parse_chunks

    t0 = time.perf_counter()
    part, overwrite = execution.part, execution.overwrite
    chunks = parse_chunks(chunks)
    output = guard_output(output, inputs=[pred], kind="volume", overwrite=overwrite)
    report = guard_output(topology_report, inputs=[pred], outputs=[output], kind="json", overwrite=overwrite,
                          option="--topology-report")
    check_complete(pred)
    meta = read_meta(pred)
    opts = Options.parse(meta.dtype, where=str(pred), **options).within(meta.shape)
    from volseg.io.remote import is_url

    path, shape = (pred if is_url(pred) else os.path.abspath(pred)), tuple(meta.shape)
    chunks = tuple(min(c, s) for c, s in zip(chunks, shape))
    opts.check_memory(shape, chunks)
    settings = {"command": "postprocess", "input": path, "input_version": _version(path),
                "shape": list(shape), "chunks": list(chunks), **opts.settings()}
    out_path = Path(output)
    tables = load_tables(out_path) if _same_settings(out_path, settings) else None
    if tables is None:  # pass 1 before the output exists: a bad threshold leaves nothing behind
        tables = label_pass(path, shape, chunks, opts, executor=executor)

    def create(tmp: Path, attrs: dict) -> None:
        create_volume(tmp, shape=shape, dtype=np.uint8, chunks=chunks, spacing=meta.spacing,
                      unit=meta.unit, attrs=attrs)

    grid = list(itertools.product(*(range(c) for c in chunk_counts(shape, chunks))))
    if opts.box is not None:  # --roi: only the chunks in the box are written (the rest is fill, 0)
        grid = box_chunks(*opts.box, chunks)
    out, markers, resumed = open_output(output, settings=settings, create=create, overwrite=overwrite,
                                        total=len(grid))
    if not resumed or load_tables(out) is None:
        save_tables(out, tables)
    clear_caches()
    stats = [int(v) for v in load_tables(out)["stats"]]
    mine = select_part(grid, part)
    todo = markers.todo(mine)
    token = (out / TABLES / "stats.npy").stat().st_mtime_ns
    with removed_if_empty(out, resumed or part is not None):
        try:
            holes_token, cavities = _holes(path, out, token, shape, chunks, opts, executor)
            cavities_token, more = _holes(path, out, token, shape, chunks, opts, executor, holes_token=holes_token)
            cavities += more
            task = functools.partial(_write_task, path=path, output=str(out), token=token,
                                     holes_token=holes_token, chunks=chunks, shape=shape,
                                     binarise=opts.binarise, close=opts.repairs, holes=opts.fill_holes,
                                     cavities_token=cavities_token)
            executor.map(task, todo, description="post-processing")
        finally:
            clear_caches()
    complete = finish_output(output, out, total=len(grid))
    result = {"output": str(output), "complete": complete, "components": stats[0],
              "components_removed": stats[1], "cavities_filled": cavities, "chunks_total": len(mine),
              "chunks_done_before": len(mine) - len(todo), "chunks_written": len(todo)}
    if report is not None and complete:  # the finished mask only (a --part run finishing it)
        from volseg.postprocess.topology_check import topology_report as check

        result["topology_report"] = {"path": str(report), **check(output, report, chunks=chunks,
                                                                   executor=executor)}
    return result | {"seconds": round(time.perf_counter() - t0, 3)}
