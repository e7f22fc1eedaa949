"""Patch-wise DDIM sampling of a whole volume, blended at every denoising step.

Axis order (z, y, x), sizes in voxels. All patches share one x_t volume over the (padded)
domain, stored chunked in the output's ``volseg_work`` group between steps. At each step:

1. every patch predicts eps (or x_0 or v, the model's ``prediction``) from
   ``cat[normalised condition, x_t]`` (read with the patch's
   overlap), grouped by owner chunk as in :mod:`volseg.inference.engine`;
2. the prediction is blended across patches (gaussian by default), so neighbouring patches
   agree (all three kinds are affine in x_t at a step, so blending commutes with converting);
3. each chunk applies :func:`volseg.models.ddim.ddim_step` voxel-wise to its x_t and writes
   x_{t-1} (the last step writes the denormalised x_0 into the output volume).

Noise (x_T and the eta noise of each step) is drawn per chunk of a fixed chunk grid from a
generator seeded by ``(seed, step, chunk index)``, so the result does not depend on block
order, workers or scheduler. Each step runs one fused pass per (y, x) column tile
(:mod:`volseg.inference.column_tiles`, ``--tile``), so the pieces a pass holds are bounded by the
tile's cross-section; x_t itself lives on disk (two float32 arrays the size of the padded
domain, in ``volseg_work``). A group computes the fixed batches of its patches that the tile's
chunks need, so eps, and the result, do not depend on the tile. Each step's chunks get markers (``s<step>-``), so a killed run
resumes at the first unfinished chunk.

``samples`` (``predict --samples N``) runs N chains at once: x_t gets a leading sample axis,
every patch predicts each sample from the same condition, the predictions are blended as N
channels, and the last step writes their mean as the output and their per-voxel standard
deviation (ddof 1, raw target units, float32) to ``OUT.zarr/uncertainty``, an OME-Zarr image of
the output's shape. Sample 0 draws exactly the noise of a single-sample run, so N = 1 is
byte-identical to it; sample s > 0 is seeded by (seed, step, chunk index, s). ``--part`` is refused: step k+1 needs every chunk of
step k; use ``--scheduler distributed`` or ``tcp://...`` to spread one run over a cluster.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from volseg.errors import VolsegError
from volseg.geometry import as_slices
from volseg.inference.engine import (
    accumulate,
    merge_stats,
    normalise,
)
from volseg.inference.plan import Plan, read_box
from volseg.io.resume import Markers, finish_output, open_output, removed_if_empty
from volseg.inference.source import condition_patches, forward_batches, open_cached
from volseg.inference.stitch import cut_pieces
from volseg.inference.column_tiles import run_tiled

WORK = "volseg_work"
UNCERTAINTY = "uncertainty"
_INIT = 0xD1FF
_SAMPLE = 0x5A4D


def sampling_sequence(model_steps, n: int | None) -> list[int]:
    """The ascending timesteps to sample: the model's, or ``n`` of them evenly spread."""
    seq = [int(t) for t in model_steps]
    if n is None or int(n) == len(seq):
        return seq
    n = int(n)
    if not 1 <= n <= len(seq):
        raise VolsegError("--sampling-steps", f"the model was trained on {len(seq)} timesteps; "
                          f"use 1..{len(seq)}, got {n}")
    picks = np.unique(np.round(np.linspace(0, len(seq) - 1, n)).astype(int))
    return [seq[i] for i in picks]


def chunk_noise(seed: int, step: int, chunk, shape, sample: int = 0) -> np.ndarray:
    """Standard normal noise for one chunk, seeded by (seed, step, chunk index) only; sample
    ``s > 0`` of ``predict --samples`` adds ``s`` to the key (sample 0 is the single-sample noise)."""
    key = [int(seed), int(step), *(int(c) for c in chunk)]
    rng = np.random.default_rng(key if not sample else key + [_SAMPLE, int(sample)])
    return rng.standard_normal(tuple(shape), dtype=np.float32)


def _samples_noise(seed: int, step: int, chunk, shape, samples: int) -> np.ndarray:
    return np.stack([chunk_noise(seed, step, chunk, shape, s) for s in range(samples)])


