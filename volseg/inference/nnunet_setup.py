"""Resolve ``volseg predict NNUNET_FOLDER volume`` into an :class:`NnunetJob` before any output exists.

nnU-Net (``nnUNetPredictor.predict_single_npy_array``) transposes a case by the plans'
``transpose_forward``, crops it to the bounding box of its nonzero voxels, normalises the crop
(ZScore with the crop's own mean and std), pads it with zeros to at least the patch size,
tiles it at :func:`volseg.inference.nnunet_grid.steps` and puts the result back with background
outside the crop. :func:`prepare_nnunet` finds the crop box and the statistics in streamed
passes over the volume (one task per input chunk, so memory follows the chunk, not the volume),
plans nnU-Net's tiles in volume coordinates as a :class:`~volseg.inference.plan.Plan` (so the
fused pass's groups, markers, ``--part``, resume and ``--tile`` carry over) and checks the
volume against the model (channels, spacing) and the options against what nnU-Net folders do.

Axis order (z, y, x) for the volume; the plans' patch and spacing are in nnU-Net's transposed
axes and are permuted back here. Units voxels.
"""

from __future__ import annotations

import functools
import math
import os
import sys
from dataclasses import dataclass

import numpy as np

from volseg.errors import VolsegError
from volseg.inference import nnunet_grid as grid
from volseg.inference.plan import Plan

#: Largest crop box (voxels) whose filled nonzero mask is computed in memory (masked ZScore).
MASK_VOXELS = 2**31
_MODELS: dict = {}


