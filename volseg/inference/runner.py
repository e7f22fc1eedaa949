"""Run a trained model over batches of patches: loading once per worker, batching, AMP, TTA.

Patches are (B, C, z, y, x) numpy arrays of RAW voxel values (the model normalises inside);
outputs are float32 numpy arrays (B, out_channels, z, y, x). Each worker process keeps one
loaded model per (model file, device, AMP) in a module-level cache, so a Dask worker loads the
model once, however many tasks it runs.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable

import numpy as np

from volseg.errors import VolsegError

_CACHE: dict = {}
_LOCK = threading.Lock()
_TURN = threading.Lock()


def parse_batch_size(value: int) -> int:
    """``--batch-size``: a positive number of patches per forward pass."""
    if int(value) < 1:
        raise VolsegError("--batch-size", f"must be >= 1, got {value}")
    return int(value)


def set_torch_threads(threads: int | None) -> None:
    """Use ``threads`` intra-op threads in this process (None: leave torch's default)."""
    import torch

    if threads is not None and torch.get_num_threads() != int(threads):
        torch.set_num_threads(max(1, int(threads)))


def forward_turn(device: str, threads: int | None = None):
    """A context in which this thread runs a forward pass on ``device`` with ``threads`` torch
    threads (None: torch's default, all cores).

    A CPU forward on more than one thread runs one at a time per process: the worker threads of
    ``--scheduler threads`` take turns at the forwards with all the process's cores
    (:func:`volseg.inference.setup.threads_per_worker`) while the others read, blend and write.
    On a quiet machine one forward on 2 threads in ``channels_last_3d`` runs 1.3x the patches
    per second of two single-threaded ones side by side (``benchmarks/predict_speed.py``).
    Single-threaded forwards (``OMP_NUM_THREADS=1``) run side by side, as before; so do CUDA ones.
    """
    if str(device) == "cpu" and (threads is None or int(threads) > 1):
        return _TURN
    return contextlib.nullcontext()


def cached_model(model_path: str, device: str, threads: int | None = None, *, channels_last: bool = False,
                 foreign=None):
    """The model of ``model_path`` on ``device``, loaded once per process, device, layout and
    ``foreign`` options (:class:`volseg.models.foreign.Foreign`, for an ONNX file that ``volseg
    export`` did not write).

    A run directory or ``model.pt`` gives the torch module of :func:`volseg.models.load_model`
    (in ``channels_last_3d`` when ``channels_last``, :mod:`volseg.inference.runtime`); a file
    written by ``volseg export`` (``.onnx``, ``.pt2``, ``.ts``) an
    :class:`volseg.models.exported.ExportedModel`, called the same way.
    """
    from volseg.inference.runtime import configure_device, prepare_module
    from volseg.models import load_model
    from volseg.models.exported import is_exported, load_exported

    exported = is_exported(model_path)
    key = (os.path.abspath(str(model_path)), str(device), bool(channels_last and not exported), foreign)
    with _LOCK:
        if key not in _CACHE:
            configure_device(device)
            _CACHE[key] = (load_exported(model_path, device=device, threads=threads, foreign=foreign) if exported
                           else prepare_module(load_model(model_path, device=device), key[2]))
        return _CACHE[key]


class Runner:
    """Apply a patch function batch-wise with optional mixed precision and mirroring TTA.

    Parameters
    ----------
    model_path : str
        Run directory or ``model.pt``.
    device : str
        A resolved torch device name (``cpu``, ``cuda:0``).
    batch_size : int
        Patches per forward pass.
    amp : bool
        Autocast: bfloat16 on CPU, float16 on CUDA. Outputs are returned in float32. On a CPU
        without native bf16 the runner runs in fp32 instead, with one ``warning:`` line
        (:func:`volseg.models.precision.use_amp`); ``self.amp`` is what it runs.
    tta : bool
        Average the outputs over all 8 combinations of flipping the z, y and x axes.
    rotate : float
        Also average over rotations by +rotate and -rotate degrees about z
        (:mod:`volseg.inference.tta`; 0 = none).
    threads : int, optional
        torch intra-op threads for this worker.
    channels_last : bool
        Run a torch module and its inputs in ``channels_last_3d``
        (:func:`volseg.inference.runtime.channels_last_pays`); ignored for exported files.
    foreign : volseg.models.foreign.Foreign, optional
        Normalization, activation and patch of a foreign ONNX file, passed to every worker's
        :func:`cached_model`.
    """

    def __init__(self, model_path: str, *, device: str = "cpu", batch_size: int = 4,
                 amp: bool = False, tta: bool = False, threads: int | None = None, rotate: float = 0.0,
                 channels_last: bool = False, foreign=None):
        self.model_path = str(model_path)
        self.device = str(device)
        self.batch_size = parse_batch_size(batch_size)
        if amp:
            from volseg.models.precision import use_amp

            amp = use_amp(self.device, True)
        self.amp = bool(amp)
        self.tta = bool(tta)
        self.rotate = float(rotate)
        self.threads = threads
        self.channels_last = bool(channels_last)
        self.foreign = foreign
        self._background: dict = {}

    @property
    def model(self):
        return cached_model(self.model_path, self.device, self.threads, channels_last=self.channels_last,
                            foreign=self.foreign)

    def _apply(self, fn: Callable, inputs: list[np.ndarray]) -> np.ndarray:
        """Run ``fn(*tensors) -> tensor`` over ``inputs`` (same batch length) in batches."""
        import torch

        from volseg.inference.runtime import as_layout
        from volseg.inference.tta import augmented

        set_torch_threads(self.threads)
        device = torch.device(self.device)
        n = inputs[0].shape[0]
        outs = []
        autocast = torch.autocast(device_type=device.type,
                                  dtype=torch.float16 if device.type == "cuda" else torch.bfloat16,
                                  enabled=self.amp)
        with torch.inference_mode(), autocast:
            for lo in range(0, n, self.batch_size):
                xs = [as_layout(torch.as_tensor(np.ascontiguousarray(x[lo:lo + self.batch_size]),
                                                dtype=torch.float32).to(device), self.channels_last) for x in inputs]
                with forward_turn(self.device, self.threads):
                    outs.append(augmented(fn, xs, flips=self.tta, rotate=self.rotate).cpu().numpy())
        return np.concatenate(outs, axis=0).astype(np.float32, copy=False)

    def predict(self, patches: np.ndarray) -> np.ndarray:
        """Model outputs for raw patches (B, C, z, y, x) -> float32 (B, out_channels, z, y, x)."""
        return self._apply(self.model, [patches])

    def eps(self, condition: np.ndarray, x_t: np.ndarray, t: int) -> np.ndarray:
        """Diffusion model output (the noise, or x_0 or v as ``model.prediction`` says) for raw
        conditions and x_t (model units) at timestep t."""
        import torch

        model = self.model

        def fn(cond, x):
            steps = torch.full((x.shape[0],), float(t), device=x.device)
            return model.denoiser(torch.cat([model.normalize_condition(cond), x], dim=1), steps)

        return self._apply(fn, [condition, x_t])

    def background(self, value: float, patch: tuple, in_channels: int = 1) -> np.ndarray:
        """The model's output (out_channels, z, y, x) for a patch filled with ``value`` (cached)."""
        key = (float(value), tuple(patch), int(in_channels))
        if key not in self._background:
            const = np.full((1, in_channels, *patch), value, dtype=np.float32)
            self._background[key] = self.predict(const)[0]
        return self._background[key]


def model_info(model) -> dict:
    """Plain facts about a loaded model: kind, depth, in/out channels."""
    from volseg.models import DiffusionModel

    if isinstance(model, DiffusionModel):
        den = model.denoiser
        return {"kind": "diffusion", "depth": int(model.depth),
                "in_channels": int(den.conv_in.in_channels - den.conv_out.out_channels),
                "out_channels": int(den.conv_out.out_channels)}
    info = {"kind": "unet", "depth": int(getattr(model, "depth", 0)),
            "in_channels": int(getattr(model, "in_channels", 1)),
            "out_channels": int(getattr(model, "out_channels", 1))}
    if getattr(model, "output", "probability") == "image":  # only then: segmentation settings unchanged
        info["output"] = "image"
    return info
