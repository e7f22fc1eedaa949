"""Residual 3D UNet (the Vesuvius surface-detection notebook, SPEC section 3).

Each block is Conv3d -> GroupNorm -> LeakyReLU -> Conv3d -> GroupNorm, plus a shortcut (a 1x1x1
convolution when the channel count changes), then LeakyReLU. The encoder max-pools, the decoder
upsamples with transposed convolutions and concatenates the encoder features (skip
connections). The head is a 1x1x1 convolution with a sigmoid (one class) or a softmax (several).

Input normalisation ``(x - norm_mean) / norm_std`` happens inside the module, so the model maps
RAW voxel values (N, C, z, y, x) to probabilities of the same spatial shape. With
``checkpoint=True`` every block (encoder, bottleneck and each decoder stage) is recomputed in
the backward pass instead of keeping its activations, while training.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint as _checkpoint

from volseg.errors import VolsegError
from volseg.models.normalize import Standardize, group_norm

OUTPUTS = ("probability", "image")


def conv3(in_channels: int, out_channels: int, *, separable: bool = False) -> nn.Module:
    """A 3x3x3 convolution (padding 1), or its depthwise-separable version.

    The separable version is a depthwise 3x3x3 convolution (one filter per input channel)
    followed by a pointwise 1x1x1 convolution: about ``27 / out_channels + 1`` times fewer
    weights, a memory lever for large patches.
    """
    if not separable:
        return nn.Conv3d(in_channels, out_channels, kernel_size=3, padding=1)
    return nn.Sequential(
        nn.Conv3d(in_channels, in_channels, kernel_size=3, padding=1, groups=in_channels,
                  bias=False),
        nn.Conv3d(in_channels, out_channels, kernel_size=1),
    )


class ResidualBlock(nn.Module):
    """Conv3d -> GroupNorm -> LeakyReLU -> Conv3d -> GroupNorm, + shortcut, -> LeakyReLU.

    Parameters
    ----------
    in_channels, out_channels : int
        Channels in and out; the shortcut is a 1x1x1 convolution when they differ.
    separable : bool
        Use depthwise-separable 3x3x3 convolutions.
    groups : int
        Upper bound on GroupNorm groups (adapted down when channels are few).
    """

    def __init__(self, in_channels: int, out_channels: int, *, separable: bool = False,
                 groups: int = 8):
        super().__init__()
        self.conv1 = conv3(in_channels, out_channels, separable=separable)
        self.gn1 = group_norm(out_channels, groups)
        self.conv2 = conv3(out_channels, out_channels, separable=separable)
        self.gn2 = group_norm(out_channels, groups)
        self.shortcut = (nn.Conv3d(in_channels, out_channels, kernel_size=1)
                         if in_channels != out_channels else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            h = F.leaky_relu(self.gn1(self.conv1(x)), 0.01)
            h = self.gn2(self.conv2(h))
            return _autocast_output(F.leaky_relu(h + self.shortcut(x), 0.01))
        # Inference: the same values in place, without a new tensor for each activation and for
        # the sum (5 % of a CPU forward at 64^3; benchmarks/predict_speed.py).
        h = F.leaky_relu_(self.gn1(self.conv1(x)), 0.01)
        h = self.gn2(self.conv2(h))
        h += self.shortcut(x)
        return _autocast_output(F.leaky_relu_(h, 0.01))


def _autocast_output(x: torch.Tensor) -> torch.Tensor:
    """Under autocast, hand the block's output on in the autocast dtype (bf16/fp16).

    GroupNorm runs in float32 under autocast, so a block would otherwise emit float32: the
    skips, the pooled maps and the inputs that checkpointing keeps would stay full size, and
    ``--amp`` would save nothing on top of ``--checkpoint``.
    """
    device = x.device.type
    if torch.is_autocast_enabled(device):
        return x.to(torch.get_autocast_dtype(device))
    return x


class UpStage(nn.Module):
    """Transposed-conv upsampling by 2, concatenation with the skip, residual block."""

    def __init__(self, in_channels: int, out_channels: int, *, separable: bool, groups: int):
        super().__init__()
        self.up = nn.ConvTranspose3d(in_channels, out_channels, kernel_size=2, stride=2)
        self.block = ResidualBlock(2 * out_channels, out_channels, separable=separable,
                                   groups=groups)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.block(torch.cat((self.up(x), skip), dim=1))


class UNet3D(nn.Module):
    """Residual 3D UNet mapping raw (N, C, z, y, x) volumes to per-voxel probabilities.

    Parameters
    ----------
    in_channels : int
        Input channels C.
    out_channels : int
        Classes. 1: sigmoid probability of the foreground; several: softmax over classes. With
        ``output="image"``: image channels.
    features : int
        Channels of the first level; level k has ``features * 2**k`` (bottleneck
        ``features * 2**depth``).
    depth : int
        Number of max-poolings; patch sides must be divisible by ``2**depth``.
    separable : bool
        Depthwise-separable 3x3x3 convolutions.
    groups : int
        Upper bound on GroupNorm groups.
    checkpoint : bool
        Gradient-checkpoint every block while training (less memory, ~30% more time).
    norm_mean, norm_std : float or sequence of float
        Input standardisation applied inside :meth:`forward` (one value or one per channel).
    output : {"probability", "image"}
        ``probability``: segmentation (sigmoid / softmax head). ``image``: regression of an
        image (the L1/L2 baseline of image translation): the head predicts the standardised
        target and :meth:`forward` returns it in raw target units.
    target_mean, target_std : float
        Standardisation of the target for ``output="image"``.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, *, features: int = 16,
                 depth: int = 3, separable: bool = False, groups: int = 8,
                 checkpoint: bool = False, norm_mean: float | Sequence[float] = 0.0,
                 norm_std: float | Sequence[float] = 1.0, output: str = "probability",
                 target_mean: float = 0.0, target_std: float = 1.0):
        super().__init__()
        if output not in OUTPUTS:
            raise VolsegError("model.output", f"unknown output {output!r}; use one of {', '.join(OUTPUTS)}")
        self.output = output
        if output == "image":  # no buffer otherwise: segmentation state dicts stay as they were
            self.target_norm = Standardize(out_channels, target_mean, target_std)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.depth = depth
        self.checkpoint = checkpoint
        self.normalize = Standardize(in_channels, norm_mean, norm_std)
        widths = [features * 2 ** k for k in range(depth + 1)]
        self.encoders = nn.ModuleList()
        previous = in_channels
        for width in widths[:-1]:
            self.encoders.append(ResidualBlock(previous, width, separable=separable,
                                               groups=groups))
            previous = width
        self.pool = nn.MaxPool3d(2, 2)
        self.bottleneck = ResidualBlock(widths[-2] if depth else in_channels, widths[-1],
                                        separable=separable, groups=groups)
        self.decoders = nn.ModuleList(
            UpStage(widths[k + 1], widths[k], separable=separable, groups=groups)
            for k in reversed(range(depth)))
        self.head = nn.Conv3d(widths[0], out_channels, kernel_size=1)

    def _run(self, module: nn.Module, *args: torch.Tensor) -> torch.Tensor:
        if self.checkpoint and self.training and torch.is_grad_enabled():
            return _checkpoint(module, *args, use_reentrant=False)
        return module(*args)

    def _pool(self, h: torch.Tensor) -> torch.Tensor:
        # CPU autocast runs max_pool3d in float32 and keeps that copy for backward; pool in
        # the block's (autocast) dtype instead, which max pooling computes exactly.
        device = h.device.type
        if torch.is_autocast_enabled(device):
            with torch.autocast(device, enabled=False):
                return self.pool(h)
        return self.pool(h)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Raw (N, C, z, y, x) -> class logits (N, out_channels, z, y, x), before the head's
        activation (what the training loss uses)."""
        h = self.normalize(x)
        skips = []
        for encoder in self.encoders:
            h = self._run(encoder, h)
            skips.append(h)
            h = self._pool(h)
        h = self._run(self.bottleneck, h)
        for decoder, skip in zip(self.decoders, reversed(skips)):
            h = self._run(decoder, h, skip)
        return self.head(h)

    def normalize_target(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw target (N, C, z, y, x) -> the units :meth:`logits` predicts (``output="image"``)."""
        return self.target_norm(raw)

    def activation(self, logits: torch.Tensor) -> torch.Tensor:
        """Sigmoid for one output channel, softmax over channels for several; for
        ``output="image"`` the standardised prediction back in raw target units."""
        if self.output == "image":
            return self.target_norm.inverse(logits)
        if self.out_channels == 1:
            return torch.sigmoid(logits)
        return torch.softmax(logits, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw (N, C, z, y, x) -> probabilities (or the image) (N, out_channels, z, y, x)."""
        return self.activation(self.logits(x))
