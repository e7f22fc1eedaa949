"""Resolve a predict request into what every pass needs: :class:`Setup` from :func:`prepare`.

:func:`prepare` checks the model against the volume and the settings (patch divisible by the
model's downsampling, input channels, padding, memory) before any output exists, loads the model
once, and resolves the settings (the run's patch, the precision actually used, the plan's chunks),
so the fingerprint a resumable output records comes from the resolved
:class:`~volseg.inference.settings.PredictSettings`. Axis order (z, y, x); sizes in voxels.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from volseg.errors import VolsegError
from volseg.inference.blend import Blender
from volseg.inference.plan import Plan
from volseg.inference.runner import Runner, model_info
from volseg.inference.runtime import Runtime
from volseg.inference.settings import PredictSettings
from volseg.inference.support import Support, build_support


#: Voxels per forward pass from which the worker threads of one process take turns with all
#: cores (:func:`threads_per_worker`). Measured on 2 cores (torch 2.13, oneDNN): a 64^3 batch of
#: 2 or more runs faster on 2 threads than two single-threaded forwards side by side (0.21 against
#: 0.27 s per patch), one 64^3 patch about even (0.34 against 0.33), and nnU-Net's 32^3 tiles one
#: at a time far slower (a 192^3 volume: 50.6 s against 29.4 s).
TURN_VOXELS = 2 * 64 ** 3


def threads_per_worker(workers: int | None, tasks: int | None = None, *, scheduler: str = "threads",
                       voxels: int | None = None) -> int:
    """torch threads per worker.

    ``OMP_NUM_THREADS`` when set. Else, where the workers are threads of this process
    (``threads``, ``synchronous``) and a forward pass holds at least :data:`TURN_VOXELS` voxels
    (``voxels``: batch x patch; None counts as large), all cores: the workers take turns at the
    forwards (:func:`volseg.inference.runner.forward_turn`). Else cores // busy workers (at least
    1), where a pass of ``tasks`` chunk tasks keeps at most that many workers busy (a volume of
    one output chunk runs its forwards on all cores, not on one); single-threaded forwards run
    side by side.
    """
    from volseg.parallel import parse_workers

    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    if scheduler in ("threads", "synchronous") and (voxels is None or voxels >= TURN_VOXELS):
        return parse_workers(None)
    busy = parse_workers(workers) if tasks is None else max(1, min(parse_workers(workers), int(tasks)))
    return max(1, parse_workers(None) // busy)


def default_patch(payload: dict) -> tuple:
    """The training patch recorded in a run (``data.patch``), else 64 on every side."""
    data = (payload.get("config") or {}).get("data") or {}
    patch = data.get("patch")
    if patch:
        return tuple(int(p) for p in (list(patch) * 3 if len(patch) == 1 else patch))
    return (64, 64, 64)


@dataclass(frozen=True)
class ModelInfo:
    """Plain facts about a loaded model: kind (``unet``/``diffusion``), depth, channels, output."""

    kind: str
    depth: int
    in_channels: int
    out_channels: int
    output: str = "probability"

    @classmethod
    def of(cls, model) -> "ModelInfo":
        return cls(**model_info(model))

    @property
    def image(self) -> bool:
        """True for models whose output is an image (diffusion, or a UNet trained with l1/l2)."""
        return self.kind == "diffusion" or self.output == "image"

    def to_dict(self) -> dict:
        """As patch stores record it (``output`` only for image models)."""
        out = {"kind": self.kind, "depth": self.depth, "in_channels": self.in_channels,
               "out_channels": self.out_channels}
        if self.output == "image":
            out["output"] = "image"
        return out


@dataclass(frozen=True)
class Setup:
    """The resolved resources of one predict request (see :func:`prepare`).

    ``settings`` is resolved (patch, amp, chunks as run); ``fingerprint`` the settings a
    resumable output records; ``tile`` the column tile in whole chunks (None: untiled);
    ``conditions`` the paths of further input channels; ``volume_key`` the chunk-cache key;
    ``support`` the patches and box of ``--roi``/``--mask`` (None: every patch, the whole volume).
    """

    run: str
    model_file: str
    volume: str
    info: ModelInfo
    meta: object
    plan: Plan
    runner: Runner
    settings: PredictSettings
    fingerprint: dict
    volume_key: str
    tile: tuple[int, int] | None = None
    conditions: tuple[str, ...] = ()
    support: Support | None = None
    runtime: Runtime | None = None

    def run_facts(self) -> dict:
        """What ran the model, as the predict result records it: runtime, layout, batch size."""
        facts = self.runtime.to_dict() if self.runtime is not None else {}
        return {**facts, "batch_size": self.runner.batch_size}

    @property
    def skip_value(self) -> float | None:
        return self.settings.skip_value

    @property
    def nan_value(self) -> float | None:
        return self.settings.nan_value

    def blender(self, plan: Plan | None = None) -> Blender:
        """The blending window of the settings over ``plan``'s patch grid (default this plan)."""
        plan = plan or self.plan
        return Blender(plan.starts, plan.patch, self.settings.blend, sigma_scale=self.settings.sigma_scale)