def _work(output: str, k: int):
    import zarr

    return zarr.open_array(os.path.join(output, WORK, f"x{k % 2}"), mode="r+")


def _work_box(arr, start, stop) -> tuple:
    """Index of a (z, y, x) box in a work array: every sample (leading axis) of it; a work array of
    an unfinished run of an older volseg has no sample axis."""
    return (slice(None),) * (arr.ndim - 3) + as_slices(start, stop)


def _read_work(output: str, k: int, start, stop) -> np.ndarray:
    """x_t of a box for every sample: (samples, z, y, x) float32."""
    arr = _work(output, k)
    box = np.asarray(arr[_work_box(arr, start, stop)], np.float32)
    return box.reshape((-1,) + box.shape[-3:])


def _write_work(output: str, k: int, start, stop, values: np.ndarray) -> None:
    arr = _work(output, k)
    arr[_work_box(arr, start, stop)] = values if arr.ndim == 4 else values[0]


def _eps_group(setup, work: Plan, output: str, k: int, t: int, group, wanted) -> dict:
    """Group task: eps of the group's patches from the condition and x_t, cut per chunk."""

    need = work.needed(group, wanted)
    picked = [b for b in forward_batches(need.shape, setup.runner.batch_size) if need.ravel()[b].any()]
    if not picked:
        return {"stats": {"patches": 0, "groups": 1, "input_bytes_read": 0}}
    comp = np.sort(np.concatenate(picked))
    row = np.full(need.size, -1, np.int64)
    row[comp] = np.arange(len(comp))
    origins = work.origins(work.owned(group))[comp]
    lo, hi = origins.min(0), origins.max(0) + np.asarray(work.patch)
    cond, nbytes = read_box(open_cached(setup.volume, setup.nan_value), lo, hi, setup.plan.shape, key=setup.volume_key,
                            chunks=setup.meta.chunks)
    cond = cond.astype(np.float32)
    x_t = _read_work(output, k, lo, hi)
    P = work.patch

    def cut(box):  # (z, y, x) box -> (patches, 1, *patch)
        return np.stack([box[tuple(slice(o - a, o - a + p) for o, a, p in zip(origin, lo, P))]
                         for origin in origins])[:, None]

    # the new axis gives the batches the strides torch has always seen (it picks its convolution
    # by them), so a one-sample run is bit for bit what it was before samples existed
    cond, x_t = cut(cond), [cut(x) for x in x_t]
    if setup.conditions:  # further input channels (data.condition)
        cond = np.concatenate([cond, *condition_patches(setup, origins, lo, hi)], axis=1)
    eps = np.empty((len(origins), len(x_t), *P), np.float32)  # the samples are the channels of the blend
    for b in picked:  # the group's fixed batches, so eps does not depend on the tile or pass
        for s, x in enumerate(x_t):
            eps[row[b], s:s + 1] = setup.runner.eps(cond[row[b]], x[row[b]], t)
    stats = {"patches": len(origins), "groups": 1, "input_bytes_read": int(nbytes)}
    return {"stats": stats, **cut_pieces(work, setup.blender(work), origins, eps, wanted)}


@dataclass(frozen=True)
class _Step:
    """DDIM step ``k`` from alpha-bar ``a_t`` to ``a_next``; ``last`` writes the output."""

    k: int
    a_t: float
    a_next: float
    last: bool


