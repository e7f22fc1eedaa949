"""The streamed nnU-Net pass: nnU-Net's sliding window over a volume of any size, equal to nnU-Net.

An :class:`~volseg.inference.nnunet_setup.NnunetJob` (crop box, statistics, nnU-Net's tiles as
a :class:`~volseg.inference.plan.Plan`) runs through the fused pass machinery
(:func:`volseg.inference.column_tiles.run_tiled`: groups, windows, column tiles, markers,
``--part`` and resume), with two kernels of its own:

``group`` (:func:`_group_pieces`)
    reads the raw box of the tiles it owns (only the part inside the crop box), normalises it
    with the streamed statistics, pads with zeros *after* normalising (as nnU-Net pads the
    normalised crop), runs every fold separately (mirrored as nnU-Net when ``--tta``) and cuts
    each tile's *unweighted* float32 logits per wanted output chunk, with the tile's origin.
``final`` (:func:`_final_chunk`)
    per fold, sums the pieces of one output chunk (inside the crop box) in nnU-Net's tile order
    (lexicographic in nnU-Net's transposed axes) into float16 buffers exactly as nnU-Net's
    predictor (:func:`volseg.inference.nnunet_grid.add_tile`), divides, averages the folds in
    float16, applies softmax (sigmoid for regions) in float32, puts nnU-Net's background
    outside the crop, converts (one label's probability, or the label map) and writes the chunk,
    then its marker.

float16 sums depend on the order of their terms; summing a voxel's tiles in nnU-Net's order
gives nnU-Net's numbers bit for bit per fold, whatever the chunking. Memory per task is bounded
by the chunk and the tiles touching it (``8 * folds * classes`` float32 values per voxel of
the chunk at the default overlap), never by the volume. Axis order (z, y, x); units voxels.
"""

from __future__ import annotations

import functools
import time

import numpy as np

from volseg.inference import nnunet_grid as grid
from volseg.inference.nnunet_setup import NnunetJob
from volseg.inference.output import OutputSpec, output_spec


def nnunet_spec(job: NnunetJob, output_options) -> OutputSpec:
    """The output of ``--label``: one label's probability (``--dtype``, ``--threshold``) or the label map."""
    if job.channel is None:
        return OutputSpec("labels", "uint8", None, None)
    return output_spec(job.model.out_channels, dtype=output_options.dtype, threshold=output_options.threshold,
                       channel=job.channel)


def _tile_logits(job: NnunetJob, image: np.ndarray, lo: np.ndarray, origins: np.ndarray) -> np.ndarray:
    """(n, folds, C, *patch) float32 logits of the tiles at ``origins`` of ``image`` (starting at ``lo``)."""
    from volseg.inference.runner import forward_turn, set_torch_threads

    model, plan = job.model, job.plan
    set_torch_threads(job.threads)  # per calling thread: a dask worker thread has its own OpenMP count
    back = tuple(int(a) for a in np.argsort(job.transpose))
    out = np.empty((len(origins), len(model.folds), model.out_channels, *plan.patch), np.float32)
    for first in range(0, len(origins), job.batch_size):
        rows = origins[first:first + job.batch_size]
        batch = np.stack([image[tuple(slice(o - l, o - l + p) for o, l, p in zip(origin, lo, plan.patch))]
                          .transpose(job.transpose) for origin in rows])[:, None]
        for k in range(len(model.folds)):
            with forward_turn(job.device, job.threads):
                logits = model.logits(batch, fold=k).cpu().numpy()
            out[first:first + len(rows), k] = logits.transpose(0, 1, *(2 + b for b in back))
    return out


