"""Overlap metrics of binary segmentations: Dice and surface Dice at a tolerance.

Axis order (z, y, x); distances and tolerances in voxels (isotropic unit spacing).

Surface Dice (normalised surface distance, Nikolov et al. 2021) on voxel surfaces: the surface
of a mask is its foreground voxels with at least one 6-neighbour in the background (outside the
volume counts as background). With S_P, S_G the two surfaces and d(v, S) the Euclidean distance
from voxel v to the nearest voxel of S (:func:`scipy.ndimage.distance_transform_edt`)::

    surface_dice = (|{p in S_P: d(p, S_G) <= tol}| + |{g in S_G: d(g, S_P) <= tol}|)
                   / (|S_P| + |S_G|)

1.0 when both surfaces are empty, 0.0 when only one is. Surfaces are counted in voxels, not in
surface-element areas as the DeepMind ``surface-distance`` package does.

Chunk-wise evaluation is exact with a halo of ``floor(tol) + 1`` voxels: a surface voxel within
``tol`` of a chunk voxel lies within ``floor(tol)`` voxels of it, and deciding whether it is on
the surface needs one more voxel.
"""

from __future__ import annotations

import math

import numpy as np

from volseg.errors import VolsegError


def dice(pred, truth) -> float:
    """Dice coefficient 2 |P n G| / (|P| + |G|) of two boolean volumes (1.0 if both are empty).

    Parameters
    ----------
    pred, truth : array_like of bool, shape (z, y, x)
        Prediction and ground-truth masks of the same shape.
    """
    pred, truth = _pair(pred, truth)
    return dice_from_counts(*dice_counts(pred, truth))


def dice_counts(pred: np.ndarray, truth: np.ndarray) -> tuple[int, int, int]:
    """(|P n G|, |P|, |G|) of one block; sums over blocks give the volume's counts."""
    return (int(np.count_nonzero(pred & truth)), int(np.count_nonzero(pred)),
            int(np.count_nonzero(truth)))


def dice_from_counts(intersection: int, n_pred: int, n_truth: int) -> float:
    """Dice from summed counts; 1.0 when both masks are empty."""
    total = n_pred + n_truth
    return 1.0 if total == 0 else 2.0 * intersection / total


def surface_halo(tolerance: float) -> int:
    """Halo (voxels) a chunk needs for an exact surface Dice at ``tolerance``."""
    return int(math.floor(float(tolerance))) + 1


def surface(mask: np.ndarray) -> np.ndarray:
    """Surface voxels: foreground voxels with a 6-neighbour in the background or outside."""
    from scipy.ndimage import binary_erosion, generate_binary_structure

    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return mask.copy()
    inner = binary_erosion(mask, structure=generate_binary_structure(3, 1), border_value=0)
    return mask & ~inner


def surface_counts(pred: np.ndarray, truth: np.ndarray, inner: tuple[slice, ...], *,
                   tolerance: float) -> tuple[int, int, int, int]:
    """Surface-Dice counts of the voxels ``inner`` of a block read with a halo.

    Parameters
    ----------
    pred, truth : ndarray of bool, shape (z, y, x)
        The block grown by :func:`surface_halo` voxels on every side (clipped to the volume).
    inner : tuple of 3 slices
        The block itself inside the grown arrays: only its voxels are counted.
    tolerance : float
        Tolerance in voxels.

    Returns
    -------
    (n_pred_surface, n_pred_within, n_truth_surface, n_truth_within)
    """
    from scipy.ndimage import distance_transform_edt

    # The erosion treats everything outside the grown arrays as background: right at the
    # volume border, and at a cut halo side only for voxels a full halo away from `inner`.
    sp, sg = surface(pred), surface(truth)
    sp_in, sg_in = sp[inner], sg[inner]
    n_p, n_g = int(np.count_nonzero(sp_in)), int(np.count_nonzero(sg_in))
    within_p = within_g = 0
    if n_p and sg.any():
        within_p = int(np.count_nonzero(distance_transform_edt(~sg)[inner][sp_in] <= tolerance))
    if n_g and sp.any():
        within_g = int(np.count_nonzero(distance_transform_edt(~sp)[inner][sg_in] <= tolerance))
    return n_p, within_p, n_g, within_g


def surface_dice_from_counts(n_pred: int, within_pred: int, n_truth: int, within_truth: int) -> float:
    """Surface Dice from summed counts: 1.0 if both surfaces are empty, 0.0 if one is."""
    total = n_pred + n_truth
    return 1.0 if total == 0 else (within_pred + within_truth) / total


def surface_dice(pred, truth, *, tolerance: float = 2.0) -> float:
    """Surface Dice (normalised surface distance) at ``tolerance`` voxels, whole volume in memory.

    Parameters
    ----------
    pred, truth : array_like of bool, shape (z, y, x)
        Prediction and ground-truth masks.
    tolerance : float
        Distance (voxels, Euclidean) within which a surface voxel counts as matched.

    Returns
    -------
    float in [0, 1]
    """
    pred, truth = _pair(pred, truth)
    tolerance = parse_tolerance(tolerance)
    inner = (slice(None),) * 3
    return surface_dice_from_counts(*surface_counts(pred, truth, inner, tolerance=tolerance))


def parse_tolerance(value) -> float:
    """Validate ``--tolerance``: a finite number of voxels >= 0."""
    try:
        tol = float(value)
    except (TypeError, ValueError):
        raise VolsegError("--tolerance", f"expected a number of voxels such as 2, got {value!r}") from None
    if not math.isfinite(tol) or tol < 0:
        raise VolsegError("--tolerance", f"must be a finite number >= 0 (voxels), got {value!r}")
    return tol


def _pair(pred, truth) -> tuple[np.ndarray, np.ndarray]:
    pred, truth = np.asarray(pred, dtype=bool), np.asarray(truth, dtype=bool)
    if pred.shape != truth.shape:
        raise VolsegError(None, f"prediction shape {pred.shape} differs from truth shape {truth.shape}")
    return pred, truth
