"""3D data augmentation applied identically to an image patch and its label/target.

A sample is a dict of numpy arrays in (C, z, y, x) order: ``image`` (C, D, H, W) float32 raw
values, optional ``label`` (1, D, H, W) uint8 and optional ``target`` (1, D, H, W) float32.
Spatial transforms move every array the same way (labels with nearest-neighbour interpolation,
images and targets linearly); intensity transforms change ``image`` only and are skipped for
translation samples (those with a ``target``), whose raw-value mapping must stay intact.

Transforms, each drawn with its own probability (keys of the config dict, see
:class:`AugmentConfig`):

* ``flip_p``: mirror each axis (z, y, x) independently;
* ``rot90_p``: rotate by k * 90 degrees in each plane whose two axes have equal spacing and
  equal patch sides (anisotropic volumes: the in-plane (y, x) rotation only);
* ``scale_p`` / ``scale_range``: isotropic zoom about the patch centre;
* ``elastic_p`` / ``elastic_alpha`` / ``elastic_grid``: a smooth random displacement field
  (Gaussian displacements of ``elastic_alpha`` voxels on a coarse ``elastic_grid``^3 lattice,
  upsampled with cubic splines); scaling and elastic share one ``map_coordinates`` pass;
* ``intensity_p`` / ``intensity_scale`` / ``intensity_shift``: ``x * a + b * std(x)``;
* ``gamma_p`` / ``gamma_range``: gamma on the patch's min-max range, mapped back to raw values;
* ``noise_p`` / ``noise_std``: additive Gaussian noise with sigma = f * std(x);
* ``blur_p`` / ``blur_sigma``: Gaussian blur with sigma in voxels.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from volseg.errors import VolsegError

_ANISOTROPY = 1.01  # spacing ratios above this mark two axes as unequal (no rot90 in that plane)


@dataclass(frozen=True)
class AugmentConfig:
    """Validated augmentation settings (probabilities in [0, 1], ranges as (low, high))."""

    enabled: bool = True
    flip_p: float = 0.5
    rot90_p: float = 0.5
    scale_p: float = 0.2
    scale_range: tuple[float, float] = (0.85, 1.25)
    elastic_p: float = 0.2
    elastic_alpha: float = 3.0
    elastic_grid: int = 4
    intensity_p: float = 0.3
    intensity_scale: tuple[float, float] = (0.9, 1.1)
    intensity_shift: tuple[float, float] = (-0.1, 0.1)
    gamma_p: float = 0.2
    gamma_range: tuple[float, float] = (0.7, 1.5)
    noise_p: float = 0.15
    noise_std: tuple[float, float] = (0.0, 0.1)
    blur_p: float = 0.1
    blur_sigma: tuple[float, float] = (0.5, 1.0)

    def as_dict(self) -> dict[str, Any]:
        """Plain data (ranges as lists), e.g. for the resolved config file."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


_RANGE_MIN = {"scale_range": (0.0, False), "gamma_range": (0.0, False), "noise_std": (0.0, True),
              "blur_sigma": (0.0, True), "intensity_scale": (0.0, False), "intensity_shift": (None, True)}