def _group_pieces(job: NnunetJob, group, wanted) -> dict:
    """Task ``group b``: the owned tiles' per-fold logits, cut per wanted chunk (see the module docstring)."""
    from volseg.inference.plan import read_box
    from volseg.inference.source import open_cached

    plan = job.plan
    need = plan.needed(group, wanted)
    origins = plan.origins(plan.owned(group))[need.ravel()]
    stats = {"patches": int(len(origins)), "groups": 1, "input_bytes_read": 0, "model_seconds": 0.0,
             "read_seconds": 0.0}
    if not len(origins):
        return {"stats": stats}
    patch = np.asarray(plan.patch)
    lo, hi = origins.min(0), origins.max(0) + patch
    box_lo, box_hi = np.array([b[0] for b in job.box]), np.array([b[1] for b in job.box])
    rlo, rhi = np.maximum(lo, box_lo), np.minimum(hi, box_hi)
    t0 = time.perf_counter()
    raw, nbytes = read_box(open_cached(job.volume, job.nan_value), rlo, rhi, job.shape, key=job.volume_key,
                           chunks=job.in_chunks)
    image = np.zeros(tuple(int(v) for v in hi - lo), np.float32)  # nnU-Net's zero padding of the crop
    image[tuple(slice(int(a - l), int(b - l)) for a, b, l in zip(rlo, rhi, lo))] = \
        job.model.normalise(raw[None], job.stats, mask=job.mask_box(rlo, rhi), where=job.volume)[0]
    t1 = time.perf_counter()
    logits = _tile_logits(job, image, lo, origins)
    stats.update(input_bytes_read=int(nbytes), read_seconds=t1 - t0, model_seconds=time.perf_counter() - t1)
    out: dict = {"stats": stats}
    for chunk in wanted:
        start, stop = plan.bounds(chunk)
        c_lo, c_hi = np.maximum(start, box_lo), np.minimum(stop, box_hi)
        entries = []
        for origin, values in zip(origins, logits):
            e_lo, e_hi = np.maximum(c_lo, origin), np.minimum(c_hi, origin + patch)
            if np.all(e_hi > e_lo):
                cut = values[(slice(None), slice(None)) + tuple(slice(int(a - o), int(b - o))
                                                                for a, b, o in zip(e_lo, e_hi, origin))]
                entries.append((tuple(int(v) for v in origin), tuple(int(v) for v in e_lo), np.ascontiguousarray(cut)))
        out[tuple(int(c) for c in chunk)] = tuple(entries)
    return out


def _chunk_probabilities(job: NnunetJob, start, stop, entries) -> np.ndarray:
    """(C, *chunk) float32 probabilities of one output chunk from its tiles' logit pieces."""
    model = job.model
    size = tuple(int(b - a) for a, b in zip(start, stop))
    probs = np.zeros((model.out_channels, *size), np.float32)
    if not model.regions:
        probs[0] = 1  # background outside the crop, as nnU-Net's revert_cropping_on_probabilities
    lo = np.maximum(start, [b[0] for b in job.box])
    hi = np.minimum(stop, [b[1] for b in job.box])
    if not entries or np.any(hi <= lo):
        return probs
    region = tuple(int(v) for v in hi - lo)
    weight = grid.gaussian(job.model.patch_size).transpose(np.argsort(job.transpose))
    order = sorted(entries, key=lambda e: tuple(e[0][a] for a in job.transpose))  # nnU-Net's tile order
    folds = None
    for k in range(len(model.folds)):
        logits = np.zeros((model.out_channels, *region), np.float16)
        weights = np.zeros(region, np.float16)
        for origin, corner, values in order:
            shape = values.shape[2:]
            where = tuple(slice(int(c - l), int(c - l) + n) for c, l, n in zip(corner, lo, shape))
            part = tuple(slice(int(c - o), int(c - o) + n) for c, o, n in zip(corner, origin, shape))
            grid.add_tile(logits, weights, values[k], weight[part], where)
        logits = grid.finish_tiles(logits, weights)
        folds = logits if folds is None else folds + logits
    folds /= len(model.folds)
    inside = tuple(slice(int(a - s), int(b - s)) for a, b, s in zip(lo, hi, start))
    probs[(slice(None),) + inside] = model.activation(folds, axis=0).numpy()
    return probs


