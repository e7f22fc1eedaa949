"""Export an nnU-Net v2 model folder to a deployable file (``volseg export FOLDER -o model.onnx``).

The exported module wraps the chosen folds' networks behind the contract of
:mod:`volseg.models.exported`: RAW voxels (N, C, z, y, x) in; the plans' normalisation
(CTNormalization: clip to ``percentile_00_5``/``percentile_99_5``, then ``(x - mean) / std``),
the mean of the folds' logits, then softmax over classes (sigmoid per region for region-based
models) inside; every class's probability out. No test-time mirroring.

``volseg predict model.onnx`` then blends those *probabilities* on volseg's own grid, which is
close to but not equal to nnU-Net (its predictor blends logits on its own grid, inside the
nonzero crop box): ``volseg predict FOLDER`` is the nnU-Net-equal path. Schemes that need
whole-image statistics (ZScoreNormalization, RescaleTo01Normalization) cannot live in a patch
model and are refused, as are plans with a non-identity ``transpose_forward``.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from volseg.errors import VolsegError
from volseg.models.nnunet.model import NnunetModel
from volseg.models.nnunet.normalization import EPS, NEEDS_STATS

#: Schemes an exported module computes from the plans alone.
PATCH_SCHEMES = ("CTNormalization", "NoNormalization", "RGBTo01Normalization")


class NnunetModule(torch.nn.Module):
    """Raw (N, C, z, y, x) -> probabilities of the folds' mean logits, normalisation inside.

    Parameters
    ----------
    model : NnunetModel
        A loaded folder (``tta=False``); its networks are shared, not copied.
    """

    def __init__(self, model: NnunetModel):
        super().__init__()
        self.networks = torch.nn.ModuleList(model.networks)
        self.regions = bool(model.regions)
        low, high, mean, std = normalisation_constants(model)
        shape = (1, -1, 1, 1, 1)
        for name, values in (("low", low), ("high", high), ("mean", mean), ("std", std)):
            self.register_buffer(name, torch.tensor(values, dtype=torch.float32).reshape(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (torch.clamp(x.float(), self.low, self.high) - self.mean) / self.std
        logits = self.networks[0](x)
        for net in self.networks[1:]:
            logits = logits + net(x)
        if len(self.networks) > 1:
            logits = logits / len(self.networks)
        return torch.sigmoid(logits) if self.regions else torch.softmax(logits, 1)


def normalisation_constants(model: NnunetModel) -> tuple[list[float], ...]:
    """Per channel (low, high, mean, std): ``clip(x, low, high)``, then ``(x - mean) / std``."""
    low, high, mean, std = [], [], [], []
    for c, scheme in enumerate(model.normalization_schemes):
        if scheme in NEEDS_STATS or scheme not in PATCH_SCHEMES:
            raise VolsegError(model.plans_path, f"channel {c} uses {scheme}, which needs statistics of the "
                                                "whole image and cannot be exported as a patch model; "
                                                "predict the folder directly: volseg predict FOLDER")
        if scheme == "CTNormalization":
            props = model.intensity_properties[c]
            low.append(float(props["percentile_00_5"]))
            high.append(float(props["percentile_99_5"]))
            mean.append(float(props["mean"]))
            std.append(max(float(props["std"]), EPS))
        else:  # NoNormalization; RGBTo01Normalization divides by 255
            low.append(-math.inf)
            high.append(math.inf)
            mean.append(0.0)
            std.append(255.0 if scheme == "RGBTo01Normalization" else 1.0)
    return low, high, mean, std


def plans_depth(model: NnunetModel) -> int:
    """log2 of the network's total downsampling (product of the plans' strides), the largest
    over the three axes, so every patch side a multiple of ``2**depth`` fits the network."""
    arch = (model.plans["configurations"][model.configuration].get("architecture") or {})
    strides = (arch.get("arch_kwargs") or {}).get("strides") or []
    totals = [1, 1, 1]
    for stride in strides:
        stride = [stride] * 3 if isinstance(stride, (int, float)) else list(stride)
        totals = [t * int(s) for t, s in zip(totals, stride)]
    factor = max(totals)
    if factor & (factor - 1):
        raise VolsegError(model.plans_path, f"downsamples by {totals} (product of the strides), not powers "
                                            "of two; predict the folder directly: volseg predict FOLDER")
    return factor.bit_length() - 1


def nnunet_metadata(model: NnunetModel, fmt: str) -> dict[str, Any]:
    """The ``volseg`` document of an exported folder (see :func:`volseg.models.export.export_metadata`)."""
    from volseg import __version__
    from volseg.models.export import OPSET
    from volseg.models.exported import EXPORT_FORMAT

    if tuple(model.transpose_forward) != (0, 1, 2):
        raise VolsegError(model.plans_path, f"transpose_forward is {list(model.transpose_forward)}: the "
                                            "network works in transposed axes, which export does not "
                                            "support; predict the folder directly: volseg predict FOLDER")
    low, high, mean, std = normalisation_constants(model)
    provenance = model.provenance()
    return {"format": EXPORT_FORMAT, "version": 1, "export_format": fmt, "kind": "unet",
            "in_channels": model.in_channels, "out_channels": model.out_channels,
            "depth": plans_depth(model), "patch": list(model.patch_size),
            "output": "probabilities (sigmoid per region)" if model.regions else "probabilities (softmax)",
            "input": "raw voxel values as float32, (N, C, z, y, x); normalisation inside",
            "norm_mean": None, "norm_std": None,
            "normalisation": {"schemes": list(model.normalization_schemes), "clip_low": low,
                              "clip_high": high, "mean": mean, "std": std,
                              "formula": "(clip(x, clip_low, clip_high) - mean) / std"},
            "labels": {k: (list(v) if isinstance(v, tuple) else v) for k, v in model.labels.items()},
            "source": str(model.path), "source_sha256": None, "nnunet": provenance,
            "step": None, "volseg_version": __version__, "opset": OPSET if fmt == "onnx" else None}


def _example(meta: dict[str, Any], sides: tuple[int, int, int], batch: int) -> torch.Tensor:
    """Raw inputs spanning the clip window (sides in units of ``2**depth``)."""
    norm = meta["normalisation"]
    gen = torch.Generator().manual_seed(0)
    shape = (batch, meta["in_channels"], *(s * 2 ** meta["depth"] for s in sides))
    centre = [m if math.isfinite(lo) else 0.0 for m, lo in zip(norm["mean"], norm["clip_low"])]
    spread = [s * 1.5 for s in norm["std"]]
    noise = torch.randn(shape, generator=gen)
    return noise * torch.tensor(spread).reshape(-1, 1, 1, 1) + torch.tensor(centre).reshape(-1, 1, 1, 1)


def export_nnunet(folder: str | os.PathLike, output: str | os.PathLike, *, fmt: str | None = None,
                  folds: Sequence[int | str] | None = None, checkpoint: str = "final",
                  trust: bool = False, overwrite: bool = False, check: bool = True) -> dict[str, Any]:
    """Export an nnU-Net v2 model folder's folds as one patch model (see the module docstring).

    Parameters
    ----------
    folder : path
        The folder ``Trainer__Plans__configuration`` (plans.json, dataset.json, fold_K/).
    output : path
        ``.onnx``, ``.pt2`` or ``.ts`` file; written and checked as
        :func:`volseg.models.export.export_model` does.
    fmt : {"onnx", "pt2", "torchscript"}, optional
        Default: from the suffix of ``output``.
    folds : sequence of int or "all", optional
        Folds whose logits are averaged; every fold with the checkpoint when omitted.
    checkpoint : {"final", "best"}
        ``checkpoint_final.pth`` or ``checkpoint_best.pth``.
    trust : bool
        Unpickle checkpoints the weights-only loader refuses.
    overwrite, check : bool
        As for :func:`volseg.models.export.export_model`.

    Returns
    -------
    dict
        ``{"output", "format", "bytes", "seconds", "metadata", "max_abs_diff"}``; the metadata's
        ``nnunet`` entry is :meth:`NnunetModel.provenance` (folder, trainer, folds, checkpoint,
        each fold's weights sha256) and ``patch`` the plans' patch size (z, y, x).
    """
    from volseg.io.identity import local_path
    from volseg.models.export import check_output, parse_format, write_checked

    t0 = time.perf_counter()
    folder = Path(local_path(os.fspath(folder)))
    target = check_output(output, folder, fmt, overwrite)
    name = parse_format(target, fmt)
    model = NnunetModel(folder, folds=folds, checkpoint=checkpoint, tta=False, device="cpu", trust=trust)
    meta = nnunet_metadata(model, name)
    module = NnunetModule(model).eval()
    result = write_checked(module, meta, target, name, output, _example, check=check)
    result["seconds"] = round(time.perf_counter() - t0, 3)
    return result


def export_run_or_folder(run: str | os.PathLike, output: str | os.PathLike, *, fmt: str | None = None,
                         folds: Sequence[int | str] | None = None, checkpoint: str = "final",
                         trust: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """``volseg export``: :func:`export_nnunet` for an nnU-Net folder, else
    :func:`volseg.models.export.export_model`, whose runs refuse the folder-only options."""
    from volseg.models.nnunet.folder import is_model_folder

    if not is_model_folder(run):
        if folds is not None or checkpoint != "final" or trust:
            raise VolsegError(run, "is not an nnU-Net model folder; --folds, --checkpoint and "
                                   "--trust-checkpoint apply to nnU-Net folders only: drop them")
        from volseg.models.export import export_model

        return export_model(run, output, fmt=fmt, overwrite=overwrite)
    choice = str(checkpoint).strip().lower()
    if choice not in ("final", "best"):
        raise VolsegError("--checkpoint", f"{checkpoint!r} is not final or best")
    return export_nnunet(run, output, fmt=fmt, folds=folds, checkpoint=choice, trust=trust, overwrite=overwrite)
