"""``volseg predict``: run a trained model over every patch of a volume.

Axis order (z, y, x), sizes in voxels. The patch grid covers the volume with ``--patch`` every
``patch * (1 - overlap)`` voxels, the last patch flush with the far border. Padding policy: an
axis shorter than the patch is mirrored (``numpy.pad(mode="reflect")``) at its far end up to
the patch size and the outputs are cropped back, so the output always has the input's shape;
``pad=False`` (``--no-pad``) refuses such volumes instead.

Two outputs:

* default: a patch store of the raw per-patch outputs (float16, ``kind: "predictions"``, with
  the blend settings) for ``volseg stitch``. Tasks are the patch groups of
  :mod:`volseg.inference.plan` (patches owned by one output-sized block), each writing its own
  contiguous range of patch rows and then its marker.
* ``stitch=True``: fused streaming into an OME-Zarr volume (:mod:`volseg.inference.engine`),
  one pass per (y, x) column tile of ``--tile`` voxels through all z
  (:mod:`volseg.inference.column_tiles`, default 1024, rounded down to whole chunks). Memory is bounded
  by the tile's cross-section (its wavefront of overlap slabs), not by the volume's depth or
  plane; patches straddling a tile border are computed by both tiles (about
  ``(patch - stride) / tile`` extra forwards per axis for a tile that is a multiple of the stride). The output does not depend on the tile
  (same patches, same batches, same summation order per chunk). ``--part I/N`` takes a
  contiguous share of the chunks in tile order, so ``--tile`` is part of the output's settings.

Both resume from their markers (same settings), honour ``--part`` and any Dask scheduler.
Diffusion runs are handed to :func:`volseg.inference.diffusion_sampling.sample_volume`.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from volseg.errors import VolsegError
from volseg.inference.blend import Blender, parse_blend, parse_sigma_scale
from volseg.inference.engine import accumulate, merge_stats, normalise, open_session
from volseg.inference.plan import Plan, read_box
from volseg.io.resume import Markers, file_digest, finish_output, open_output, removed_if_empty
from volseg.inference.runner import Runner, model_info
from volseg.inference.source import condition_patches, condition_volumes, forward_batches, open_cached  # noqa: F401
from volseg.inference.stitch import (
    OutputSpec,
    create_volume_output,
    cut_pieces,
    output_spec,
    write_chunk,
)
from volseg.inference.column_tiles import (
    DEFAULT_TILE,
    parse_tile,
    run_tiled,
    tile_chunks,
    tile_order,
)

def threads_per_worker(workers: int | None) -> int:
    """torch threads per worker: ``OMP_NUM_THREADS`` when set, else cores // workers (at least 1)."""
    from volseg.parallel import parse_workers

    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, parse_workers(None) // parse_workers(workers))


def default_patch(payload: dict) -> tuple:
    """The training patch recorded in a run (``data.patch``), else 64 on every side."""
    data = (payload.get("config") or {}).get("data") or {}
    patch = data.get("patch")
    if patch:
        return tuple(int(p) for p in (list(patch) * 3 if len(patch) == 1 else patch))
    return (64, 64, 64)


@dataclass(frozen=True)
class Setup:
    """Everything a predict pass needs, validated (see :func:`prepare`)."""

    run: str
    model_file: str
    volume: str
    info: dict
    meta: object
    plan: Plan
    runner: Runner
    blend: dict
    skip_value: float | None
    settings: dict = field(default_factory=dict)
    volume_key: str = ""
    tile: tuple[int, int] | None = None
    nan_value: float | None = None
    conditions: tuple = ()