def parse_augment(cfg: Mapping[str, Any] | AugmentConfig | bool | None) -> AugmentConfig:
    """Validate an augmentation config.

    ``None`` or ``True``: the defaults; ``False``: no augmentation; a dict: the defaults with the
    given keys replaced; an :class:`AugmentConfig` is returned as is. A transform's name alone
    sets its probability: ``{"flip": true}`` (its default), ``{"flip": false}`` (off) or
    ``{"flip": 0.3}``.

    Raises
    ------
    VolsegError
        ``augment.<key>`` for an unknown key or a value of the wrong type or range.
    """
    if isinstance(cfg, AugmentConfig):
        return cfg
    if cfg is None or cfg is True:
        return AugmentConfig()
    if cfg is False:
        return AugmentConfig(enabled=False)
    if not isinstance(cfg, Mapping):
        raise VolsegError("augment", f"expected a mapping of settings, got {type(cfg).__name__}")
    fields = {f.name: f for f in dataclasses.fields(AugmentConfig)}
    values: dict[str, Any] = {}
    for key, value in cfg.items():
        name = f"augment.{key}"
        if f"{key}_p" in fields:  # shorthand: ``flip: true`` (default probability), ``flip: 0.3``
            if isinstance(value, bool):
                values[f"{key}_p"] = getattr(AugmentConfig, f"{key}_p") if value else 0.0
            else:
                values[f"{key}_p"] = _number(name, value, 0.0, 1.0)
            continue
        if key not in fields:
            raise VolsegError(name, f"unknown key; known keys: {', '.join(fields)}")
        if key == "enabled":
            if not isinstance(value, bool):
                raise VolsegError(name, f"expected true or false, got {value!r}")
            values[key] = value
        elif key.endswith("_p"):
            values[key] = _number(name, value, 0.0, 1.0)
        elif key == "elastic_grid":
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 2:
                raise VolsegError(name, f"expected an integer >= 2 (control points per axis), got {value!r}")
            values[key] = int(value)
        elif key == "elastic_alpha":
            values[key] = _number(name, value, 0.0, None)
        else:
            values[key] = _range(name, value, *_RANGE_MIN[key])
    return AugmentConfig(**values)


