"""Test-time augmentation: flips of the (z, y, x) axes and rotations about z, their inverses, the blend.

A transform flips a batch (N, C, z, y, x) along some of the axes z, y, x and then rotates it
about the z axis (the scroll axis: in-plane y/x) by an angle in degrees. Its inverse rotates
the model's output back by the opposite angle and flips it back. Rotations resample on the
batch's own device (:func:`torch.nn.functional.affine_grid` / ``grid_sample``, trilinear; the
input mirrored at the patch border), so they cost one resampling per transform and no
host transfer.

Voxels that a rotation moves in from outside the patch carry no information, so the blend of
:func:`augmented` weights every transformed output by the rotated validity mask of its input
(1 inside, falling to 0 across the patch border) taken back through the inverse rotation:
``sum_t w_t * y_t / sum_t w_t``, where the unrotated transforms weigh 1 everywhere. Without
rotations the blend is the plain mean of the flips, in the same order and arithmetic as before.

Examples
--------
>>> [t.angle for t in transforms(False, 15.0)]
[0.0, 15.0, -15.0]
>>> len(transforms(True, 15.0))
24
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from volseg.errors import VolsegError

#: The 8 subsets of the axes (2, 3, 4) = (z, y, x) of a batch, no flip first.
FLIP_SETS = [tuple(a for a, on in zip((2, 3, 4), bits) if on)
             for bits in itertools.product((False, True), repeat=3)]

#: The largest ``--tta-rotate`` angle: beyond it a rotated patch loses more than a fifth of its corners.
MAX_ANGLE = 45.0


def parse_tta_rotate(value) -> float:
    """``--tta-rotate``: degrees in [0, 45] (0 = no rotation)."""
    from volseg.io.finite import parse_finite

    angle = parse_finite(value, "--tta-rotate")
    if not 0.0 <= angle <= MAX_ANGLE:
        raise VolsegError("--tta-rotate", f"must be in [0, {MAX_ANGLE:g}] degrees, got {value}; e.g. "
                          "--tta-rotate 15 averages rotations by +15 and -15 degrees about z")
    return float(angle)


@dataclass(frozen=True)
class Transform:
    """Flip the batch axes ``flips`` (of 2, 3, 4), then rotate by ``angle`` degrees about z."""

    flips: tuple[int, ...] = ()
    angle: float = 0.0


def transforms(flips: bool, rotate: float) -> list[Transform]:
    """The transforms of a TTA setting: the 8 flips (or none) at angles 0, +rotate, -rotate (or 0)."""
    flip_sets = FLIP_SETS if flips else [()]
    angles = [0.0, float(rotate), -float(rotate)] if rotate else [0.0]
    return [Transform(f, a) for a in angles for f in flip_sets]


def rotate_z(x, angle: float, *, padding: str = "reflection"):
    """``x`` (N, C, z, y, x) rotated by ``angle`` degrees about the z axis through the patch centre.

    Trilinear resampling on ``x``'s device; voxels sampled from outside the patch are the
    mirror image (``padding="reflection"``) or 0 (``"zeros"``). Rotating by ``angle`` and then by
    ``-angle`` maps every voxel back to itself (up to interpolation).
    """
    import torch
    import torch.nn.functional as F

    if not angle:
        return x
    n, _, d, h, w = x.shape
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    # output -> input in normalised (x, y, z) coordinates of a physical (isotropic voxel) rotation
    theta = torch.tensor([[c, -s * h / w, 0.0, 0.0], [s * w / h, c, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]],
                         dtype=torch.float32, device=x.device)
    grid = F.affine_grid(theta.expand(n, 3, 4), [n, 1, d, h, w], align_corners=False)
    return F.grid_sample(x.float(), grid, mode="bilinear", padding_mode=padding, align_corners=False)


def forward(x, t: Transform):
    """Apply ``t`` to a batch: flip, then rotate (mirrored at the border)."""
    import torch

    return rotate_z(torch.flip(x, t.flips) if t.flips else x, t.angle)


def inverse(y, t: Transform, *, padding: str = "zeros"):
    """Undo ``t`` on a model output: rotate back, then flip back."""
    import torch

    y = rotate_z(y, -t.angle, padding=padding)
    return torch.flip(y, t.flips) if t.flips else y


def augmented(fn: Callable, xs: Sequence, *, flips: bool = False, rotate: float = 0.0):
    """The blend of ``fn(*transformed xs)`` over the transforms of (``flips``, ``rotate``), as float32.

    Parameters
    ----------
    fn : callable
        ``fn(*tensors) -> tensor`` (N, C', z, y, x) for inputs (N, C, z, y, x) of one shape.
    xs : sequence of tensors
        The batch's inputs; every transform is applied to each of them alike.
    flips : bool
        Average over the 8 flips of the z, y and x axes.
    rotate : float
        Also rotate by +rotate and -rotate degrees about z (0: no rotation).
    """
    import torch

    if not rotate:  # the mean of the flips, bit for bit as the runner always computed it
        flip_sets = FLIP_SETS if flips else [()]
        acc = None
        for dims in flip_sets:
            ys = fn(*[torch.flip(x, dims) if dims else x for x in xs]).float()
            ys = torch.flip(ys, dims) if dims else ys
            acc = ys if acc is None else acc + ys
        return acc / len(flip_sets)
    acc = weight = None
    masks: dict[float, object] = {}
    for t in transforms(flips, rotate):
        ys = fn(*[forward(x, t) for x in xs]).float()
        if t.angle:
            if t.angle not in masks:  # validity of the rotated input, 1 inside the patch
                masks[t.angle] = rotate_z(torch.ones_like(ys[:1, :1]), t.angle, padding="zeros")
            valid = masks[t.angle]
            ys, w = inverse(ys * valid, t), inverse(valid, t)
        else:
            ys, w = inverse(ys, t), None
        acc = ys if acc is None else acc + ys
        weight = (torch.ones_like(ys[:1, :1]) if w is None else w) if weight is None else \
            weight + (1.0 if w is None else w)
    return acc / weight


__all__ = ["FLIP_SETS", "MAX_ANGLE", "Transform", "augmented", "forward", "inverse", "parse_tta_rotate",
           "rotate_z", "transforms"]