def prepare(run, volume, *, patch=None, overlap: float = 0.5, batch_size: int = 4, tta: bool = False,
            amp: bool = False, device: str = "auto", blend: str = "gaussian", sigma_scale: float = 0.125,
            skip_value: float | None = None, chunks=128, pad: bool = True,
            workers: int | None = None, tile=DEFAULT_TILE, nan_value: float | None = None) -> Setup:
    """Validate a predict request (model, volume, patch, overlap, device) before any output exists."""
    from volseg.geometry import parse_size3, stride_from_overlap
    from volseg.io import open_volume, read_meta
    from volseg.io.finite import count_nonfinite, parse_nan_value, warn_replaced
    from volseg.io.streaming import parse_chunks
    from volseg.models import load_run, model_depth, resolve_device
    from volseg.models import model_file as _run_model_file
    from volseg.models.exported import exported_payload, is_exported

    if is_exported(run):  # a file written by `volseg export`: its metadata stands for the run
        payload, model_file = exported_payload(run), str(run)
        if amp and payload["export"]["export_format"] == "onnx":
            raise VolsegError("--amp", "applies to torch models; an ONNX model runs in the precision "
                              "it was exported in")
    else:
        payload, model_file = load_run(run), str(_run_model_file(run))
    cfg = dict(payload["model_config"])
    kind = "diffusion" if str(cfg.get("type", "unet")).lower() in ("diffusion", "sg") else "unet"
    depth = model_depth(cfg)
    meta = read_meta(volume)
    if len(meta.shape) != 3:
        raise VolsegError(volume, f"has {len(meta.shape)} dimensions {meta.shape}; predict needs a 3D (z, y, x) volume")
    patch = parse_size3(patch, name="--patch") if patch is not None else default_patch(payload)
    bad = [p for p in patch if p % 2 ** depth]
    if bad:
        raise VolsegError("--patch", f"{'x'.join(map(str, patch))}: every side must be divisible by "
                          f"2**depth = {2 ** depth} for this model; e.g. {max(2 ** depth, patch[0] // 2 ** depth * 2 ** depth)}")
    stride = stride_from_overlap(patch, overlap)
    if not pad and any(p > s for p, s in zip(patch, meta.shape)):
        raise VolsegError("--patch", f"{'x'.join(map(str, patch))} is larger than the volume "
                          f"{'x'.join(map(str, meta.shape))} and padding is off (--no-pad); use a smaller "
                          "--patch or allow mirror padding")
    from volseg.memlimit import check_patch_batch

    check_patch_batch(patch, batch_size)
    chunks = parse_chunks(chunks)
    dev = str(resolve_device(device))
    threads = threads_per_worker(workers) if dev == "cpu" else None
    runner = Runner(model_file, device=dev, batch_size=batch_size, amp=amp, tta=tta, threads=threads)
    amp = runner.amp  # fp32 where --amp does not pay off (one warning)
    info = model_info(runner.model)
    names = [str(n) for n in cfg.get("condition") or []]
    if info["in_channels"] != 1 + len(names):
        raise VolsegError(run, f"the model expects {info['in_channels']} input channels; predict feeds "
                          "single-channel (z, y, x) volumes")
    conditions = condition_volumes(volume, names, meta.shape)
    if skip_value is not None:
        skip_value = float(skip_value)
    plan = Plan.build(meta.shape, patch, stride, chunks)
    tile = tile_chunks(parse_tile(tile), plan)
    blend = {"mode": parse_blend(blend), "sigma_scale": parse_sigma_scale(sigma_scale)}
    from volseg.io.outputs import input_stamp
    from volseg.io.remote import is_url, volume_key

    settings = {"model_sha256": file_digest(model_file), "volume": volume if is_url(volume) else os.path.abspath(volume),
                "volume_stamp": input_stamp(volume), "volume_shape": list(meta.shape), "patch": list(patch),
                "overlap": float(overlap),
                "stride": list(stride), "tta": bool(tta), "amp": bool(amp), "skip_value": skip_value,
                "chunks": list(plan.chunks), "blend": blend, "pad": bool(pad), "kind": kind}
    nan_value = parse_nan_value(nan_value)
    if nan_value is not None:
        settings["nan_value"] = nan_value
        warn_replaced(volume, count_nonfinite(open_volume(volume)), nan_value)
    key = f"{volume_key(volume)}@{nan_value}"
    if conditions:  # only then: the settings of single-input runs stay as they were
        settings["condition"] = names
        settings["condition_stamps"] = [input_stamp(p) for p in conditions]
    return Setup(str(run), model_file, str(volume), info, meta, plan, runner, blend, skip_value, settings, key,
                 tile, nan_value, tuple(conditions))