def _step_chunk(setup, work: Plan, output: str, spec, step: _Step, chunk, pieces) -> dict:
    """Final task: blend the predictions over the chunk, take the DDIM step of every sample, write
    x_next (or, at the last step, their mean as the output and their standard deviation)."""
    import torch
    import zarr

    from volseg.models.ddim import ddim_step

    k, last = step.k, step.last
    eta, seed, samples = setup.settings.diffusion.eta, setup.settings.diffusion.seed, setup.settings.diffusion.samples

    start, stop = work.bounds(chunk)
    size = tuple(b - a for a, b in zip(start, stop))
    wv = np.zeros((samples, *size), np.float32)
    w = np.zeros(size, np.float32)
    accumulate(wv, w, start, pieces)
    eps = torch.from_numpy(normalise(wv, w, where=f"chunk {tuple(chunk)}"))
    x_t = torch.from_numpy(_read_work(output, k, start, stop))
    noise = (torch.from_numpy(_samples_noise(seed, k + 1, chunk, size, samples))
             if eta > 0 and not last else None)
    model = setup.runner.model
    x_next = ddim_step(x_t, eps, a_t=step.a_t, a_next=step.a_next, eta=eta, noise=noise,
                       clip=model.x0_range, prediction=model.prediction).float()
    if last:
        with torch.inference_mode():
            img = model.denormalize(x_next[:, None].to(next(model.parameters()).device))[:, 0].cpu().numpy()
        shape = setup.plan.shape
        hi = [min(b, s) for b, s in zip(stop, shape)]
        if all(a < b for a, b in zip(start, hi)):
            crop = img[(slice(None),) + tuple(slice(0, b - a) for a, b in zip(start, hi))]
            mean = crop[0] if samples == 1 else crop.mean(axis=0, dtype=np.float64).astype(np.float32)
            zarr.open_array(os.path.join(output, "0"), mode="r+")[as_slices(start, hi)] = spec.convert(mean[None])
            if samples > 1:
                std = crop.std(axis=0, ddof=1, dtype=np.float64).astype(np.float32)
                zarr.open_array(os.path.join(output, UNCERTAINTY, "0"), mode="r+")[as_slices(start, hi)] = std
    else:
        _write_work(output, k + 1, start, stop, x_next.numpy())
    Markers(output).mark(chunk, prefix=f"s{k}-")
    return {"chunks": 1}


def _init_chunk(setup, output: str, work: Plan, seed: int, samples: int, chunk) -> None:
    """x at the first sampling step for one chunk and every sample: seeded noise, or with the
    model's ``start_t`` the condition diffused to that step
    (:meth:`~volseg.models.diffusion.DiffusionModel.initial_state`)."""
    import torch

    start, stop = work.bounds(chunk)
    noise = _samples_noise(seed, _INIT, chunk, [b - a for a, b in zip(start, stop)], samples)
    model = setup.runner.model
    if model.start_t is not None:
        # a chunk of the padded domain may start past a short axis: read from 0, then crop
        lo = [0 if a >= n else a for a, n in zip(start, setup.plan.shape)]
        cond, _ = read_box(open_cached(setup.volume, setup.nan_value), lo, stop, setup.plan.shape,
                           key=setup.volume_key, chunks=setup.meta.chunks)
        cond = cond[tuple(slice(a - b, None) for a, b in zip(start, lo))]
        with torch.inference_mode():
            device = next(model.parameters()).device
            cond = torch.from_numpy(cond.astype(np.float32))[None, None].to(device)
            noise = np.stack([model.initial_state(cond, torch.from_numpy(n)[None, None].to(device))[0, 0]
                              .float().cpu().numpy() for n in noise])
    _write_work(output, 0, start, stop, noise)
    Markers(output).mark(chunk, prefix="init-")