def _final_chunk(job: NnunetJob, output: str, spec: OutputSpec, chunk, pieces) -> dict:
    """Task ``final c``: blend chunk c as nnU-Net, convert, write it, then its marker."""
    from volseg.inference.stitch import write_chunk
    from volseg.io.resume import Markers

    start, stop = job.plan.bounds(chunk)
    entries = [e for piece in pieces if piece for e in piece]
    probs = _chunk_probabilities(job, start, stop, entries)
    if spec.kind == "labels":
        block = job.model.segmentation(probs, axis=0).astype(np.uint8)
    else:
        block = spec.convert(probs)
    if job.roi is not None:  # --roi: 0 outside the box
        from volseg.roi import clip_box

        block = clip_box(block, start, stop, *job.roi)
    write_chunk(output, chunk, job.plan, block)
    Markers(output).mark(chunk)
    return {"chunks": 1}


def _background_chunk(job: NnunetJob, output: str, spec: OutputSpec, chunk) -> dict:
    """Task of a chunk no tile touches (outside the padded crop): nnU-Net's background."""
    return _final_chunk(job, output, spec, chunk, [])


def predict_nnunet(job: NnunetJob, fingerprint: dict, tile, meta, output: str, spec: OutputSpec,
                   execution, executor, record: str | None = None) -> dict:
    """Write nnU-Net's prediction of ``job`` into the OME-Zarr volume ``output`` (resumable).

    ``fingerprint`` (provenance, crop box, statistics, settings) is recorded in the output's
    attributes; ``tile`` is the column tile in chunks, ``meta`` the volume's
    :class:`~volseg.io.volmeta.VolumeMeta` (spacing and unit of the output), ``record`` the
    text of the settings file written inside the new volume; ``executor`` the command's open
    :class:`volseg.parallel.Executor` (``execution`` gives ``--part``, ``--overwrite``, ``--quiet``).
    """
    from volseg.geometry import select_part
    from volseg.inference.column_tiles import run_tiled, tile_order
    from volseg.inference.engine import merge_stats
    from volseg.inference.stitch import create_volume_output
    from volseg.io.resume import finish_output, removed_if_empty
    from volseg.progress import progress_bar

    plan = job.plan
    settings = {**fingerprint, "command": "predict nnunet", "output": spec.settings()}
    order = tile_order(plan, tile)
    if job.roi is not None:  # --roi: only the box's chunks are tasks (and count for completion)
        from volseg.roi import box_chunks

        chosen = set(box_chunks(*job.roi, plan.chunks))
        order = [c for c in order if c in chosen]
    total = len(order)
    out, markers, resumed = create_volume_output(output, plan=plan, spec=spec, spacing=meta.spacing, unit=meta.unit,
                                                 settings=settings, overwrite=execution.overwrite, total=total,
                                                 record=record)
    mine = select_part(order, execution.part)
    todo = markers.todo(mine)
    touched = [c for c in todo if plan.groups_for(c)]
    reached = set(touched)
    empty = [c for c in todo if c not in reached]  # outside the padded crop: background only
    group_stats: list = []
    with removed_if_empty(out, resumed or execution.part is not None):
        if todo:
            final = functools.partial(_final_chunk, job, str(out), spec)
            with progress_bar("predicting (nnU-Net)", len(todo), quiet=execution.quiet) as bar:
                if touched:
                    _, group_stats = run_tiled(plan, touched, functools.partial(_group_pieces, job), final,
                                               tile=tile, executor=executor, bar=bar)
                if empty:
                    executor.map(functools.partial(_background_chunk, job, str(out), spec), empty,
                                 description="background chunks", quiet=True)
                    bar.advance(len(empty))
    complete = finish_output(output, out, total=total)
    return {"output": str(output), "complete": complete, "mode": "nnunet", "chunks_total": len(mine),
            "chunks_done_before": len(mine) - len(todo), "chunks_written": len(todo),
            "crop_box": [list(b) for b in job.box], **merge_stats(group_stats)}
