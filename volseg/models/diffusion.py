"""Conditional 3D diffusion model (the Fast-DDPM / DDIM UNet ported to volumes).

:class:`DDPMUNet3D` is the DDPM UNet with 3D layers: a sinusoidal timestep embedding,
:class:`ResnetBlock3D` blocks that add the embedding, :class:`AttnBlock3D` self-attention only at
the coarsest level (plus the middle block), :class:`Downsample3D` (pad (0,1,0,1,0,1) + stride-2
conv) and :class:`Upsample3D` (trilinear x2 + conv). Its input is the condition concatenated with
the noisy volume x_t along channels; its output is the predicted noise epsilon, the predicted
clean target x_0 or the velocity v, as :attr:`DiffusionModel.prediction` says
(see :mod:`volseg.models.ddim`).

:class:`DiffusionModel` wraps the denoiser with everything needed to use it on raw data: the
noise schedule, the ~10 timesteps it was trained and samples on, and the normalisation of the
condition and the target.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint as _checkpoint

from volseg.models import ddim
from volseg.models.normalize import Standardize, group_norm


def timestep_embedding(timesteps: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding (N,) -> (N, dim) of the DDPM / transformer papers."""
    half = dim // 2
    scale = math.log(10000) / max(half - 1, 1)
    freqs = torch.exp(torch.arange(half, dtype=torch.float32, device=timesteps.device) * -scale)
    args = timesteps.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def _norm(channels: int) -> nn.GroupNorm:
    return group_norm(channels, 32)


class Upsample3D(nn.Module):
    """Trilinear x2 upsampling, then a 3x3x3 convolution when ``with_conv``."""

    def __init__(self, channels: int, with_conv: bool = True):
        super().__init__()
        self.conv = nn.Conv3d(channels, channels, 3, padding=1) if with_conv else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="trilinear", align_corners=False)
        return self.conv(x) if self.conv is not None else x


class Downsample3D(nn.Module):
    """Halve every side: pad (0,1,0,1,0,1) + stride-2 3x3x3 conv, or 2x2x2 average pooling."""

    def __init__(self, channels: int, with_conv: bool = True):
        super().__init__()
        self.conv = nn.Conv3d(channels, channels, 3, stride=2, padding=0) if with_conv else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv is None:
            return F.avg_pool3d(x, kernel_size=2, stride=2)
        return self.conv(F.pad(x, (0, 1, 0, 1, 0, 1), mode="constant", value=0.0))


