"""How a :class:`~volseg.inference.runner.Runner` executes its model on this machine.

Three choices, made once per predict request in :func:`volseg.inference.setup.prepare` (so every
worker and every ``--part`` makes the same one), none of which is part of an output's
fingerprint: the outputs agree within 1e-5 whatever they are (``tests/test_inference_runtime.py``).

* **runtime** (``--runtime auto|torch|onnx``): ``torch`` runs the run's module; ``onnx`` exports
  it once to ONNX (:func:`onnx_model`, cached per user by the checkpoint's SHA-256) and runs it
  with onnxruntime; ``auto`` is torch for a run directory (measured on a 2-core AVX2 CPU: torch
  in ``channels_last_3d`` at the automatic batch is as fast as onnxruntime, 0.35 vs 0.39 s per
  64^3 patch, and needs no export, which takes minutes there) and the file's own runtime for a
  file from ``volseg export`` (onnxruntime for ``.onnx``).
* **layout**: UNet modules run in ``torch.channels_last_3d`` where the convolution library
  prefers it (oneDNN on CPU: 1.2-1.5x faster on that CPU; cuDNN on CUDA), inputs converted
  to match. Diffusion denoisers keep the contiguous layout.
* **batch size** (``--batch-size auto``, the default): :func:`auto_batch_size`, about 1M
  voxels per forward pass (4 patches of 64^3), within :func:`volseg.memlimit.check_patch_batch`.

On CUDA, :func:`configure_device` turns on ``torch.backends.cudnn.benchmark``: predict runs one
patch shape throughout, so cuDNN's per-shape algorithm search pays off after the first batch.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from volseg.errors import VolsegError

#: Values of ``--runtime``.
RUNTIMES = ("auto", "torch", "onnx")
#: Voxels per forward pass the automatic batch size aims at (4 patches of 64^3).
BATCH_VOXELS = 4 * 64 ** 3
#: The largest automatic batch.
MAX_AUTO_BATCH = 8
#: Environment variable naming the folder of exported ONNX models (default: the user cache).
CACHE_ENV = "VOLSEG_MODEL_CACHE"


def parse_runtime(value) -> str:
    """``--runtime``: ``auto``, ``torch`` or ``onnx``."""
    name = str(value).strip().lower()
    if name not in RUNTIMES:
        raise VolsegError("--runtime", f"unknown runtime {value!r}; use auto, torch or onnx")
    return name


def parse_batch_option(value) -> int | None:
    """``--batch-size``: a positive number of patches per forward pass, or ``auto`` (None).

    Examples
    --------
    >>> parse_batch_option("auto"), parse_batch_option("6"), parse_batch_option(None)
    (None, 6, None)
    """
    if value is None or str(value).strip().lower() == "auto":
        return None
    try:
        number = float(str(value).strip())
    except ValueError:
        number = float("nan")
    if not (math.isfinite(number) and number == int(number) and number >= 1):
        raise VolsegError("--batch-size", f"expected a whole number >= 1 or auto, got {value!r}; "
                          "e.g. --batch-size 4, or leave it out to choose by the patch size")
    return int(number)


def auto_batch_size(patch, device: str = "cpu") -> int:
    """Patches per forward pass for ``patch`` when ``--batch-size`` is not given.

    About :data:`BATCH_VOXELS` voxels per pass, between 1 and :data:`MAX_AUTO_BATCH` patches,
    lowered until :func:`volseg.memlimit.check_patch_batch` accepts it (that check is applied to
    the result again by the caller, so a patch too large even alone is still refused there).
    The same rule on CUDA: per-voxel throughput there also levels off once a pass holds ~1M
    voxels, and a larger batch would only cost memory.

    Examples
    --------
    >>> auto_batch_size((64, 64, 64)), auto_batch_size((128, 128, 128)), auto_batch_size((32, 32, 32))
    (4, 1, 8)
    """
    from volseg.memlimit import check_patch_batch

    batch = max(1, min(MAX_AUTO_BATCH, BATCH_VOXELS // math.prod(int(p) for p in patch)))
    while batch > 1:
        try:
            check_patch_batch(patch, batch)
            break
        except VolsegError:
            batch //= 2
    return batch


def channels_last_pays(device: str, kind: str) -> bool:
    """Whether a ``kind`` model runs in ``channels_last_3d`` on ``device`` (UNets on oneDNN/cuDNN)."""
    import torch

    if kind != "unet":
        return False
    if str(device).startswith("cuda"):
        return bool(torch.backends.cudnn.is_available())
    return bool(torch.backends.mkldnn.is_available())


def prepare_module(model, channels_last: bool):
    """``model`` in the layout its inputs will have (in place for a torch module; returned)."""
    if channels_last:
        import torch

        model.to(memory_format=torch.channels_last_3d)
    return model


def as_layout(x, channels_last: bool):
    """A (N, C, z, y, x) tensor in the layout of the model (:func:`prepare_module`)."""
    if channels_last:
        import torch

        return x.contiguous(memory_format=torch.channels_last_3d)
    return x


def configure_device(device: str) -> None:
    """Per-device switches: cuDNN autotuning on CUDA (predict repeats one patch shape)."""
    if str(device).startswith("cuda"):
        import torch

        torch.backends.cudnn.benchmark = True


@dataclass(frozen=True)
class Runtime:
    """The resolved runtime of a predict request (see the module docstring).

    ``model_file`` is what the runner loads: the run's checkpoint, the exported file, or the
    cached ONNX export of the checkpoint; ``name`` the engine (``torch``, ``onnxruntime``,
    ``torch.export``, ``torchscript``).
    """

    name: str
    model_file: str
    channels_last: bool = False

    def to_dict(self) -> dict:
        """As the predict result records it."""
        return {"runtime": self.name, "layout": "channels_last_3d" if self.channels_last else "contiguous"}


def choose_runtime(requested: str, model_file: str, *, kind: str, device: str, amp: bool) -> Runtime:
    """The :class:`Runtime` for ``--runtime requested`` and this model, device and precision.

    ``--runtime onnx`` is refused with an error naming the option where it cannot apply: a
    diffusion run, ``--amp``, a CUDA device without onnxruntime's CUDA provider, a ``.pt2``/``.ts``
    file, or onnxruntime/onnx not installed; ``--runtime torch`` for an ``.onnx`` file.
    """
    from volseg.models.exported import RUNTIMES as FILE_RUNTIMES
    from volseg.models.exported import SUFFIXES, is_exported

    requested = parse_runtime(requested)
    if is_exported(model_file):
        fmt = SUFFIXES[Path(model_file).suffix.lower()]
        if requested == "onnx" and fmt != "onnx":
            raise VolsegError("--runtime", f"onnx: {model_file} is a {fmt} program that torch runs; export the "
                              "run to .onnx (`volseg export RUN -o model.onnx`) or use --runtime auto")
        if requested == "torch" and fmt == "onnx":
            raise VolsegError("--runtime", f"torch: {model_file} is an ONNX model, which onnxruntime runs; pass "
                              "the run directory for torch, or use --runtime auto")
        if requested == "onnx":
            _check_onnx_device(device)
        return Runtime(FILE_RUNTIMES[fmt], str(model_file))
    if requested != "onnx":
        return Runtime("torch", str(model_file), channels_last_pays(device, kind))
    if kind != "unet":
        raise VolsegError("--runtime", "onnx: a diffusion run samples with a loop of denoiser calls that volseg "
                          "runs in torch; use --runtime auto or torch")
    if amp:
        raise VolsegError("--runtime", "onnx runs the float32 export; drop --amp, or keep --amp with "
                          "--runtime torch")
    _check_onnx_device(device)
    return Runtime("onnxruntime", str(onnx_model(model_file)))


def _check_onnx_device(device: str) -> None:
    try:
        import onnx  # noqa: F401  (the exporter and the cache check need it)
        import onnxruntime
    except ImportError:
        raise VolsegError("--runtime", "onnx needs onnxruntime and onnx: pip install 'volseg[onnx]', or use "
                          "--runtime auto") from None
    if str(device).startswith("cuda") and "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        raise VolsegError("--runtime", f"onnx on {device} needs onnxruntime's CUDA provider (pip install "
                          "onnxruntime-gpu); use --runtime auto, or --device cpu")


def cache_dir() -> Path:
    """Folder of the exported ONNX models: ``$VOLSEG_MODEL_CACHE``, else the user cache
    (``$XDG_CACHE_HOME/volseg/models``, default ``~/.cache/volseg/models``)."""
    if os.environ.get(CACHE_ENV, "").strip():
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "volseg" / "models"


def onnx_model(model_file: str) -> Path:
    """The ONNX export of a run checkpoint, made once and kept in :func:`cache_dir`.

    Named by the checkpoint's SHA-256, so a retrained checkpoint gets a new file and the same
    checkpoint (copied, or in another run folder) reuses the export. The cache is per user, not
    next to the run: a run folder is an input that predict never writes into (and is often read
    only or shared). ``volseg export`` writes to a temporary sibling, checks the file against
    the torch model and renames it into place, so concurrent workers or ``--part`` jobs at most
    export twice and never read a half-written file.
    """
    from volseg.models.export import export_model, sha256_file
    from volseg.models.exported import export_mark

    folder = cache_dir()
    target = folder / f"{sha256_file(model_file)}.onnx"
    if target.is_file() and export_mark(target) is not None:
        return target
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VolsegError(folder, f"cannot hold the ONNX export of the model ({exc.strerror}); set "
                          f"{CACHE_ENV} to a writable folder, or use --runtime torch") from None
    if not os.access(folder, os.W_OK):
        raise VolsegError(folder, f"is not writable, so the ONNX export of the model cannot be cached; set "
                          f"{CACHE_ENV} to a writable folder, or use --runtime torch")
    export_model(model_file, target, fmt="onnx", overwrite=target.exists())
    return target