def _load(run, settings: PredictSettings) -> tuple[dict, str, object]:
    """The run's payload, model file and :class:`~volseg.models.foreign.Foreign` options (None but
    for a foreign ONNX file); a file from ``volseg export`` stands for its run."""
    from volseg.models import load_run
    from volseg.models import model_file as run_model_file
    from volseg.models.exported import exported_payload, is_exported, load_exported
    from volseg.models.foreign import FOREIGN_FORMAT, Foreign, foreign_patch

    if is_exported(run):
        payload = exported_payload(run)
        if settings.amp and payload["export"]["export_format"] == "onnx":
            raise VolsegError("--amp", "applies to torch models; an ONNX model runs in the precision "
                              "it was exported in")
        if payload["export"].get("format") == FOREIGN_FORMAT:
            patch = foreign_patch(run, payload["export"]["patch"], settings.patch)
            foreign = Foreign(settings.normalize or "none", settings.activation or "none", patch)
            payload = load_exported(run, foreign=foreign).payload()  # output channels probed at the patch
            payload["config"]["data"]["patch"] = list(patch)
            return payload, str(run), foreign
        refuse_foreign_options(settings, run)
        return payload, str(run), None
    refuse_foreign_options(settings, run)
    return load_run(run), str(run_model_file(run)), None


def refuse_foreign_options(settings: PredictSettings, run) -> None:
    """``--normalize``/``--activation`` apply only to ONNX files ``volseg export`` did not write."""
    for option, value in (("--normalize", settings.normalize), ("--activation", settings.activation)):
        if value is not None:
            raise VolsegError(option, f"applies to ONNX files that `volseg export` did not write; {run} is a "
                              "volseg model, which normalizes its input and outputs probabilities itself: "
                              f"drop {option}")


def _check_patch(patch, depth: int, shape, pad: bool) -> None:
    bad = [p for p in patch if p % 2 ** depth]
    if bad:
        raise VolsegError("--patch", f"{'x'.join(map(str, patch))}: every side must be divisible by "
                          f"2**depth = {2 ** depth} for this model; e.g. {max(2 ** depth, patch[0] // 2 ** depth * 2 ** depth)}")
    if not pad and any(p > s for p, s in zip(patch, shape)):
        raise VolsegError("--patch", f"{'x'.join(map(str, patch))} is larger than the volume "
                          f"{'x'.join(map(str, shape))} and padding is off (--no-pad); use a smaller "
                          "--patch or allow mirror padding")


def prepare(run, volume, settings: PredictSettings, *, workers: int | None = None,
            scheduler: str = "threads") -> Setup:
    """Validate a predict request (model, volume, patch, overlap, device) before any output exists.

    ``workers`` and ``scheduler`` set the torch threads per worker on CPU (:func:`threads_per_worker`).

    Examples
    --------
    >>> setup = prepare("runs/unet", "scroll.zarr", PredictSettings.parse(patch=64))  # doctest: +SKIP
    >>> setup.info.out_channels, setup.plan.patch  # doctest: +SKIP
    (1, (64, 64, 64))
    """
    from volseg.geometry import stride_from_overlap
    from volseg.inference.source import condition_volumes
    from volseg.inference.column_tiles import tile_chunks
    from volseg.inference.runtime import auto_batch_size, choose_runtime
    from volseg.io import open_volume, read_meta
    from volseg.io.finite import count_nonfinite, warn_replaced
    from volseg.io.outputs import input_stamp
    from volseg.io.remote import is_url, volume_key
    from volseg.memlimit import check_patch_batch
    from volseg.models import model_depth, resolve_device

    payload, model_file, foreign = _load(run, settings)
    cfg = dict(payload["model_config"])
    kind = "diffusion" if str(cfg.get("type", "unet")).lower() in ("diffusion", "sg") else "unet"
    meta = read_meta(volume)
    if len(meta.shape) != 3:
        raise VolsegError(volume, f"has {len(meta.shape)} dimensions {meta.shape}; predict needs a 3D (z, y, x) volume")
    patch = settings.patch or default_patch(payload)
    _check_patch(patch, model_depth(cfg), meta.shape, settings.pad)
    stride = stride_from_overlap(patch, settings.overlap)
    dev = str(resolve_device(settings.device))
    batch = settings.batch_size or auto_batch_size(patch, dev)
    check_patch_batch(patch, batch)
    runtime = choose_runtime(settings.runtime, model_file, kind=kind, device=dev, amp=settings.amp)
    plan = Plan.build(meta.shape, patch, stride, settings.chunks)
    runner = Runner(runtime.model_file, device=dev, batch_size=batch, amp=settings.amp, tta=settings.tta,
                    threads=threads_per_worker(workers, len(plan.chunk_list()), scheduler=scheduler,
                                               voxels=batch * math.prod(patch))
                    if dev == "cpu" else None,
                    rotate=settings.tta_rotate, channels_last=runtime.channels_last, foreign=foreign)
    info = ModelInfo.of(runner.model)
    names = [str(n) for n in cfg.get("condition") or []]
    if info.in_channels != 1 + len(names):
        raise VolsegError(run, f"the model expects {info.in_channels} input channels; predict feeds "
                          "single-channel (z, y, x) volumes")
    conditions = tuple(condition_volumes(volume, names, meta.shape))
    support, support_facts = build_support(settings, plan, meta.shape)
    # resolved: the patch run, the precision used (fp32 where --amp does not pay off), the plan's chunks
    resolved = settings.replace(patch=tuple(patch), amp=bool(runner.amp), chunks=tuple(plan.chunks))
    fingerprint = resolved.fingerprint(
        model_sha256=_digest(model_file), volume=volume if is_url(volume) else os.path.abspath(volume),
        volume_stamp=input_stamp(volume), volume_shape=meta.shape, stride=stride, kind=kind,
        conditions=tuple(zip(names, (input_stamp(p) for p in conditions))), support=support_facts)
    if settings.nan_value is not None:
        warn_replaced(volume, count_nonfinite(open_volume(volume)), settings.nan_value)
    return Setup(str(run), model_file, str(volume), info, meta, plan, runner, resolved, fingerprint,
                 f"{volume_key(volume)}@{settings.nan_value}", tile_chunks(settings.tile, plan), conditions,
                 support, runtime)


def _digest(path: str) -> str:
    from volseg.io.resume import file_digest

    return file_digest(path)