class ResnetBlock3D(nn.Module):
    """GroupNorm -> swish -> conv, + timestep embedding, GroupNorm -> swish -> dropout -> conv,
    + shortcut (1x1x1 conv, or 3x3x3 with ``conv_shortcut``, when channels change)."""

    def __init__(self, *, in_channels: int, out_channels: int | None = None,
                 conv_shortcut: bool = False, dropout: float = 0.0, temb_channels: int = 512):
        super().__init__()
        out_channels = out_channels or in_channels
        self.norm1 = _norm(in_channels)
        self.conv1 = nn.Conv3d(in_channels, out_channels, 3, padding=1)
        self.temb_proj = nn.Linear(temb_channels, out_channels)
        self.norm2 = _norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv3d(out_channels, out_channels, 3, padding=1)
        if in_channels == out_channels:
            self.shortcut = nn.Identity()
        elif conv_shortcut:
            self.shortcut = nn.Conv3d(in_channels, out_channels, 3, padding=1)
        else:
            self.shortcut = nn.Conv3d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb_proj(F.silu(temb))[:, :, None, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.shortcut(x) + h


class AttnBlock3D(nn.Module):
    """Single-head self-attention over all z*y*x positions (used at the coarsest level only).

    Uses ``scaled_dot_product_attention``, so the (zyx x zyx) weight matrix is never
    materialised where a fused kernel exists.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.norm = _norm(channels)
        self.q = nn.Conv3d(channels, channels, 1)
        self.k = nn.Conv3d(channels, channels, 1)
        self.v = nn.Conv3d(channels, channels, 1)
        self.proj_out = nn.Conv3d(channels, channels, 1)

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.norm(x)
        b, c, d, hh, w = h.shape
        q, k, v = (m(h).reshape(b, 1, c, d * hh * w).transpose(2, 3)
                   for m in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)  # (b, 1, dhw, c)
        out = out.transpose(2, 3).reshape(b, c, d, hh, w)
        return x + self.proj_out(out)


class DDPMUNet3D(nn.Module):
    """The DDPM UNet in 3D: eps = f(cat[condition, x_t], t).

    Parameters
    ----------
    in_channels : int
        Condition channels + noisy channels (2 for one-channel volumes).
    out_ch : int
        Predicted noise channels (1).
    ch : int
        Base channels; level k has ``ch * ch_mult[k]``.
    ch_mult : sequence of int
        Channel multipliers per level; ``len(ch_mult) - 1`` downsamplings.
    num_res_blocks : int
        Residual blocks per level.
    dropout : float
        Dropout inside the residual blocks.
    attn : bool
        Self-attention at the coarsest level and in the middle block.
    resamp_with_conv : bool
        Convolutions in the up/downsampling layers.
    checkpoint : bool
        Gradient-checkpoint every block while training.
    """

    def __init__(self, *, in_channels: int = 2, out_ch: int = 1, ch: int = 32,
                 ch_mult: Sequence[int] = (1, 2, 4), num_res_blocks: int = 1,
                 dropout: float = 0.0, attn: bool = True, resamp_with_conv: bool = True,
                 checkpoint: bool = False):
        super().__init__()
        self.ch = ch
        self.temb_ch = ch * 4
        self.num_resolutions = len(ch_mult)
        self.num_res_blocks = num_res_blocks
        self.depth = self.num_resolutions - 1
        self.checkpoint = checkpoint
        self.temb = nn.Sequential(nn.Linear(ch, self.temb_ch), nn.SiLU(),
                                  nn.Linear(self.temb_ch, self.temb_ch))
        self.conv_in = nn.Conv3d(in_channels, ch, 3, padding=1)
        coarsest = self.num_resolutions - 1
        block = {"temb_channels": self.temb_ch, "dropout": dropout}

        in_mult = (1,) + tuple(ch_mult)
        self.down = nn.ModuleList()
        skip_channels = [ch]
        block_in = ch
        for level in range(self.num_resolutions):
            stage = nn.Module()
            stage.block, stage.attn = nn.ModuleList(), nn.ModuleList()
            block_in, block_out = ch * in_mult[level], ch * ch_mult[level]
            for _ in range(num_res_blocks):
                stage.block.append(ResnetBlock3D(in_channels=block_in, out_channels=block_out,
                                                 **block))
                block_in = block_out
                if attn and level == coarsest:
                    stage.attn.append(AttnBlock3D(block_in))
                skip_channels.append(block_in)
            if level != coarsest:
                stage.downsample = Downsample3D(block_in, resamp_with_conv)
                skip_channels.append(block_in)
            self.down.append(stage)

        self.mid = nn.ModuleList([ResnetBlock3D(in_channels=block_in, out_channels=block_in,
                                                **block)])
        if attn:
            self.mid.append(AttnBlock3D(block_in))
        self.mid.append(ResnetBlock3D(in_channels=block_in, out_channels=block_in, **block))

        self.up = nn.ModuleList()
        for level in reversed(range(self.num_resolutions)):
            stage = nn.Module()
            stage.block, stage.attn = nn.ModuleList(), nn.ModuleList()
            block_out = ch * ch_mult[level]
            for _ in range(num_res_blocks + 1):
                stage.block.append(ResnetBlock3D(in_channels=block_in + skip_channels.pop(),
                                                 out_channels=block_out, **block))
                block_in = block_out
                if attn and level == coarsest:
                    stage.attn.append(AttnBlock3D(block_in))
            if level != 0:
                stage.upsample = Upsample3D(block_in, resamp_with_conv)
            self.up.insert(0, stage)

        self.norm_out = _norm(block_in)
        self.conv_out = nn.Conv3d(block_in, out_ch, 3, padding=1)

    def _run(self, module: nn.Module, *args: torch.Tensor) -> torch.Tensor:
        if self.checkpoint and self.training and torch.is_grad_enabled():
            return _checkpoint(module, *args, use_reentrant=False)
        return module(*args)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """(N, in_channels, z, y, x) and timesteps (N,) -> eps (N, out_ch, z, y, x)."""
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        temb = self.temb(timestep_embedding(t, self.ch).to(x.dtype))
        hs = [self.conv_in(x)]
        for level, stage in enumerate(self.down):
            for i, block in enumerate(stage.block):
                h = self._run(block, hs[-1], temb)
                if len(stage.attn) > 0:
                    h = self._run(stage.attn[i], h)
                hs.append(h)
            if level != self.num_resolutions - 1:
                hs.append(self._run(stage.downsample, hs[-1]))
        h = hs[-1]
        for module in self.mid:
            h = self._run(module, h, temb)
        for level in reversed(range(self.num_resolutions)):
            stage = self.up[level]
            for i, block in enumerate(stage.block):
                h = self._run(block, torch.cat([h, hs.pop()], dim=1), temb)
                if len(stage.attn) > 0:
                    h = self._run(stage.attn[i], h)
            if level != 0:
                h = self._run(stage.upsample, h)
        return self.conv_out(F.silu(self.norm_out(h)))


class DiffusionModel(nn.Module):
    """A trained conditional diffusion model usable on raw volumes.

    Parameters
    ----------
    denoiser : DDPMUNet3D
        eps = denoiser(cat[normalized condition, x_t], t).
    alphas_cumprod : torch.Tensor
        Cumulative products of (1 - beta), shape (num_diffusion_timesteps,).
    timesteps : sequence of int
        The ascending timesteps used in training and sampling.
    norm_mean, norm_std : float or sequence of float
        Standardisation of the condition (raw -> model units).
    target_mean, target_std : float
        Standardisation of the target (model units -> raw via :meth:`denormalize`).
    target_range : (float, float), optional
        Raw range of the training targets; with ``clip_x0`` the x_0 estimates of every
        sampling step are clamped to it (widened by 10% of its span on both sides).
    clip_x0 : bool
        Clamp x_0 estimates while sampling (see :func:`volseg.models.ddim.ddim_step`).
    start_t : int, optional
        Start sampling at the largest training timestep <= ``start_t`` from the noised
        condition instead of at the last one from pure noise (see :meth:`initial_state`).
    prediction : {"eps", "x0", "v"}
        What the denoiser outputs (``diffusion.prediction``; runs without it predict eps).
    """

    def __init__(self, denoiser: DDPMUNet3D, *, alphas_cumprod: torch.Tensor,
                 timesteps: Sequence[int], norm_mean: float | Sequence[float] = 0.0,
                 norm_std: float | Sequence[float] = 1.0, target_mean: float = 0.0,
                 target_std: float = 1.0, target_range: Sequence[float] | None = None,
                 clip_x0: bool = True, start_t: int | None = None, prediction: str = "eps"):
        super().__init__()
        self.denoiser = denoiser
        self.prediction = ddim.check_prediction(prediction)
        self.timesteps = [int(t) for t in timesteps]
        self.depth = denoiser.depth
        self.register_buffer("alphas_cumprod", alphas_cumprod.float(), persistent=False)
        condition_channels = denoiser.conv_in.in_channels - denoiser.conv_out.out_channels
        self.condition_norm = Standardize(condition_channels, norm_mean, norm_std)
        self.target_norm = Standardize(denoiser.conv_out.out_channels, target_mean, target_std)
        self.start_t = None if start_t is None else int(start_t)
        self.x0_range: tuple[float, float] | None = None
        if clip_x0 and target_range is not None:
            low, high = (float(v) for v in target_range)
            margin = 0.1 * (high - low)
            std = max(float(target_std), 1e-8)
            self.x0_range = ((low - margin - target_mean) / std,
                             (high + margin - target_mean) / std)

    @property
    def checkpoint(self) -> bool:
        return self.denoiser.checkpoint

    @checkpoint.setter
    def checkpoint(self, value: bool) -> None:
        self.denoiser.checkpoint = bool(value)

    def normalize_condition(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw condition (N, C, z, y, x) -> model units."""
        return self.condition_norm(raw)

    def normalize_target(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw target (N, 1, z, y, x) -> model units (what x_0 is during training)."""
        return self.target_norm(raw)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Model units -> raw target units."""
        return self.target_norm.inverse(x)

    def alpha(self, t: int) -> float:
        """Cumulative alpha at timestep ``t``; 1.0 for ``t < 0`` (the clean end)."""
        return ddim.alpha_at(self.alphas_cumprod, t)

    @torch.no_grad()
    def sample(self, condition_raw: torch.Tensor, *, eta: float = 0.0,
               generator: torch.Generator | None = None,
               noise: torch.Tensor | None = None) -> torch.Tensor:
        """DDIM-sample the target for a whole patch or volume, in raw target units.

        Parameters
        ----------
        condition_raw : torch.Tensor
            (N, C, z, y, x) raw condition on the model's device; sides divisible by 2**depth.
        eta : float
            0 = deterministic DDIM; 1 = DDPM-like stochastic steps.
        generator : torch.Generator, optional
            CPU generator for the start noise and the eta noise (seeded runs).
        noise : torch.Tensor, optional
            Standard normal start noise (N, 1, z, y, x); drawn from ``generator`` when
            omitted. Pure noise is x_T; with :attr:`start_t` it noises the condition.
        """
        condition = self.normalize_condition(condition_raw)
        shape = (condition.shape[0], self.denoiser.conv_out.out_channels, *condition.shape[2:])
        if noise is None:
            noise = torch.randn(shape, generator=generator)
        seq = self.sampling_timesteps()
        x_start = self.initial_state(condition_raw, noise.to(condition.device))
        x0 = ddim.sample(self._eps, condition, shape=shape, timesteps=seq,
                         alphas_cumprod=self.alphas_cumprod, eta=eta, generator=generator,
                         noise=x_start, clip=self.x0_range, prediction=self.prediction)
        return self.denormalize(x0)

    def sampling_timesteps(self) -> list[int]:
        """The timesteps sampling walks (descending from the last): all of :attr:`timesteps`, or
        those up to :attr:`start_t` when sampling starts from the noised condition."""
        if self.start_t is None:
            return list(self.timesteps)
        return [t for t in self.timesteps if t <= self.start_t] or [self.timesteps[0]]

    def initial_state(self, condition_raw: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x at the first sampling timestep (model units) from standard normal ``noise``.

        Pure noise (Fast-DDPM), or with :attr:`start_t` set (SDEdit-style partial sampling,
        for condition and target in the same units, e.g. denoising): the condition, read as a
        target, diffused to that timestep: ``sqrt(a) * normalize_target(condition) +
        sqrt(1 - a) * noise``.
        """
        if self.start_t is None:
            return noise
        a = self.alpha(self.sampling_timesteps()[-1])
        as_target = self.normalize_target(condition_raw[:, : noise.shape[1]].float())
        return a ** 0.5 * as_target + (1.0 - a) ** 0.5 * noise.to(as_target.dtype)

    def _eps(self, condition: torch.Tensor, x_t: torch.Tensor, t: int) -> torch.Tensor:
        """The denoiser's output (eps, x_0 or v, see :attr:`prediction`) at timestep ``t``."""
        steps = torch.full((x_t.shape[0],), float(t), device=x_t.device)
        return self.denoiser(torch.cat([condition, x_t], dim=1), steps)

    def forward(self, condition_raw: torch.Tensor) -> torch.Tensor:
        """Deterministic (eta 0) sample from a fixed seed, in raw target units."""
        generator = torch.Generator().manual_seed(0)
        return self.sample(condition_raw, eta=0.0, generator=generator)
