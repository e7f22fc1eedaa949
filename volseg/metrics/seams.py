"""Seams of a patch-wise prediction: the jump between neighbouring voxel planes at the patch
grid's boundaries, against the same jump everywhere else.

Axis order (z, y, x), sizes in voxels. A volume stitched from patches shows a seam where one
patch's output starts, stops or hands over to another's: there the step between two
neighbouring planes is larger than between planes inside the patches. :func:`seam_ratio`
divides the mean absolute step across the boundary planes by the mean absolute step across
all other planes, per axis, and reports the worst axis: about 1.0 means no seam, a blend that
cuts patches hard scores clearly above it. The boundary planes are the same for every blend
mode (:func:`grid_boundaries`: every patch start and end and every hand-over of ``--blend
crop``), so blends compare at the same planes.

The measure needs structure to be meaningful: on voxel-wise independent noise every step is
large and a seam hides in it. Use a smooth input (and a model whose output follows it).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from volseg.errors import VolsegError
from volseg.geometry import axis_origins


def grid_boundaries(length: int, patch: int, stride: int) -> np.ndarray:
    """Boundary planes of the patch grid along one axis.

    Plane ``i`` stands for the step between voxel planes ``i - 1`` and ``i``. A boundary is a
    patch start, a patch end (the first plane after it), or the first plane a patch owns under
    ``--blend crop`` (nearest patch centre, ties to the lower patch, as
    :class:`volseg.inference.blend.Blender`). Only ``0 < i < length`` are kept.

    Parameters
    ----------
    length : int
        Axis length of the volume in voxels (shorter than ``patch``: the grid of the padded axis).
    patch, stride : int
        Patch side and stride (``patch * (1 - overlap)``) along this axis, in voxels.

    Returns
    -------
    numpy.ndarray
        Sorted unique int64 plane indices.

    Examples
    --------
    >>> grid_boundaries(24, 16, 8).tolist()
    [8, 12, 16]
    """
    starts = axis_origins(max(int(length), int(patch)), int(patch), int(stride))
    centres = starts + (int(patch) - 1) / 2.0
    handover = np.floor((centres[:-1] + centres[1:]) / 2.0).astype(np.int64) + 1
    planes = np.unique(np.concatenate([starts, starts + int(patch), handover]))
    return planes[(planes > 0) & (planes < int(length))]


def plane_steps(volume, axis: int) -> np.ndarray:
    """Mean absolute step between neighbouring voxel planes along ``axis``.

    Parameters
    ----------
    volume : array-like
        A (z, y, x) numpy, Zarr or dask array; Zarr and dask arrays are read chunk by chunk.
    axis : int
        0, 1 or 2.

    Returns
    -------
    numpy.ndarray
        float64 of length ``shape[axis] - 1``; entry ``i - 1`` is the mean of
        ``|v[i] - v[i - 1]|`` over the plane pair (``i`` as in :func:`grid_boundaries`).
    """
    import dask.array as da

    arr = volume if isinstance(volume, da.Array) else da.from_array(volume, chunks="auto")
    step = abs(da.diff(arr.astype(np.float64), axis=axis))
    return np.asarray(step.mean(axis=tuple(a for a in range(3) if a != axis)).compute(scheduler="threads"))


def seam_ratios(volume, patch: Sequence[int], stride: Sequence[int]) -> tuple[float, float, float]:
    """Per axis (z, y, x): mean step across the grid's boundary planes / mean step elsewhere.

    Parameters
    ----------
    volume : array-like
        The stitched (z, y, x) volume: numpy, Zarr or dask.
    patch, stride : sequence of 3 int
        The patch grid it was predicted on, in voxels.

    Returns
    -------
    tuple of float
        One ratio per axis; ``nan`` for an axis with no boundary (a single patch) or no other plane.
    """
    shape = tuple(int(s) for s in volume.shape)
    if len(shape) != 3:
        raise VolsegError("volume", f"a seam ratio needs a (z, y, x) volume, got shape {shape}")
    if len(patch) != 3 or len(stride) != 3 or min(*patch, *stride) < 1:
        raise VolsegError("--patch", f"patch {tuple(patch)} and stride {tuple(stride)} must be 3 positive sizes")
    out = []
    for axis in range(3):
        steps = plane_steps(volume, axis)  # steps[i - 1]: plane i
        planes = grid_boundaries(shape[axis], patch[axis], stride[axis])
        # the planes right beside each boundary, where they exist and are no boundary themselves
        beside = np.setdiff1d(np.concatenate([planes - 1, planes + 1]), planes)
        beside = beside[(beside > 0) & (beside < shape[axis])]
        if not len(planes) or not len(beside):
            out.append(float("nan"))
            continue
        local = float(steps[beside - 1].mean())
        out.append(float(steps[planes - 1].mean()) / local if local > 0 else float("inf"))
    return tuple(out)  # type: ignore[return-value]


def seam_ratio(volume, patch: Sequence[int], stride: Sequence[int]) -> float:
    """The worst axis of :func:`seam_ratios`: about 1.0 means no seam along any axis.

    Examples
    --------
    >>> import numpy as np
    >>> z, y, x = np.mgrid[:24, :32, :32]
    >>> smooth = np.sin(z / 5.0) + np.cos(y / 7.0) + np.sin(x / 6.0)
    >>> round(seam_ratio(smooth, (16, 16, 16), (8, 8, 8)), 2) < 1.1
    True
    >>> cut = smooth.copy(); cut[:, :, 12:] += 0.5  # a hand-over that does not agree
    >>> seam_ratio(cut, (16, 16, 16), (8, 8, 8)) > 1.5
    True
    """
    ratios = [r for r in seam_ratios(volume, patch, stride) if not np.isnan(r)]
    if not ratios:
        raise VolsegError("volume", f"shape {tuple(volume.shape)} holds a single patch {tuple(patch)}: "
                          "no patch boundary to measure a seam at")
    return max(ratios)
