"""Blending windows: how much each patch's output counts at each voxel when patches overlap.

Every window is separable, a product of three 1D profiles along (z, y, x), so a window is
stored as three small vectors and expanded only over the box where it is needed. Sizes and
positions are in voxels.

Modes
-----
``gaussian`` (default)
    ``exp(-(i - c)^2 / (2 sigma^2))`` with ``c = (P - 1) / 2`` and ``sigma = sigma_scale * P``
    (``sigma_scale`` 1/8 as in nnU-Net and MONAI), scaled to a peak of 1 and clamped below at
    ``1e-3`` so border voxels covered by a single patch keep a finite weight.
``hann``
    A Hann profile that never reaches zero (``hann(P + 2)[1:-1]``), clamped at ``1e-3``.
``constant``
    Uniform weight 1: a plain average of the overlapping patches.
``crop``
    Weight 1 where the patch's centre is the nearest patch centre, 0 elsewhere: every voxel is
    taken from exactly one patch (ties go to the lower patch). The grid is separable, so the
    Euclidean nearest centre is the nearest centre along each axis.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from volseg.errors import VolsegError

BLEND_MODES = ("gaussian", "hann", "constant", "crop")
MIN_WEIGHT = 1e-3


def parse_blend(mode: str) -> str:
    """Validate ``--blend``: one of gaussian, hann, constant, crop."""
    text = str(mode).strip().lower()
    if text not in BLEND_MODES:
        raise VolsegError("--blend", f"unknown blend mode {mode!r}; use one of {', '.join(BLEND_MODES)}")
    return text


#: Blends ``volseg predict`` accepts: :data:`BLEND_MODES` and ``nnunet`` (nnU-Net's own gaussian
#: logit blending on nnU-Net's tile grid; nnU-Net model folders only, see
#: :mod:`volseg.inference.nnunet_pass`).
PREDICT_BLENDS = BLEND_MODES + ("nnunet",)


def parse_predict_blend(mode: str) -> str:
    """Validate ``volseg predict --blend``: one of :data:`PREDICT_BLENDS`."""
    text = str(mode).strip().lower()
    if text not in PREDICT_BLENDS:
        raise VolsegError("--blend", f"unknown blend mode {mode!r}; use one of {', '.join(PREDICT_BLENDS)}")
    return text


def parse_sigma_scale(value: float) -> float:
    """Validate the gaussian ``sigma_scale`` (sigma = sigma_scale * patch): a number in (0, 10]."""
    value = float(value)
    if not 0.0 < value <= 10.0 or np.isnan(value):
        raise VolsegError("--sigma-scale", f"must be in (0, 10], got {value}")
    return value


def profile(length: int, mode: str, *, sigma_scale: float = 0.125) -> np.ndarray:
    """The 1D weight profile of one patch side of ``length`` voxels (float64, peak 1).

    Parameters
    ----------
    length : int
        Patch side in voxels.
    mode : str
        ``gaussian``, ``hann`` or ``constant`` (``crop`` depends on the neighbours: see
        :class:`Blender`).
    sigma_scale : float
        Gaussian sigma as a fraction of ``length``.
    """
    length = int(length)
    if mode == "constant":
        return np.ones(length)
    if mode == "gaussian":
        from scipy.signal.windows import gaussian

        w = gaussian(length, std=sigma_scale * length, sym=True)
    elif mode == "hann":
        from scipy.signal.windows import hann

        w = hann(length + 2, sym=True)[1:-1]
    else:
        raise VolsegError("--blend", f"no fixed profile for blend mode {mode!r}")
    w = w / w.max()
    return np.maximum(w, MIN_WEIGHT)


def window(patch: Sequence[int], mode: str = "gaussian", *, sigma_scale: float = 0.125) -> np.ndarray:
    """The full (D, H, W) float32 window of a patch for a fixed-profile mode."""
    wz, wy, wx = (profile(p, mode, sigma_scale=sigma_scale) for p in patch)
    return (wz[:, None, None] * wy[None, :, None] * wx[None, None, :]).astype(np.float32)


def _crop_profiles(axis_starts: np.ndarray, length: int) -> dict[int, np.ndarray]:
    """For each patch start along an axis, the 0/1 profile of voxels whose nearest centre it is."""
    starts = np.unique(np.asarray(axis_starts, dtype=np.int64))
    centres = starts + (length - 1) / 2.0
    # Voxel v belongs to patch k when mid[k-1] < v <= mid[k] (ties to the lower patch).
    mids = (centres[:-1] + centres[1:]) / 2.0
    out = {}
    coords = np.arange(length)
    for k, start in enumerate(starts):
        v = start + coords
        lo_ok = v > mids[k - 1] if k > 0 else np.ones(length, bool)
        hi_ok = v <= mids[k] if k < len(mids) else np.ones(length, bool)
        out[int(start)] = (lo_ok & hi_ok).astype(np.float64)
    return out


class Blender:
    """Per-patch weights for one patch grid.

    Parameters
    ----------
    starts : sequence of 3 arrays
        The patch starts along z, y and x of a grid (its corners are their product, see
        :func:`volseg.geometry.grid_origins`); :meth:`from_origins` takes (N, 3) corners.
    patch : sequence of int
        Patch size (D, H, W).
    mode : str
        One of :data:`BLEND_MODES`.
    sigma_scale : float
        Gaussian sigma as a fraction of the patch side.
    """

    def __init__(self, starts: Sequence[np.ndarray], patch: Sequence[int], mode: str = "gaussian", *,
                 sigma_scale: float = 0.125):
        self.mode = parse_blend(mode)
        self.patch = tuple(int(p) for p in patch)
        self.sigma_scale = parse_sigma_scale(sigma_scale)
        self._full = None
        if self.mode == "crop":
            self._crop = [_crop_profiles(starts[a], self.patch[a]) for a in range(3)]
        else:
            self._fixed = [profile(p, self.mode, sigma_scale=self.sigma_scale) for p in self.patch]

    @classmethod
    def from_origins(cls, origins: np.ndarray, patch: Sequence[int], mode: str = "gaussian", *,
                     sigma_scale: float = 0.125) -> Blender:
        """A blender for (N, 3) patch corners (z, y, x) of a grid."""
        origins = np.asarray(origins, dtype=np.int64).reshape(-1, 3)
        return cls([origins[:, a] for a in range(3)], patch, mode, sigma_scale=sigma_scale)

    def profiles(self, origin: Sequence[int]) -> list[np.ndarray]:
        """The three 1D profiles (z, y, x) of the patch at ``origin``."""
        if self.mode == "crop":
            return [self._crop[a][int(origin[a])] for a in range(3)]
        return self._fixed

    def weight(self, origin: Sequence[int], lo: Sequence[int] | None = None,
               hi: Sequence[int] | None = None) -> np.ndarray:
        """The float32 weight of the patch at ``origin`` over its local box [lo, hi) (default all)."""
        lo = (0, 0, 0) if lo is None else lo
        hi = self.patch if hi is None else hi
        if self.mode != "crop":
            if self._full is None:
                self._full = window(self.patch, self.mode, sigma_scale=self.sigma_scale)
            return self._full[tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))]
        wz, wy, wx = (p[int(a):int(b)] for p, a, b in zip(self.profiles(origin), lo, hi))
        return (wz[:, None, None] * wy[None, :, None] * wx[None, None, :]).astype(np.float32)

    def settings(self) -> dict:
        """The blend settings as plain data (stored with predictions)."""
        return {"mode": self.mode, "sigma_scale": self.sigma_scale}