def _number(name: str, value, low: float | None, high: float | None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise VolsegError(name, f"expected a number, got {value!r}")
    v = float(value)
    if (low is not None and v < low) or (high is not None and v > high) or np.isnan(v):
        raise VolsegError(name, f"{value} is out of range [{low}, {'inf' if high is None else high}]")
    return v


def _range(name: str, value, low: float | None, inclusive: bool) -> tuple[float, float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = (value, value)
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise VolsegError(name, f"expected [low, high], got {value!r}")
    a, b = (_number(name, v, None, None) for v in value)
    if a > b:
        raise VolsegError(name, f"low {a} is above high {b}")
    if low is not None and (a < low or (a == low and not inclusive)):
        raise VolsegError(name, f"values must be {'>=' if inclusive else '>'} {low}, got {value!r}")
    return (a, b)


def rot90_planes(shape: Sequence[int], spacing: Sequence[float] | None) -> list[tuple[int, int]]:
    """Spatial planes (axis pairs of a (z, y, x) patch) where a 90-degree rotation is allowed."""
    sp = tuple(float(s) for s in (spacing or (1.0, 1.0, 1.0)))
    planes = []
    for a, b in ((1, 2), (0, 1), (0, 2)):
        same = max(sp[a], sp[b]) <= _ANISOTROPY * min(sp[a], sp[b])
        if same and int(shape[a]) == int(shape[b]):
            planes.append((a, b))
    return planes


def augment(sample: Mapping[str, np.ndarray], cfg: AugmentConfig, rng: np.random.Generator, *,
            spacing: Sequence[float] | None = None) -> dict[str, np.ndarray]:
    """Augment one sample; returns a new dict of contiguous arrays with the same shapes and dtypes.

    Parameters
    ----------
    sample : mapping
        ``image`` (C, D, H, W) float32, optional ``label`` (1, D, H, W) uint8, optional
        ``target`` (1, D, H, W) float32. Other keys are passed through.
    cfg : AugmentConfig
    rng : numpy.random.Generator
        All randomness comes from it (seeded per item by the datasets).
    spacing : sequence of float, optional
        Voxel spacing (z, y, x) of the source; decides the planes open to rot90.
    """
    out = dict(sample)
    if not cfg.enabled:
        return out
    spatial = [k for k in ("image", "label", "target") if k in out]
    shape = out["image"].shape[1:]
    coords = _sampling_grid(shape, cfg, rng)
    if coords is not None:
        for k in spatial:
            out[k] = _resample(out[k], coords, nearest=(k == "label"))
    for axis in range(3):
        if rng.random() < cfg.flip_p:
            for k in spatial:
                out[k] = np.flip(out[k], axis=axis + 1)
    for a, b in rot90_planes(shape, spacing):
        if rng.random() < cfg.rot90_p:
            turns = int(rng.integers(1, 4))
            for k in spatial:
                out[k] = np.rot90(out[k], k=turns, axes=(a + 1, b + 1))
    for k in spatial:
        out[k] = np.ascontiguousarray(out[k])
    if "target" not in out:
        out["image"] = _intensity(out["image"].astype(np.float32, copy=True), cfg, rng)
    return out


def _sampling_grid(shape, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray | None:
    """Source coordinates (3, D, H, W) for scaling and elastic deformation, or None when neither."""
    do_scale = rng.random() < cfg.scale_p
    do_elastic = rng.random() < cfg.elastic_p and cfg.elastic_alpha > 0
    if not (do_scale or do_elastic):
        return None
    shape = tuple(int(s) for s in shape)
    centre = [(s - 1) / 2.0 for s in shape]
    factor = float(rng.uniform(*cfg.scale_range)) if do_scale else 1.0
    axes = [(np.arange(s, dtype=np.float32) - c) / factor + c for s, c in zip(shape, centre)]
    coords = np.stack(np.meshgrid(*axes, indexing="ij"))
    if do_elastic:
        g = cfg.elastic_grid
        mz, my, mx = (_upsampler(s, g) for s in shape)
        for a in range(3):
            coarse = rng.normal(0.0, cfg.elastic_alpha, size=(g, g, g)).astype(np.float32)
            coords[a] += np.einsum("ai,bj,ck,ijk->abc", mz, my, mx, coarse, optimize=True)
    return coords


@functools.lru_cache(maxsize=32)
def _upsampler(size: int, grid: int) -> np.ndarray:
    """(size, grid) matrix of the cubic-spline zoom of ``grid`` control points to ``size`` samples.

    Spline zooming is separable, so applying this matrix along each axis of a (g, g, g) lattice
    equals ``scipy.ndimage.zoom(lattice, size / grid, order=3, grid_mode=True)`` at a fraction of
    the cost (three small matrix products instead of a 3D spline evaluation).
    """
    from scipy import ndimage

    eye = np.eye(grid, dtype=np.float64)
    cols = [ndimage.zoom(eye[i], size / grid, order=3, mode="nearest", grid_mode=True)[:size] for i in range(grid)]
    return np.stack(cols, axis=1).astype(np.float32)


def _resample(arr: np.ndarray, coords: np.ndarray, *, nearest: bool) -> np.ndarray:
    from scipy import ndimage

    order = 0 if nearest else 1
    mode = "nearest" if nearest else "reflect"
    out = np.empty(arr.shape, dtype=arr.dtype)
    for c in range(arr.shape[0]):
        out[c] = ndimage.map_coordinates(arr[c], coords, order=order, mode=mode, prefilter=False)
    return out


def _intensity(img: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    from scipy import ndimage

    std = float(img.std()) or 1.0
    if rng.random() < cfg.intensity_p:
        img = img * np.float32(rng.uniform(*cfg.intensity_scale)) + np.float32(rng.uniform(*cfg.intensity_shift) * std)
    if rng.random() < cfg.gamma_p:
        gamma = float(rng.uniform(*cfg.gamma_range))
        for c in range(img.shape[0]):
            lo, hi = float(img[c].min()), float(img[c].max())
            if hi > lo:
                img[c] = np.power((img[c] - lo) / (hi - lo), gamma) * (hi - lo) + lo
    if rng.random() < cfg.noise_p:
        sigma = float(rng.uniform(*cfg.noise_std)) * std
        img = img + rng.normal(0.0, sigma, size=img.shape).astype(np.float32)
    if rng.random() < cfg.blur_p:
        sigma = float(rng.uniform(*cfg.blur_sigma))
        for c in range(img.shape[0]):
            img[c] = ndimage.gaussian_filter(img[c], sigma, mode="reflect")
    return np.ascontiguousarray(img, dtype=np.float32)
