"""Run an ONNX model that ``volseg export`` did not write (a "foreign" ONNX file).

Such a file carries no ``volseg`` metadata, so predict reads what it can from the graph
(:func:`foreign_meta`): the input channels from the input's C dimension (must be fixed), the
output channels from the output's C dimension (or from one probe forward when it is dynamic),
and the patch from a fixed (z, y, x) input shape. What the graph does not say comes from
options, applied around ``session.run`` (:func:`wrap`): ``--normalize`` on the raw voxels before
the graph, ``--activation`` on its output. Axis order (z, y, x); sizes in voxels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from volseg.errors import VolsegError

#: ``format`` of the metadata :func:`foreign_meta` builds (a ``volseg export`` file has ``volseg-export``).
FOREIGN_FORMAT = "foreign-onnx"
ACTIVATIONS = ("sigmoid", "softmax", "none")
NORMALIZE_FIX = ("use zscore (each patch to mean 0, std 1), ct:LOW,HIGH,MEAN,STD (clip to [LOW, HIGH], "
                 "then (x - MEAN) / STD, e.g. ct:-1000,1000,40,300) or none")


def parse_normalize(value) -> str | None:
    """``--normalize``: ``zscore``, ``ct:LOW,HIGH,MEAN,STD`` or ``none`` (None: not given).

    Examples
    --------
    >>> parse_normalize("CT:-1000, 1000, 40, 300"), parse_normalize("zscore"), parse_normalize(None)
    ('ct:-1000.0,1000.0,40.0,300.0', 'zscore', None)
    """
    if value is None:
        return None
    text = str(value).strip().lower().replace(" ", "")
    if text in ("zscore", "none"):
        return text
    if text.startswith("ct:"):
        try:
            low, high, mean, std = (float(p) for p in text[3:].split(","))
        except ValueError:
            low = high = mean = std = float("nan")
        if all(map(math.isfinite, (low, high, mean, std))) and low < high and std > 0:
            return f"ct:{low!r},{high!r},{mean!r},{std!r}"
    raise VolsegError("--normalize", f"{value!r} is not a normalization; {NORMALIZE_FIX} "
                      "(ct needs 4 finite numbers, LOW < HIGH, STD > 0)")


def parse_activation(value) -> str | None:
    """``--activation``: ``sigmoid``, ``softmax`` (over channels) or ``none`` (None: not given)."""
    if value is None:
        return None
    text = str(value).strip().lower()
    if text not in ACTIVATIONS:
        raise VolsegError("--activation", f"{value!r} is not an activation; use sigmoid, softmax (over the "
                          "output channels) or none (the graph's output as is)")
    return text


@dataclass(frozen=True)
class Foreign:
    """What a foreign ONNX file is run with: normalization, activation and the patch (z, y, x)."""

    normalize: str = "none"
    activation: str = "none"
    patch: tuple[int, int, int] | None = None


def _dim(value) -> int | None:
    return int(value) if isinstance(value, int) and value > 0 else None


def foreign_meta(path: Path, session, call, patch=None) -> dict:
    """The metadata predict needs, read from the graph of an onnxruntime ``session``.

    ``call`` runs the session on a torch tensor; it is used once, on zeros of ``patch`` (or the
    fixed input shape), when the output's channel dimension is dynamic.
    """
    shape = session.get_inputs()[0].shape
    in_channels = _dim(shape[1])
    if in_channels is None:
        raise VolsegError(path, f"has a dynamic channel dimension {shape[1]!r} in its input {list(shape)}; "
                          "predict needs a fixed C in (N, C, z, y, x): export the model with a fixed C")
    fixed = tuple(_dim(s) for s in shape[2:])
    fixed = fixed if all(fixed) else None
    outputs = session.get_outputs()
    out_channels = _dim(outputs[0].shape[1]) if len(outputs[0].shape) == 5 else None
    if out_channels is None and (fixed or patch):
        import torch

        probe = torch.zeros((1, in_channels, *(fixed or patch)), dtype=torch.float32)
        got = batched(call, _dim(shape[0]))(probe)
        if got.ndim != 5:
            raise VolsegError(path, f"returns a {got.ndim}D output {list(got.shape)}; predict needs "
                              "(N, C, z, y, x)")
        out_channels = int(got.shape[1])
    return {"format": FOREIGN_FORMAT, "kind": "unet", "depth": 0, "export_format": "onnx",
            "in_channels": in_channels, "out_channels": out_channels, "patch": list(fixed) if fixed else None,
            "batch": _dim(shape[0])}


def foreign_patch(path, fixed, requested) -> tuple[int, int, int]:
    """The patch to run: the graph's ``fixed`` (z, y, x) shape, or ``--patch`` for a dynamic one."""
    if fixed:
        fixed = tuple(int(p) for p in fixed)
        if requested is not None and tuple(requested) != fixed:
            raise VolsegError("--patch", f"{'x'.join(map(str, requested))}: {path} takes fixed patches of "
                              f"{'x'.join(map(str, fixed))}; use --patch {'x'.join(map(str, fixed))} or leave it out")
        return fixed
    if requested is None:
        raise VolsegError("--patch", f"is required: {path} has a dynamic (z, y, x) input shape; give the "
                          "patch it was trained on, e.g. --patch 128")
    return tuple(int(p) for p in requested)


def normalize(x, how: str):
    """``x`` (N, C, z, y, x) normalized as ``how`` says (:func:`parse_normalize`)."""
    import torch

    if how == "zscore":  # each patch and channel over its own voxels, as nnU-Net's ZScoreNormalization
        mean = x.mean(dim=(2, 3, 4), keepdim=True)
        std = x.std(dim=(2, 3, 4), keepdim=True, unbiased=False)
        return (x - mean) / torch.clamp(std, min=1e-8)
    if how.startswith("ct:"):  # nnU-Net's CTNormalization with the dataset's statistics
        low, high, mean, std = (float(p) for p in how[3:].split(","))
        return (torch.clamp(x, low, high) - mean) / max(std, 1e-8)
    return x


def activate(y, how: str):
    """The graph's output ``y`` (N, C, z, y, x) through ``how``: sigmoid, softmax over C, or none."""
    import torch

    if how == "sigmoid":
        return torch.sigmoid(y)
    if how == "softmax":
        return torch.softmax(y, dim=1)
    return y


def batched(call, batch: int | None):
    """``call`` for any number of patches where the graph takes a fixed ``batch`` (None: any):
    the patches go through in groups of ``batch``, the last one filled up with zeros."""
    if batch is None:
        return call

    def run(x):
        import torch

        outs = []
        for lo in range(0, x.shape[0], batch):
            part = x[lo:lo + batch]
            fill = batch - part.shape[0]
            if fill:
                part = torch.cat([part, part.new_zeros((fill, *part.shape[1:]))])
            outs.append(call(part)[:batch - fill])
        return torch.cat(outs)

    return run


def wrap(call, foreign: Foreign, batch: int | None = None):
    """``call`` (raw voxels in, a fixed ``batch`` or any) with ``foreign``'s normalization before
    and activation after it."""
    call = batched(call, batch)

    def run(x):
        return activate(call(normalize(x.float(), foreign.normalize)), foreign.activation)

    return run
