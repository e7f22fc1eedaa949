"""Models: the residual UNet3D, the conditional 3D diffusion model, building and loading them.

``build_model(model_config)`` builds a model from the plain-data ``model`` section of a
(resolved) training config; ``load_model(run_dir_or_model_pt)`` returns a trained model in eval
mode. For a run directory ``load_model`` uses ``best.pt`` (best validation metric) when present,
else ``model.pt`` (the last step).
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from volseg.errors import VolsegError
from volseg.models import ddim
from volseg.models.diffusion import DDPMUNet3D, DiffusionModel
from volseg.models.unet3d import UNet3D

__all__ = [
    "RUN_FORMAT",
    "DDPMUNet3D",
    "DiffusionModel",
    "UNet3D",
    "build_model",
    "load_model",
    "load_run",
    "model_file",
    "model_depth",
    "resolve_device",
]

RUN_FORMAT = "volseg-run"
MODEL_TYPES = {"unet": "unet", "diffusion": "diffusion", "sg": "diffusion"}


def _model_type(cfg: dict) -> str:
    kind = str(cfg.get("type", "unet")).lower()
    if kind not in MODEL_TYPES:
        raise VolsegError("model.type", f"unknown model type {kind!r}; use unet or diffusion")
    return MODEL_TYPES[kind]


def model_depth(cfg: dict) -> int:
    """Number of halvings of the model described by ``cfg`` (patch sides divide by 2**depth)."""
    if _model_type(cfg) == "unet":
        return int(cfg.get("depth", 3))
    return len(cfg.get("ch_mult", (1, 2, 4))) - 1


def build_model(model_config: dict) -> nn.Module:
    """Build an untrained model from the plain-data ``model`` config.

    Parameters
    ----------
    model_config : dict
        ``type`` ("unet" or "diffusion"), ``in_channels``, ``out_ch``, ``ch`` (base features),
        ``norm_mean``/``norm_std``; UNet: ``depth``, ``separable``, ``groups``, ``output``
        ("probability", or "image" with ``target_mean``/``target_std``); diffusion:
        ``ch_mult``, ``num_res_blocks``, ``dropout``, ``attn``, ``resamp_with_conv``,
        ``target_mean``/``target_std``/``target_range`` and ``schedule`` ({"beta_start",
        "beta_end", "num_diffusion_timesteps", "timesteps": [...], "clip_x0", "start_t", "prediction"}). ``checkpoint`` switches gradient
        checkpointing on. Missing keys take the defaults of ``configs/*.yml``.

    Returns
    -------
    torch.nn.Module
        :class:`UNet3D` or :class:`DiffusionModel` (train mode, CPU).
    """
    cfg = dict(model_config)
    if _model_type(cfg) == "unet":
        return UNet3D(int(cfg.get("in_channels", 1)), int(cfg.get("out_ch", 1)),
                      features=int(cfg.get("ch", 16)), depth=int(cfg.get("depth", 3)),
                      separable=bool(cfg.get("separable", False)),
                      groups=int(cfg.get("groups", 8)),
                      checkpoint=bool(cfg.get("checkpoint", False)),
                      norm_mean=cfg.get("norm_mean", 0.0), norm_std=cfg.get("norm_std", 1.0),
                      output=str(cfg.get("output", "probability")),
                      target_mean=float(cfg.get("target_mean") or 0.0),
                      target_std=float(cfg.get("target_std") or 1.0))
    denoiser = DDPMUNet3D(in_channels=int(cfg.get("in_channels", 2)),
                          out_ch=int(cfg.get("out_ch", 1)), ch=int(cfg.get("ch", 32)),
                          ch_mult=tuple(int(m) for m in cfg.get("ch_mult", (1, 2, 4))),
                          num_res_blocks=int(cfg.get("num_res_blocks", 1)),
                          dropout=float(cfg.get("dropout", 0.0)),
                          attn=bool(cfg.get("attn", True)),
                          resamp_with_conv=bool(cfg.get("resamp_with_conv", True)),
                          checkpoint=bool(cfg.get("checkpoint", False)))
    schedule = dict(cfg.get("schedule") or {})
    total = int(schedule.get("num_diffusion_timesteps", 1000))
    betas = ddim.linear_betas(float(schedule.get("beta_start", 1e-4)),
                              float(schedule.get("beta_end", 0.02)), total)
    timesteps = schedule.get("timesteps") or ddim.timestep_sequence(
        str(schedule.get("scheduler_type", "uniform")), int(schedule.get("steps", 10)), total)
    return DiffusionModel(denoiser, alphas_cumprod=ddim.alphas_cumprod_from_betas(betas),
                          timesteps=timesteps, norm_mean=cfg.get("norm_mean", 0.0),
                          norm_std=cfg.get("norm_std", 1.0),
                          target_mean=float(cfg.get("target_mean", 0.0)),
                          target_std=float(cfg.get("target_std", 1.0)),
                          target_range=cfg.get("target_range"),
                          clip_x0=bool(schedule.get("clip_x0", True)),
                          start_t=schedule.get("start_t"),
                          prediction=str(schedule.get("prediction", "eps")))


def model_file(path: str | os.PathLike) -> Path:
    """The checkpoint a run directory (``best.pt`` if present, else ``model.pt``) or path names."""
    path = Path(path)
    if path.is_dir():
        for name in ("best.pt", "model.pt"):
            if (path / name).is_file():
                return path / name
        raise VolsegError(path, "is not a training run (no model.pt); train one with "
                                "`volseg train DATA --model unet -o RUN_DIR`")
    if not path.exists():
        raise VolsegError(path, "does not exist; pass a run directory or its model.pt")
    return path


def load_run(path: str | os.PathLike) -> dict[str, Any]:
    """Read a run checkpoint with ``torch.load(weights_only=True)`` and check its format.

    Parameters
    ----------
    path : str or os.PathLike
        A run directory (``best.pt`` if present, else ``model.pt``) or a ``.pt`` file.

    Returns
    -------
    dict
        ``{"format", "version", "model_type", "model_config", "config", "state_dict",
        "ema_state_dict", "optimizer", "scaler", "rng", "step", "best_metric", ...}``; tensors
        on the CPU.

    Raises
    ------
    VolsegError
        Missing, corrupt or truncated file; a pickle that is not weights-only; not a volseg run.
    """
    file = model_file(path)
    try:
        payload = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise VolsegError(file, "is not a weights-only checkpoint (it holds arbitrary Python "
                                f"objects: {first[:160]}); volseg loads only models written by "
                                "`volseg train`") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise VolsegError(file, "is corrupt or truncated and cannot be read "
                                f"({type(exc).__name__}); retrain or restore it") from None
    if not isinstance(payload, dict) or payload.get("format") != RUN_FORMAT:
        raise VolsegError(file, "is not a volseg model (no 'format: volseg-run' entry); "
                                "volseg loads only models written by `volseg train`")
    for key in ("model_config", "state_dict"):
        if key not in payload:
            raise VolsegError(file, f"is an incomplete volseg model (no {key!r}); retrain it")
    return payload


def load_model(path: str | os.PathLike, *, device: str | torch.device | None = None
               ) -> nn.Module:
    """The trained model of a run, in eval mode (EMA weights for a diffusion model).

    Parameters
    ----------
    path : str or os.PathLike
        A run directory (``best.pt`` if present, else ``model.pt``) or a ``.pt`` file.
    device : str or torch.device, optional
        Where to put the model (default CPU); see :func:`resolve_device`.

    Returns
    -------
    torch.nn.Module
        UNet: raw (N, C, z, y, x) -> probabilities. Diffusion: a :class:`DiffusionModel`.
    """
    payload = load_run(path)
    cfg = dict(payload["model_config"], checkpoint=False)
    model = build_model(cfg)
    state = payload.get("ema_state_dict") or payload["state_dict"]
    for name, tensor in state.items():
        if torch.is_tensor(tensor) and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise VolsegError(model_file(path), f"holds non-finite weights (NaN/Inf in {name}); the run "
                              "diverged: train it again with a lower --lr")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise VolsegError(model_file(path), "weights do not match the recorded model config "
                          f"({str(exc).splitlines()[0][:160]}); retrain it") from None
    return model.to(resolve_device(device or "cpu")).eval()


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N`` -> a device.

    Raises
    ------
    VolsegError
        On ``--device``: an unknown name, or CUDA asked for where there is none.
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    text = str(spec).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "cuda" or (text.startswith("cuda:") and text[5:].isdigit()):
        if not torch.cuda.is_available():
            raise VolsegError("--device", "CUDA is not available on this machine; use --device cpu")
        index = int(text[5:]) if ":" in text else 0
        if index >= torch.cuda.device_count():
            raise VolsegError("--device", f"{text}: only {torch.cuda.device_count()} CUDA "
                              "device(s) here; use cuda:0")
        return torch.device(text)
    raise VolsegError("--device", f"unknown device {spec!r}; use auto, cpu, cuda or cuda:N")
