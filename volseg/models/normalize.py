"""Normalisation helpers shared by the models: adaptive GroupNorm and raw-value scaling.

Axis order is (N, C, z, y, x) throughout.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def group_count(channels: int, max_groups: int = 8) -> int:
    """Number of GroupNorm groups for ``channels``: at most ``max_groups``, dividing ``channels``.

    Aims for at least two channels per group, so a layer with few channels still normalises
    over more than one channel (4 channels -> 2 groups, 16 -> 8, 1 -> 1).

    Parameters
    ----------
    channels : int
        Channels of the normalised tensor.
    max_groups : int
        Upper bound (8 in the Vesuvius notebook, 32 in the DDPM UNet).

    Returns
    -------
    int
        A divisor of ``channels``.
    """
    groups = max(1, min(max_groups, channels // 2))
    while channels % groups:
        groups -= 1
    return groups


def group_norm(channels: int, max_groups: int = 8) -> nn.GroupNorm:
    """A ``GroupNorm`` over ``channels`` with :func:`group_count` groups (eps 1e-6, affine)."""
    return nn.GroupNorm(group_count(channels, max_groups), channels, eps=1e-6, affine=True)


def _as_channel_tensor(value: float | Sequence[float], channels: int) -> torch.Tensor:
    values = [float(v) for v in value] if isinstance(value, (list, tuple)) else [float(value)]
    if len(values) == 1:
        values = values * channels
    return torch.tensor(values, dtype=torch.float32).reshape(1, channels, 1, 1, 1)


class Standardize(nn.Module):
    """``(x - mean) / std`` per channel, with the statistics held as (non-persistent) buffers.

    Parameters
    ----------
    channels : int
        Channels C of the (N, C, z, y, x) input.
    mean, std : float or sequence of float
        One value for all channels, or one per channel. ``std`` must be positive.
    """

    def __init__(self, channels: int, mean: float | Sequence[float] = 0.0,
                 std: float | Sequence[float] = 1.0):
        super().__init__()
        self.register_buffer("mean", _as_channel_tensor(mean, channels), persistent=False)
        self.register_buffer("std", _as_channel_tensor(std, channels).clamp_min(1e-8),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        """Back to raw units: ``x * std + mean``."""
        return x * self.std.to(x.dtype) + self.mean.to(x.dtype)