def sample_volume(setup, output, spec, execution, *, record: str | None = None) -> dict:
    """DDIM-sample the target of a whole volume patch-wise into an OME-Zarr output.

    ``setup`` is the validated :class:`~volseg.inference.setup.Setup` of a diffusion run (its
    ``settings.diffusion``: steps, eta, seed, samples), ``spec`` the image
    :class:`~volseg.inference.output.OutputSpec`, ``execution`` a
    :class:`~volseg.parallel.Execution` (``--part`` is refused), ``record`` the text of the
    settings file written inside a new output. ``samples`` > 1 writes the mean of that many
    samples and their standard deviation in ``OUT/uncertainty``.

    Returns
    -------
    dict
        Output path, steps, chunks computed per step, patches run.
    """
    import shutil

    import zarr

    from volseg.progress import progress_bar

    if execution.part is not None:
        chains = ", and the chains of --samples step together" if setup.settings.diffusion.samples > 1 else ""
        raise VolsegError("--part", f"diffusion sampling needs every chunk of step k before step k+1{chains}, so "
                          "it cannot be split into independent parts; run one job (use --scheduler "
                          "distributed or tcp://HOST:PORT to spread it over a cluster)")
    if setup.skip_value is not None:
        raise VolsegError("--skip-value", "applies to segmentation models only; drop it for a diffusion run")
    sampler = setup.settings.diffusion
    eta, seed, samples = sampler.eta, sampler.seed, sampler.samples
    model = setup.runner.model
    seq = sampling_sequence(model.sampling_timesteps(), sampler.sampling_steps)
    plan = setup.plan
    work = Plan.build(plan.domain, plan.patch, plan.stride, plan.chunks)
    tile = setup.tile
    settings = {**setup.fingerprint, "command": "predict (diffusion)", "output": spec.settings(),
                "timesteps": seq, "eta": eta, "seed": int(seed)}
    if samples > 1:  # a single-sample run keeps the settings (and so the resume) of earlier versions
        settings["samples"] = samples
    steps = list(zip(reversed(seq), reversed([-1] + seq[:-1])))
    last = f"s{len(steps) - 1}-"
    out, markers, resumed = _open_output(output, setup, spec, settings, execution.overwrite,
                                         total=len(work.chunk_list()), prefix=last, record=record)
    out = str(out)
    last_done = len(markers.todo(work.chunk_list(), prefix=last)) == 0
    totals = {}
    with removed_if_empty(out, resumed):
        if not last_done:
            work_dir = os.path.join(out, WORK)
            if not os.path.isdir(work_dir):
                group = zarr.open_group(work_dir, mode="w")
                for name in ("x0", "x1"):
                    group.create_array(name, shape=(samples, *work.shape), chunks=(samples, *work.chunks),
                                       dtype="float32", fill_value=0)
            with execution.executor() as executor:
                todo = markers.todo(work.chunk_list(), prefix="init-")
                executor.map(functools.partial(_init_chunk, setup, out, work, int(seed), samples), todo,
                             description="noise")
                for k, (t, t_next) in enumerate(steps):
                    todo = markers.todo(work.chunk_list(), prefix=f"s{k}-")
                    if not todo:
                        continue
                    step = _Step(k, model.alpha(t), model.alpha(t_next), k == len(steps) - 1)
                    with progress_bar(f"DDIM step {k + 1}/{len(steps)}", len(todo), quiet=execution.quiet) as bar:
                        _, group_stats = run_tiled(
                            work, todo, functools.partial(_eps_group, setup, work, out, k, t),
                            functools.partial(_step_chunk, setup, work, out, spec, step),
                            tile=tile, executor=executor, bar=bar)
                    totals = merge_stats([totals, merge_stats(group_stats)])
            shutil.rmtree(work_dir, ignore_errors=True)
    complete = finish_output(output, out, total=len(work.chunk_list()), prefix=last)
    result = {"output": str(output), "complete": complete, "mode": "diffusion", "steps": len(steps), "timesteps": seq,
              "samples": samples, "chunks_total": len(work.chunk_list()), **totals}
    if samples > 1:
        result["uncertainty"] = os.path.join(str(output), UNCERTAINTY)
    return result


def _open_output(output, setup, spec, settings: dict, overwrite: bool, *, total: int, prefix: str,
                 record: str | None):
    """The output volume (:func:`~volseg.inference.stitch.create_volume_output`), plus with
    ``samples`` > 1 the float32 ``uncertainty`` image of the same shape, chunks and spacing."""
    from volseg.inference.settings import SETTINGS_FILE
    from volseg.io import create_volume

    meta, plan, samples = setup.meta, setup.plan, setup.settings.diffusion.samples

    def create(tmp, attrs: dict) -> None:
        create_volume(tmp, shape=plan.shape, dtype=spec.out_dtype, chunks=plan.chunks,
                      spacing=meta.spacing, unit=meta.unit, attrs={**attrs, "output": spec.settings()})
        if samples > 1:
            create_volume(os.path.join(tmp, UNCERTAINTY), shape=plan.shape, dtype="float32", chunks=plan.chunks,
                          spacing=meta.spacing, unit=meta.unit,
                          attrs={"kind": "uncertainty", "samples": samples,
                                 "meaning": "per-voxel standard deviation (ddof 1) of the samples, "
                                            "in the output's units"})
        if record is not None:
            (Path(tmp) / SETTINGS_FILE).write_text(record, encoding="utf-8")

    return open_output(output, settings=settings, create=create, overwrite=overwrite, total=total,
                       unit="chunks", prefix=prefix)
