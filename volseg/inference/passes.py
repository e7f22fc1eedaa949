"""The two segmentation passes of ``volseg predict`` over a resolved :class:`~volseg.inference.setup.Setup`.

* :func:`predict_fused` (``--stitch``): one fused pass per column tile
  (:mod:`volseg.inference.column_tiles`, :mod:`volseg.inference.engine`): ``group`` tasks compute the
  patches owned by an output chunk and cut their weighted contributions per chunk; ``final``
  tasks sum, normalise, convert and write one chunk, then its marker.
* :func:`predict_store` (default): a patch store of the raw per-patch outputs (float16), one
  task per patch group writing its own contiguous rows, then its marker.

Axis order (z, y, x); sizes in voxels.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from volseg.inference.engine import accumulate, merge_stats, normalise
from volseg.inference.plan import read_box
from volseg.io.resume import Markers, finish_output, open_output, removed_if_empty
from volseg.inference.setup import Setup
from volseg.inference.source import condition_patches, forward_batches, open_cached
from volseg.inference.stitch import OutputSpec, create_volume_output, cut_pieces, write_chunk
from volseg.inference.column_tiles import run_tiled, tile_order
from volseg.parallel import Execution


def group_outputs(setup: Setup, group: Sequence[int],
                  wanted: Sequence[Sequence[int]] | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Model outputs of the patches owned by ``group``: (origins (n, 3), outputs (n, C, D, H, W), stats).

    With ``wanted`` (output chunks) only the :func:`forward_batches` holding a patch that
    overlaps one of them are returned (C order kept); else every patch of the group. The input
    box covering the patches run is read once (through the per-process chunk cache, so chunks
    shared with neighbouring groups are decoded once); patches equal to ``skip_value``
    everywhere get the model's cached answer for a constant patch instead of a forward pass.
    Patches outside ``setup.support`` (``--roi``/``--mask``) are 0. With ``--roi`` a batch
    holding none of the box's patches is not run and one holding some runs whole, so every patch
    keeps the batch, and the bytes, of the full run. With ``--mask`` only the patches under the
    mask run, in batches of their own (the time follows the masked fraction; outputs agree with
    the full run's to float32 rounding, not bit for bit, as batches change the rounding).
    """
    plan = setup.plan
    idx = plan.owned(group)
    need = plan.needed(group, wanted)
    keep = np.ones(need.shape, bool) if setup.support is None else setup.support.patches(idx)
    picked = [b for b in forward_batches(need.shape, setup.runner.batch_size) if need.ravel()[b].any()]
    P = plan.patch
    stats = {"patches": 0, "patches_skipped": 0, "groups": 1, "input_bytes_read": 0,
             "model_seconds": 0.0, "read_seconds": 0.0}
    if setup.support is not None:
        stats["patches_outside_support"] = 0
    if not picked:
        return np.zeros((0, 3), np.int64), np.zeros((0, setup.info.out_channels, *P), np.float32), stats
    comp = np.sort(np.concatenate(picked))
    origins = plan.origins(idx)[comp]
    row = np.full(need.size, -1, np.int64)
    row[comp] = np.arange(len(comp))
    kept = keep.ravel()[comp]
    runs = [b for b in picked if keep.ravel()[b].any()]
    if runs and setup.settings.mask is not None:  # only the masked patches, batched anew
        under = np.concatenate([b[keep.ravel()[b]] for b in runs])
        runs = [under[i:i + setup.runner.batch_size] for i in range(0, len(under), setup.runner.batch_size)]
    out = np.zeros((len(origins), setup.info.out_channels, *P), np.float32)
    if runs:
        read = np.sort(row[np.concatenate(runs)])  # the rows read and run: every row without support
        pos = np.full(len(origins), -1, np.int64)
        pos[read] = np.arange(len(read))
        lo, hi = origins[read].min(0), origins[read].max(0) + np.asarray(P)
        t0 = time.perf_counter()
        box, nbytes = read_box(open_cached(setup.volume, setup.nan_value), lo, hi, plan.shape,
                               key=setup.volume_key, chunks=setup.meta.chunks)
        stats["read_seconds"] = time.perf_counter() - t0
        batch = np.stack([box[tuple(slice(o - l, o - l + p) for o, l, p in zip(origin, lo, P))]
                          for origin in origins[read]])[:, None].astype(np.float32, copy=False)
        if setup.conditions:
            batch = np.concatenate([batch, *condition_patches(setup, origins[read], lo, hi)], axis=1)
        run = np.zeros(len(origins), bool)
        run[read] = True
        if setup.skip_value is not None:
            run[read] = ~np.all(batch.reshape(len(read), -1) == setup.skip_value, axis=1)
        t0 = time.perf_counter()
        for b in runs:
            rows = row[b][run[row[b]]]
            if len(rows):
                out[rows] = setup.runner.predict(batch[pos[rows]])
        skipped = (pos >= 0) & ~run
        if skipped.any():
            out[skipped] = setup.runner.background(setup.skip_value, P)[None]
        stats.update({"patches": int(run.sum()), "patches_skipped": int(skipped.sum()),
                      "input_bytes_read": int(nbytes), "model_seconds": time.perf_counter() - t0})
    out[~kept] = 0
    if setup.support is not None:
        stats["patches_outside_support"] = int((~kept).sum())
    return origins, out, stats


def _group_pieces(setup: Setup, group, wanted) -> dict:
    """Task ``group b`` of the fused pass: weighted contributions per wanted output chunk."""
    origins, out, stats = group_outputs(setup, group, wanted)
    if not len(origins):
        return {"stats": stats}
    return {"stats": stats, **cut_pieces(setup.plan, setup.blender(), origins, out, wanted)}


