"""Shared pieces of the synthetic generators: shape parsing and smooth random fields (float32, unit std)."""

from __future__ import annotations

import math
import re

import numpy as np

from volseg.errors import VolsegError

MIN_SIDE = 16
#: Peak memory of ``synth scroll``/``synth scan`` per voxel of the shape (tracemalloc: 34-44 B
#: for scroll shapes of 160-200, 33 B for scan), checked before generating.
SYNTH_BYTES_PER_VOXEL = 40


def _low_freq(rng: np.random.Generator, out_shape, cells) -> np.ndarray:
    """Smooth random field of unit std: cubic-spline upsampling of a coarse normal grid.

    The upsampling is separable, so it is applied axis by axis as small matrix products
    (cheap even for full 3D volumes). Returns float32 of ``out_shape``.
    """
    from scipy.ndimage import zoom

    cells = tuple(max(2, int(c)) for c in cells)
    field = rng.standard_normal(cells).astype(np.float32)
    for axis, (n_out, n_in) in enumerate(zip(out_shape, cells)):
        basis = zoom(np.eye(n_in), (n_out / n_in, 1), order=3, grid_mode=True, mode="reflect")
        field = np.moveaxis(np.tensordot(basis.astype(np.float32), field, axes=([1], [axis])), 0, axis)
    field = np.ascontiguousarray(field, dtype=np.float32)
    field -= field.mean()
    field /= field.std() + 1e-6
    return field


def _aniso_noise(rng: np.random.Generator, shape, sigma) -> np.ndarray:
    """Anisotropic Gaussian-filtered white noise of unit std (float32): the fibre texture."""
    from scipy.ndimage import gaussian_filter

    field = gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="wrap")
    field /= field.std() + 1e-6
    return field


def _parse_shape(shape, *, option: str = "--shape") -> tuple[int, int, int]:
    """``--shape``: an int ``N`` (a cube), ``"N"``, ``"DxHxW"`` or 3 ints -> (z, y, x) in voxels.

    Raises ``VolsegError(option, ...)`` unless 1 or 3 integers, each >= :data:`MIN_SIDE`, whose
    volume fits in memory (:data:`SYNTH_BYTES_PER_VOXEL` per voxel).
    """
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        sides = [int(shape)] * 3
    elif isinstance(shape, str):
        text = shape.strip().lower()
        if not re.fullmatch(r"\d+(x\d+){2}|\d+", text):
            raise VolsegError(option, f"{shape!r} is not N or DxHxW (e.g. 160 or 96x128x128)")
        sides = [int(t) for t in text.split("x")]
        sides = sides * 3 if len(sides) == 1 else sides
    else:
        try:
            sides = [int(s) for s in shape]
        except (TypeError, ValueError):
            raise VolsegError(option, f"{shape!r} is not N or DxHxW (e.g. 160 or 96x128x128)") from None
        if len(sides) != 3:
            raise VolsegError(option, f"{shape!r} needs exactly 3 sides (z, y, x)")
    if min(sides) < MIN_SIDE:
        raise VolsegError(option, f"{'x'.join(map(str, sides))}: every side must be >= {MIN_SIDE} voxels")
    from volseg.memlimit import check_memory

    check_memory(SYNTH_BYTES_PER_VOXEL * math.prod(sides), option=option, value="x".join(map(str, sides)),
                 what=f"generating the volume in memory (about {SYNTH_BYTES_PER_VOXEL} bytes per voxel)",
                 fix="use sides of a few hundred voxels")
    return tuple(sides)