# --------------------------------------------------------------------------- patch computation
def group_outputs(setup: Setup, group: Sequence[int],
                  wanted: Sequence[Sequence[int]] | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Model outputs of the patches owned by ``group``: (origins (n, 3), outputs (n, C, D, H, W), stats).

    With ``wanted`` (output chunks) only the :func:`forward_batches` holding a patch that
    overlaps one of them are run (C order kept); else every patch of the group. The input box
    covering those patches is read once (through the per-process chunk cache, so chunks shared
    with neighbouring groups are decoded once); patches equal to ``skip_value`` everywhere get
    the model's cached answer for a constant patch instead of a forward pass.
    """
    plan = setup.plan
    idx = plan.owned(group)
    need = plan.needed(group, wanted)
    picked = [b for b in forward_batches(need.shape, setup.runner.batch_size) if need.ravel()[b].any()]
    P = plan.patch
    stats = {"patches": 0, "patches_skipped": 0, "groups": 1, "input_bytes_read": 0,
             "model_seconds": 0.0, "read_seconds": 0.0}
    if not picked:
        return np.zeros((0, 3), np.int64), np.zeros((0, setup.info["out_channels"], *P), np.float32), stats
    comp = np.sort(np.concatenate(picked))
    origins = plan.origins(idx)[comp]
    lo, hi = origins.min(0), origins.max(0) + np.asarray(P)
    t0 = time.perf_counter()
    box, nbytes = read_box(open_cached(setup.volume, setup.nan_value), lo, hi, plan.shape, key=setup.volume_key,
                           chunks=setup.meta.chunks)
    read_s = time.perf_counter() - t0
    batch = np.stack([box[tuple(slice(o - l, o - l + p) for o, l, p in zip(origin, lo, P))]
                      for origin in origins])[:, None].astype(np.float32, copy=False)
    if setup.conditions:
        batch = np.concatenate([batch, *condition_patches(setup, origins, lo, hi)], axis=1)
    run = np.ones(len(origins), bool)
    if setup.skip_value is not None:
        run = ~np.all(batch.reshape(len(origins), -1) == setup.skip_value, axis=1)
    row = np.full(need.size, -1, np.int64)
    row[comp] = np.arange(len(comp))
    out = np.empty((len(origins), setup.info["out_channels"], *P), np.float32)
    t0 = time.perf_counter()
    for b in picked:
        rows = row[b][run[row[b]]]
        if len(rows):
            out[rows] = setup.runner.predict(batch[rows])
    if (~run).any():
        out[~run] = setup.runner.background(setup.skip_value, P)[None]
    stats.update({"patches": int(run.sum()), "patches_skipped": int((~run).sum()),
                  "input_bytes_read": int(nbytes), "model_seconds": time.perf_counter() - t0,
                  "read_seconds": read_s})
    return origins, out, stats


def _group_pieces(setup: Setup, group, wanted) -> dict:
    """Task ``group b`` of the fused pass: weighted contributions per wanted output chunk."""
    plan = setup.plan
    origins, out, stats = group_outputs(setup, group, wanted)
    if not len(origins):
        return {"stats": stats}
    blender = Blender(plan.starts, plan.patch, setup.blend["mode"], sigma_scale=setup.blend["sigma_scale"])
    return {"stats": stats, **cut_pieces(plan, blender, origins, out, wanted)}


def _final_chunk(setup: Setup, output: str, spec: OutputSpec, chunk, pieces) -> dict:
    """Task ``final c``: sum the pieces, normalise, convert, write chunk c, then its marker."""
    plan = setup.plan
    start, stop = plan.bounds(chunk)
    size = tuple(b - a for a, b in zip(start, stop))
    wv = np.zeros((setup.info["out_channels"], *size), np.float32)
    w = np.zeros(size, np.float32)
    accumulate(wv, w, start, pieces)
    write_chunk(output, chunk, plan, spec.convert(normalise(wv, w, where=f"chunk {tuple(chunk)}")))
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


# --------------------------------------------------------------------------------- entry point
def predict(run, volume, output, *, patch=None, overlap: float = 0.5, batch_size: int = 4,
            tta: bool = False, amp: bool = False, device: str = "auto", stitch: bool = False,
            blend: str = "gaussian", sigma_scale: float = 0.125, dtype: str = "float32",
            threshold: float | None = None, channel: int | None = None,
            skip_value: float | None = None, chunks=128, pad: bool = True,
            sampling_steps: int | None = None, eta: float = 0.0, seed: int = 0, samples: int = 1,
            scheduler: str = "threads", workers: int | None = None, part=None,
            tile=DEFAULT_TILE, overwrite: bool = False, quiet: bool = False,
            nan_value: float | None = None, whole: bool = True) -> dict:
    """Predict a whole volume patch by patch (see the module docstring).

    Parameters
    ----------
    run : path
        Run directory (or ``model.pt``) of a trained UNet or diffusion model.
    volume : path
        Any 3D volume :func:`volseg.io.open_volume` reads, (z, y, x).
    output : path
        Patch store (default) or, with ``stitch``, an OME-Zarr volume of the input's shape.
    patch, overlap
        Patch size (default the run's training patch, else 64; sides divisible by
        2**depth) and fractional overlap in [0, 1).
    batch_size, tta, amp, device
        Patches per forward pass, 8-flip mirroring TTA, autocast, ``auto|cpu|cuda|cuda:N``.
    blend, sigma_scale
        Blending window (``gaussian``, ``hann``, ``constant``, ``crop``), gaussian sigma / patch.
    dtype, threshold, channel
        Output conversion (see :func:`volseg.inference.stitch.output_spec`).
    skip_value : float, optional
        Patches whose input is all this value get the model's answer for a constant patch.
    chunks : int or (z, y, x)
        Output chunk size; the unit of tasks, markers and parts.
    pad : bool
        Mirror-pad axes shorter than the patch (False: refuse them).
    sampling_steps, eta, seed
        DDIM settings for diffusion runs.
    samples : int
        Diffusion runs: average this many samples (different seeded noise) and write their
        per-voxel standard deviation to ``OUT/uncertainty``; 1 (default) is one sample.
    scheduler, workers, part, overwrite, quiet
        Dask execution, ``--part I/N``, replace an output made with other settings, no progress.
    tile : int, "YxX", (y, x) or None
        Column tile (y, x) in voxels for ``stitch`` and diffusion runs (rounded down to whole
        chunks); ``0``/``None`` processes the whole cross-section in one pass.
    nan_value : float, optional
        Read NaN/Inf input voxels as this value (warned once with the count); default None
        refuses a float input holding any (:mod:`volseg.io.finite`).
    whole : bool
        A run trained on whole resized volumes (``data.patch: null``) resizes the input to its
        training shape, runs once and resizes the output back (:mod:`volseg.inference.whole`);
        False predicts such a run patch-wise at the input's own size.

    Returns
    -------
    dict
        Summary: output path, counts of patches/chunks computed and skipped, seconds,
        input bytes read per input byte.
    """
    from volseg.parallel import parse_part, parse_scheduler, parse_workers

    from volseg.inference.diffusion_sampling import parse_samples

    t0 = time.perf_counter()
    samples = parse_samples(samples)
    part = parse_part(part) if isinstance(part, (str, type(None))) else part
    scheduler = parse_scheduler(scheduler)
    workers = parse_workers(workers)
    from volseg.io.identity import local_path
    from volseg.io.outputs import guard_output

    output = local_path(output)  # file://: the local path, with every local guard and rename
    if stitch:  # refuse a bad -o before loading anything (the kind is checked again below)
        guard_output(output, inputs=[run, volume], kind="volume", overwrite=overwrite)
    from volseg.io.completion import check_complete

    check_complete(volume)  # an unfinished output (killed, one --part) is no input: its gaps read as 0
    from volseg.inference.whole import predict_whole, whole_shape

    shape = whole_shape(run) if whole else None
    if shape is not None:
        return predict_whole(run, volume, output, shape, predict_once=predict, patch=patch, part=part,
                             threshold=threshold, channel=channel, chunks=chunks, overwrite=overwrite, batch_size=batch_size,
                             tta=tta, amp=amp, device=device, dtype=dtype, sampling_steps=sampling_steps,
                             eta=eta, seed=seed, samples=samples, scheduler=scheduler, workers=workers,
                             quiet=quiet, nan_value=nan_value)
    setup = prepare(run, volume, patch=patch, overlap=overlap, batch_size=batch_size, tta=tta, amp=amp,
                    device=device, blend=blend, sigma_scale=sigma_scale, skip_value=skip_value,
                    chunks=chunks, pad=pad, workers=workers, tile=tile, nan_value=nan_value)
    guard_output(output, inputs=[run, volume], overwrite=overwrite,
                 kind="volume" if stitch or setup.info["kind"] == "diffusion" else "patches")
    if setup.info["kind"] == "diffusion":
        from volseg.inference.diffusion_sampling import sample_volume

        result = sample_volume(setup, output, dtype=dtype, threshold=threshold, channel=channel,
                               sampling_steps=sampling_steps, eta=eta, seed=seed, samples=samples,
                               scheduler=scheduler,
                               workers=workers, part=part, overwrite=overwrite, quiet=quiet)
    elif samples != 1:
        raise VolsegError("--samples", f"{samples}: averaging samples applies to diffusion runs; a UNet "
                          "is deterministic, drop --samples (or use --tta)")
    elif stitch:
        result = _predict_fused(setup, output, dtype=dtype, threshold=threshold, channel=channel,
                                scheduler=scheduler, workers=workers, part=part, overwrite=overwrite,
                                quiet=quiet)
    else:
        for option, value in (("--threshold", threshold), ("--channel", channel)):
            if value is not None:
                raise VolsegError(option, "applies to the blended volume: add --stitch, or pass it to "
                                  "`volseg stitch` when stitching this patch store")
        result = _predict_store(setup, output, scheduler=scheduler, workers=workers, part=part,
                                overwrite=overwrite, quiet=quiet)
    result["seconds"] = round(time.perf_counter() - t0, 3)
    nbytes = int(np.prod(setup.meta.shape)) * setup.meta.dtype.itemsize
    result["input_bytes_read_per_byte"] = round(result.get("input_bytes_read", 0) / max(1, nbytes), 4)
    return result


def _predict_fused(setup: Setup, output, *, dtype, threshold, channel, scheduler, workers, part,
                   overwrite, quiet) -> dict:
    from volseg.geometry import select_part

    spec = output_spec(setup.info["out_channels"], dtype=dtype, threshold=threshold, channel=channel,
                       image=setup.info.get("output") == "image")
    tile = setup.tile  # part of the settings: --part splits the chunks in tile order
    settings = {**setup.settings, "command": "predict --stitch", "output": spec.settings(),
                "tile": list(tile) if tile else None}
    total = len(setup.plan.chunk_list())
    out, markers, resumed = create_volume_output(output, plan=setup.plan, spec=spec, spacing=setup.meta.spacing,
                                                 unit=setup.meta.unit, settings=settings, overwrite=overwrite,
                                                 total=total)
    mine = select_part(tile_order(setup.plan, tile), part)
    todo = markers.todo(mine)
    group_stats: list = []
    with removed_if_empty(out, resumed or part is not None):
        if todo:
            from volseg.progress import progress_bar

            with open_session(scheduler, workers) as session, \
                    progress_bar("predicting", len(todo), quiet=quiet) as bar:
                _, group_stats = run_tiled(setup.plan, todo, functools.partial(_group_pieces, setup),
                                           functools.partial(_final_chunk, setup, str(out), spec), tile=tile,
                                           session=session, bar=bar)
    complete = finish_output(output, out, total=total)
    stats = merge_stats(group_stats)
    return {"output": str(output), "complete": complete, "mode": "stitch", "chunks_total": len(mine),
            "chunks_done_before": len(mine) - len(todo), "chunks_written": len(todo), **stats}


def _predict_store(setup: Setup, output, *, scheduler, workers, part, overwrite, quiet) -> dict:
    from volseg.data.patchstore import create_store, volseg_version
    from volseg.geometry import select_part
    from volseg.parallel import run_tasks

    plan = setup.plan
    groups = plan.group_list()
    offsets, origins, row = {}, [], 0
    for g in groups:
        offsets[g] = row
        o = plan.origins(plan.owned(g))
        origins.append(o)
        row += len(o)
    origins = np.concatenate(origins)
    settings = {**setup.settings, "command": "predict"}

    def create(tmp: Path, attrs: dict) -> None:
        meta = setup.meta
        create_store(tmp, n=len(origins), channels=setup.info["out_channels"], patch=plan.patch,
                     dtype="float16", origins=origins,
                     attrs={"kind": "predictions", "source": setup.volume, "source_shape": list(plan.shape),
                            "spacing": list(meta.spacing), "unit": meta.unit, "patch": list(plan.patch),
                            "stride": list(plan.stride), "mode": "grid", "command": "volseg predict",
                            "version": volseg_version(), "blend": setup.blend,
                            "model": {**setup.info, "run": setup.run}, "n_groups": len(groups), **attrs})

    out, markers, resumed = open_output(output, settings=settings, create=create, overwrite=overwrite,
                                        total=len(groups), unit="patch groups", prefix="g")
    mine = select_part(groups, part)
    todo = markers.todo(mine, prefix="g")
    with removed_if_empty(out, resumed or part is not None):
        stats = run_tasks(functools.partial(_store_group, setup, str(out), offsets), todo, scheduler=scheduler,
                          workers=workers, description="predicting", quiet=quiet)
    complete = finish_output(output, out, total=len(groups), prefix="g")
    return {"output": str(output), "complete": complete, "mode": "patches", "groups_total": len(mine),
            "groups_done_before": len(mine) - len(todo), "groups_written": len(todo), **merge_stats(stats)}