def _final_chunk(setup: Setup, output: str, spec: OutputSpec, chunk, pieces) -> dict:
    """Task ``final c``: sum the pieces, normalise, convert, write chunk c, then its marker."""
    plan = setup.plan
    start, stop = plan.bounds(chunk)
    size = tuple(b - a for a, b in zip(start, stop))
    wv = np.zeros((setup.info.out_channels, *size), np.float32)
    w = np.zeros(size, np.float32)
    accumulate(wv, w, start, pieces)
    values = normalise(wv, w, where=f"chunk {tuple(chunk)}")
    if setup.support is not None:  # --roi: the fill value outside the box
        setup.support.clip(values, start, stop)
    write_chunk(output, chunk, plan, spec.convert(values))
    Markers(output).mark(chunk)
    return {"chunks": 1}


def _store_group(setup: Setup, store: str, offsets: dict, group) -> dict:
    """Task of the patch-store mode: write the group's outputs to its rows, then its marker."""
    import zarr

    group = tuple(group)
    _, out, stats = group_outputs(setup, group)
    row = offsets[group]
    zarr.open_group(store, mode="r+")["patches"][row:row + len(out)] = out.astype(np.float16)
    Markers(store).mark(group, prefix="g")
    return stats


def predict_fused(setup: Setup, output: str, spec: OutputSpec, execution: Execution, *,
                  record: str | None = None, tasks: tuple | None = None) -> dict:
    """Fused streaming into an OME-Zarr volume (``--stitch``); ``record``: the settings file's text.

    ``tasks``: ``(group_fn(b, wanted), final_fn(output, spec, c, pieces))`` in place of this
    module's (an ensemble's, :mod:`volseg.inference.ensemble`, whose ``setup`` has the ``plan``,
    ``tile``, ``meta`` and ``fingerprint`` of a :class:`Setup`).
    """
    from volseg.geometry import select_part

    tile = setup.tile  # part of the settings: --part splits the chunks in tile order
    settings = {**setup.fingerprint, "command": "predict --stitch", "output": spec.settings(),
                "tile": list(tile) if tile else None}
    order = tile_order(setup.plan, tile)
    if setup.support is not None:  # --roi/--mask: only the chunks they select are tasks
        chosen = set(setup.support.chunks(setup.plan))
        order = [c for c in order if c in chosen]
    total = len(order)
    out, markers, resumed = create_volume_output(output, plan=setup.plan, spec=spec, spacing=setup.meta.spacing,
                                                 unit=setup.meta.unit, settings=settings,
                                                 overwrite=execution.overwrite, total=total, record=record)
    mine = select_part(order, execution.part)
    todo = markers.todo(mine)
    group_stats: list = []
    with removed_if_empty(out, resumed or execution.part is not None):
        if todo:
            from volseg.progress import progress_bar

            with execution.executor() as executor, \
                    progress_bar("predicting", len(todo), quiet=execution.quiet) as bar:
                group_fn, final_fn = tasks or (functools.partial(_group_pieces, setup),
                                               functools.partial(_final_chunk, setup))
                _, group_stats = run_tiled(setup.plan, todo, group_fn, functools.partial(final_fn, str(out), spec),
                                           tile=tile, executor=executor, bar=bar)
    complete = finish_output(output, out, total=total)
    return {"output": str(output), "complete": complete, "mode": "stitch", "chunks_total": len(mine),
            "chunks_done_before": len(mine) - len(todo), "chunks_written": len(todo), **merge_stats(group_stats)}


def predict_store(setup: Setup, output: str, execution: Execution, *, record: str | None = None) -> dict:
    """A patch store of the raw per-patch outputs for ``volseg stitch``; ``record`` as above."""
    from volseg.data.patchstore import create_store, volseg_version
    from volseg.geometry import select_part
    from volseg.inference.settings import SETTINGS_FILE

    plan = setup.plan
    offsets, origins, row = {}, [], 0
    for g in plan.group_list():  # every patch has its row (a grid for stitch); --roi/--mask: some stay 0
        offsets[g] = row
        o = plan.origins(plan.owned(g))
        origins.append(o)
        row += len(o)
    origins = np.concatenate(origins)
    groups = plan.group_list() if setup.support is None else setup.support.groups(plan)
    settings = {**setup.fingerprint, "command": "predict"}

    def create(tmp: Path, attrs: dict) -> None:
        meta = setup.meta
        create_store(tmp, n=len(origins), channels=setup.info.out_channels, patch=plan.patch,
                     dtype="float16", origins=origins,
                     attrs={"kind": "predictions", "source": setup.volume, "source_shape": list(plan.shape),
                            "spacing": list(meta.spacing), "unit": meta.unit, "patch": list(plan.patch),
                            "stride": list(plan.stride), "mode": "grid", "command": "volseg predict",
                            "version": volseg_version(), "blend": setup.settings.blend_settings(),
                            "model": {**setup.info.to_dict(), "run": setup.run}, "n_groups": len(groups), **attrs})
        if record is not None:
            (Path(tmp) / SETTINGS_FILE).write_text(record, encoding="utf-8")

    out, markers, resumed = open_output(output, settings=settings, create=create, overwrite=execution.overwrite,
                                        total=len(groups), unit="patch groups", prefix="g")
    mine = select_part(groups, execution.part)
    todo = markers.todo(mine, prefix="g")
    with removed_if_empty(out, resumed or execution.part is not None):
        with execution.executor() as executor:
            stats = executor.map(functools.partial(_store_group, setup, str(out), offsets), todo,
                                 description="predicting")
    complete = finish_output(output, out, total=len(groups), prefix="g")
    return {"output": str(output), "complete": complete, "mode": "patches", "groups_total": len(mine),
            "groups_done_before": len(mine) - len(todo), "groups_written": len(todo), **merge_stats(stats)}