@dataclass(frozen=True)
class NnunetJob:
    """Everything the tasks of the nnU-Net pass need; picklable (the model loads per process).

    Attributes
    ----------
    folder, volume, volume_key : str
        The model folder, the input volume and its chunk-cache key.
    model_args : tuple
        ``(folds, checkpoint, tta, device, trust)`` of :class:`~volseg.models.nnunet.NnunetModel`.
    shape, in_chunks : tuple of int
        The volume's shape and storage chunks (z, y, x).
    box : tuple of (int, int)
        nnU-Net's crop box (z, y, x), half-open.
    stats : tuple
        Per input channel, the :class:`ChannelStats` for schemes that need image statistics.
    mask : numpy.ndarray or None
        The filled nonzero mask of the crop box packed along x (``np.packbits(axis=-1)``), for
        ``use_mask_for_norm``; None otherwise.
    plan : Plan
        nnU-Net's tiles in volume coordinates (starts may lie below 0 or past the volume: the
        zero padding of small crops) and the output chunks.
    transpose : tuple of int
        ``transpose_forward``: a (z, y, x) tile becomes nnU-Net's tile by ``tile.transpose``.
    channel : int or None
        The output label's channel; None writes nnU-Net's label map (``--label argmax``).
    batch_size, nan_value, threads
        Tiles per forward pass (1, as nnU-Net: batching changes the float32 rounding of the
        logits, which nnU-Net's float16 sums amplify), the NaN policy of the input and torch
        threads per worker.
    roi : ((int, int, int), (int, int, int)) or None
        ``--roi``: (start, stop) of the only box computed (on the whole volume's grid); 0 outside.
    """

    folder: str
    volume: str
    volume_key: str
    model_args: tuple
    shape: tuple
    in_chunks: tuple
    box: tuple
    stats: tuple
    mask: np.ndarray | None
    plan: Plan
    transpose: tuple
    channel: int | None
    batch_size: int
    nan_value: float | None
    threads: int | None
    roi: tuple | None = None

    @property
    def device(self) -> str:
        """The resolved torch device of the forwards."""
        return str(self.model_args[3])

    @property
    def model(self):
        """The :class:`~volseg.models.nnunet.NnunetModel`, loaded once per process."""
        key = (self.folder, self.model_args)
        if key not in _MODELS:
            import torch

            from volseg.models.nnunet import NnunetModel

            if self.threads:
                torch.set_num_threads(self.threads)
            folds, checkpoint, tta, device, trust = self.model_args
            _MODELS[key] = NnunetModel(self.folder, folds=folds, checkpoint=checkpoint, tta=tta,
                                       device=device, trust=trust)
        return _MODELS[key]

    def mask_box(self, lo, hi) -> np.ndarray | None:
        """The filled nonzero mask over [lo, hi) (inside :attr:`box`), or None without one."""
        if self.mask is None:
            return None
        rel_lo = [int(a) - b for a, (b, _) in zip(lo, self.box)]
        rel_hi = [int(a) - b for a, (b, _) in zip(hi, self.box)]
        packed = self.mask[rel_lo[0]:rel_hi[0], rel_lo[1]:rel_hi[1], rel_lo[2] // 8:(rel_hi[2] + 7) // 8]
        bits = np.unpackbits(packed, axis=-1).astype(bool)
        start = rel_lo[2] - (rel_lo[2] // 8) * 8
        return bits[..., start:start + rel_hi[2] - rel_lo[2]]


def volume_axes(values, transpose) -> tuple:
    """Per-axis ``values`` given in nnU-Net's transposed axes, in the volume's (z, y, x) order."""
    out = [None] * len(transpose)
    for t, axis in enumerate(transpose):
        out[axis] = values[t]
    return tuple(out)


def check_options(settings, output_options) -> None:
    """Refuse the options that do not apply to an nnU-Net folder, naming each one."""
    refuse = {"--amp": settings.amp, "--skip-value": settings.skip_value is not None,
              "--samples": settings.diffusion.samples != 1, "--channel": output_options.channel is not None,
              "--no-pad": not settings.pad, "--batch-size": settings.batch_size is not None,
              "--mask": settings.mask is not None, "--tta-rotate": bool(settings.tta_rotate),
              "--runtime": settings.runtime != "auto", "--normalize": settings.normalize is not None,
              "--activation": settings.activation is not None}
    why = {"--amp": "nnU-Net's predictor runs float32 on the CPU; drop --amp",
           "--skip-value": "nnU-Net predicts every tile of its crop; drop --skip-value",
           "--samples": "averaging samples applies to diffusion runs; drop --samples",
           "--channel": "an nnU-Net folder names its outputs: use --label NAME (or --label argmax)",
           "--no-pad": "nnU-Net pads small crops with zeros as it always does; drop --no-pad",
           "--batch-size": "nnU-Net runs one tile per forward pass, and a batch changes the logits' "
                           "float32 rounding (7e-4 in probability measured); drop --batch-size",
           "--mask": "nnU-Net predicts every tile of its crop box; use --roi for a box",
           "--tta-rotate": "nnU-Net's TTA is its mirroring (--tta); drop --tta-rotate",
           "--runtime": "its folds run in torch, as nnU-Net's own predictor; drop --runtime",
           "--normalize": "nnU-Net normalizes as its plans say; drop --normalize",
           "--activation": "nnU-Net's outputs are probabilities (or --label argmax); drop --activation"}
    for option, bad in refuse.items():
        if bad:
            raise VolsegError(option, f"does not apply to an nnU-Net model folder: {why[option]}")
    if settings.blend not in ("nnunet", "gaussian"):
        raise VolsegError("--blend", f"{settings.blend!r}: an nnU-Net model folder blends as nnU-Net does "
                          "(--blend nnunet, the default)")
    if settings.label == "argmax" and output_options.threshold is not None:
        raise VolsegError("--threshold", "applies to one label's probability; drop it with --label argmax")


def check_spacing(model, meta, volume, policy: str) -> None:
    """The volume's spacing against the configuration's target spacing (relative tolerance 1e-3)."""
    target = volume_axes(model.spacing, model.transpose_forward)
    shown = "x".join(f"{s:g}" for s in target)
    if meta.format not in ("ome-zarr", "nifti"):
        print(f"warning: {os.fspath(volume)}: records no voxel spacing ({meta.format}); assuming the "
              f"model's {shown} ({model.configuration})", file=sys.stderr)
        return
    if policy == "ignore" or np.allclose(meta.spacing, target, rtol=1e-3, atol=0):
        return
    have = "x".join(f"{s:g}" for s in meta.spacing)
    raise VolsegError(volume, f"has spacing {have} (z, y, x{', ' + meta.unit if meta.unit else ''}), the model's "
                      f"{model.configuration} configuration expects {shown}; resample the volume, or pass "
                      "--ignore-spacing to predict at the volume's own spacing")


def _read(volume: str, nan_value, lo, hi) -> np.ndarray:
    from volseg.inference.source import open_cached
    from volseg.io.boxes import read_region

    return read_region(open_cached(volume, nan_value), lo, hi)


def _block_box(volume: str, nan_value, block):
    lo, hi = block
    return grid.block_bbox(_read(volume, nan_value, lo, hi) != 0, lo)


def _block_stats(volume: str, nan_value, block):
    from volseg.models.nnunet.normalization import block_stats

    lo, hi = block
    return block_stats(_read(volume, nan_value, lo, hi))


def _blocks(lo, hi, chunks) -> list:
    """The storage-chunk-aligned blocks covering [lo, hi): ``(start, stop)`` pairs."""
    import itertools

    ranges = []
    for a, b, c in zip(lo, hi, chunks):
        edges = sorted({a, b, *range((a // c + 1) * c, b, c)})
        ranges.append(list(zip(edges[:-1], edges[1:])))
    return [tuple(zip(*r)) for r in itertools.product(*ranges)]


def crop_and_stats(model, volume: str, meta, nan_value, executor) -> tuple[tuple, tuple, np.ndarray | None]:
    """nnU-Net's crop box, the normalisation statistics and (masked ZScore) the packed filled mask.

    The box is merged from one task per input chunk; statistics of channels whose scheme needs
    them are streamed over the box's chunks (float64 sums, :func:`combine_stats`) unless the
    scheme normalises inside the filled nonzero mask: that needs ``binary_fill_holes`` of the
    whole crop, computed in memory when the box has at most :data:`MASK_VOXELS` voxels.
    """
    from volseg.models.nnunet.normalization import combine_stats, image_stats

    zero = (0,) * len(meta.shape)
    blocks = _blocks(zero, meta.shape, meta.chunks)
    boxes = executor.map(functools.partial(_block_box, volume, nan_value), blocks, description="nnU-Net crop box")
    box = grid.finish_bbox(grid.merge_bboxes(boxes), meta.shape)
    lo, hi = [b[0] for b in box], [b[1] for b in box]
    masked = any(m and s == "ZScoreNormalization" for m, s in zip(model.use_mask_for_norm,
                                                                  model.normalization_schemes))
    if masked:
        voxels = int(np.prod([b - a for a, b in box]))
        if voxels > MASK_VOXELS:
            raise VolsegError(volume, f"the model normalises inside nnU-Net's filled nonzero mask "
                              f"(use_mask_for_norm), which needs the whole crop box ({voxels:,} voxels) in "
                              f"memory; volseg does that up to {MASK_VOXELS:,} voxels: predict a sub-volume")
        crop = _read(volume, nan_value, lo, hi)
        mask = grid.nonzero_mask(crop[None])
        return box, (image_stats(crop[mask]),), np.packbits(mask, axis=-1)
    if not model.needs_stats[0]:
        return box, (None,), None
    parts = executor.map(functools.partial(_block_stats, volume, nan_value), _blocks(lo, hi, meta.chunks),
                         description="nnU-Net statistics")
    return box, (combine_stats(parts),), None


def tile_plan(model, box, shape, overlap: float, chunks) -> Plan:
    """nnU-Net's tiles of the padded crop ``box`` in volume coordinates, as a :class:`Plan`."""
    tf = model.transpose_forward
    crop_t = [box[a][1] - box[a][0] for a in tf]
    pads_t = grid.pad_amounts(crop_t, model.patch_size)
    steps_t = grid.steps([s + a + b for s, (a, b) in zip(crop_t, pads_t)], model.patch_size, 1.0 - overlap)
    patch = volume_axes(model.patch_size, tf)
    before = volume_axes([a for a, _ in pads_t], tf)
    steps = volume_axes(steps_t, tf)
    starts = tuple(np.asarray([box[a][0] - before[a] + s for s in steps[a]], np.int64) for a in range(3))
    stride = tuple(int(np.diff(s).min()) if len(s) > 1 else p for s, p in zip(starts, patch))
    chunks = tuple(min(int(c), int(s)) for c, s in zip(chunks, shape))
    domain = tuple(max(int(s), int(st[-1]) + p) for s, st, p in zip(shape, starts, patch))
    return Plan(tuple(int(s) for s in shape), domain, tuple(int(p) for p in patch), stride, chunks, starts)


def is_nnunet_folder(run) -> bool:
    """Whether ``run`` is an nnU-Net model folder (see :func:`volseg.models.nnunet.folder.is_model_folder`)."""
    from volseg.models.nnunet.folder import is_model_folder

    return is_model_folder(run)


def prepare_nnunet(run, volume, settings, output_options, execution, executor):
    """Check and resolve an nnU-Net prediction: ``(job, fingerprint, settings, tile, meta)``.

    ``settings`` are the resolved ones (stitch, blend, patch, chunks as run), ``tile`` the
    column tile in chunks, ``meta`` the volume's metadata.

    Loads the model (folds, checkpoint, trainer, channels, label), checks the spacing, runs the
    streamed crop-box and statistics passes in ``executor`` (the command's open
    :class:`volseg.parallel.Executor`, which the prediction pass shares) and plans the tiles.
    The fingerprint holds the model's provenance, the crop box and the statistics, so the
    output's attributes record what made it and a rerun with other settings is refused.
    """
    from volseg import __version__
    from volseg.inference.column_tiles import tile_chunks
    from volseg.inference.setup import threads_per_worker
    from volseg.io import read_meta
    from volseg.io.outputs import input_stamp
    from volseg.io.remote import is_url, volume_key
    from volseg.models import resolve_device
    from volseg.roi import roi_box

    check_options(settings, output_options)
    meta = read_meta(volume)
    if len(meta.shape) != 3:
        raise VolsegError(volume, f"has {len(meta.shape)} dimensions {meta.shape}; predict needs a 3D (z, y, x) volume")
    device = str(resolve_device(settings.device))
    args = (settings.folds, settings.checkpoint, settings.tta, device, settings.trust_checkpoint)
    folder = os.path.abspath(os.fspath(run))  # provenance names the folder wherever the run started
    probe = NnunetJob(folder, str(volume), "", args, (), (), (), (), None, None, (), None, 1, None, None)
    model = probe.model
    model.check_channels(1, volume)
    channel = None if settings.label == "argmax" else model.label_channel(settings.label)
    patch = volume_axes(model.patch_size, model.transpose_forward)
    if settings.patch is not None and tuple(settings.patch) != patch:
        raise VolsegError("--patch", f"{'x'.join(map(str, settings.patch))} is not the plans' patch "
                          f"{'x'.join(map(str, patch))} (z, y, x): nnU-Net's grid uses the plans' patch; drop --patch")
    check_spacing(model, meta, volume, settings.spacing)
    if channel is not None:  # --dtype and --threshold against the label's channel, before any pass
        from volseg.inference.output import output_spec

        output_spec(model.out_channels, dtype=output_options.dtype, threshold=output_options.threshold,
                    channel=channel)
    roi = None if settings.roi is None else roi_box(settings.roi, meta.shape)  # checked before the passes
    box, stats, mask = crop_and_stats(model, str(volume), meta, settings.nan_value, executor)
    plan = tile_plan(model, box, meta.shape, settings.overlap, settings.chunks)
    resolved = settings.replace(stitch=True, blend="nnunet", patch=plan.patch, chunks=plan.chunks)
    # one tile per forward: small tiles run single-threaded side by side (threads_per_worker)
    threads = (threads_per_worker(execution.workers, len(plan.chunk_list()), scheduler=execution.scheduler,
                                  voxels=math.prod(plan.patch)) if device == "cpu" else None)
    job = NnunetJob(folder, str(volume), f"{volume_key(volume)}@{settings.nan_value}", args, tuple(meta.shape),
                    tuple(meta.chunks), box, stats, mask, plan, tuple(model.transpose_forward), channel,
                    1, settings.nan_value, threads, roi)
    fingerprint = {
        "model": model.provenance(), "volume": volume if is_url(volume) else os.path.abspath(volume),
        "volume_stamp": input_stamp(volume), "volume_shape": list(meta.shape), "volume_spacing": list(meta.spacing),
        "patch": list(plan.patch), "overlap": float(settings.overlap), "tta": settings.tta,
        "chunks": list(plan.chunks), "blend": {"mode": "nnunet", "tile_step_size": 1.0 - settings.overlap},
        "label": "argmax" if channel is None else _label_name(model, channel),
        "crop_box": [list(b) for b in box], "normalization_stats": [_stats_dict(s) for s in stats],
        "nan_value": settings.nan_value, "spacing_policy": settings.spacing, "kind": "nnunet",
        "volseg_version": __version__, "tile": None}
    if settings.tile is not None:
        fingerprint["tile"] = list(settings.tile)
    if roi is not None:  # only then: outputs without --roi keep their fingerprint
        fingerprint["roi"] = [list(roi[0]), list(roi[1])]
    return job, fingerprint, resolved, tile_chunks(settings.tile, plan), meta


def _label_name(model, channel: int) -> str:
    """The dataset.json name of output ``channel``."""
    value = model._heads()[channel]
    return next(name for name, v in model.labels.items() if v == value)


def _stats_dict(stats) -> dict | None:
    if stats is None:
        return None
    return {"count": stats.count, "mean": stats.mean, "std": stats.std, "min": stats.minimum, "max": stats.maximum}
