"""Intensity metrics of an image against a reference: PSNR and 3D SSIM, chunk by chunk.

Axis order (z, y, x). Both follow scikit-image: ``peak_signal_noise_ratio(truth, pred,
data_range=R)`` and ``structural_similarity(truth, pred, data_range=R)`` on the whole 3D volume
(7-voxel uniform window, population covariance, K1 = 0.01, K2 = 0.03).

SSIM chunk-wise: scikit-image averages the SSIM map over the volume minus a border of
``pad = (win_size - 1) // 2`` voxels on every side. Each chunk is read with a halo of ``pad``
voxels, its SSIM map computed with scikit-image, and only the map values at the chunk's voxels
inside the counted region are summed; the sum over chunks divided by the size of the counted
region equals the whole-volume result (the window of every counted voxel lies inside the
volume, so the chunk sees exactly the voxels the whole-volume filter sees). Computations run in
float64.
"""

from __future__ import annotations

import math

import numpy as np

from volseg.errors import VolsegError

SSIM_WIN = 7
SSIM_PAD = (SSIM_WIN - 1) // 2


def default_data_range(dtype, minimum: float | None = None, maximum: float | None = None) -> float:
    """``--data-range`` default: the dtype's range for integer truth, else the truth's max - min.

    Integers use scikit-image's ``dtype_range`` (uint8: 255, uint16: 65535); bool gives 1.
    A float truth needs its ``minimum`` and ``maximum``; a constant float truth gives 1.0.
    """
    from skimage.util.dtype import dtype_range

    dtype = np.dtype(dtype)
    if dtype.kind in "biu":
        lo, hi = dtype_range[dtype.type]
        return float(hi) - float(lo)
    if minimum is None or maximum is None:
        raise VolsegError("--data-range", "a float truth needs its value range; pass --data-range")
    span = float(maximum) - float(minimum)
    return span if span > 0 else 1.0


def parse_data_range(value) -> float | None:
    """Validate ``--data-range``: a positive finite number, or None for the default."""
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise VolsegError("--data-range", f"expected a positive number such as 255, got {value!r}") from None
    if not math.isfinite(number) or number <= 0:
        raise VolsegError("--data-range", f"must be a positive finite number, got {value!r}")
    return number


def squared_error(pred: np.ndarray, truth: np.ndarray) -> tuple[float, int]:
    """(sum of squared differences in float64, voxel count) of one block."""
    diff = np.asarray(truth, dtype=np.float64) - np.asarray(pred, dtype=np.float64)
    flat = diff.ravel()
    return float(np.dot(flat, flat)), int(diff.size)


def psnr_from_mse(mse: float, data_range: float) -> float:
    """PSNR in dB from the mean squared error: 10 log10(R^2 / MSE); inf when identical.

    The one PSNR formula of volseg (evaluate, training validation, ``synth scan``).

    >>> psnr_from_mse(0.01, 1.0)
    20.0
    >>> psnr_from_mse(0.0, 255.0)
    inf
    """
    if mse == 0:
        return float("inf")
    return 10.0 * math.log10(data_range ** 2 / mse)


def psnr_from_sums(sse: float, count: int, data_range: float) -> float:
    """PSNR in dB from summed squared errors (:func:`psnr_from_mse` of ``sse / count``; nan for
    no voxels)."""
    if count == 0:
        return float("nan")
    return psnr_from_mse(sse / count, data_range)


def psnr(pred, truth, *, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio (dB) of ``pred`` against ``truth``, whole volume in memory.

    Equals ``skimage.metrics.peak_signal_noise_ratio(truth, pred, data_range=R)``; ``R``
    defaults as in :func:`default_data_range`.
    """
    pred, truth = np.asarray(pred), np.asarray(truth)
    _check_shapes(pred.shape, truth.shape)
    if data_range is None:
        data_range = default_data_range(truth.dtype, truth.min(), truth.max())
    return psnr_from_sums(*squared_error(pred, truth), data_range)


def ssim_counted(shape) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(start, stop) of the region whose SSIM values scikit-image averages."""
    for n in shape:
        if n < SSIM_WIN:
            raise VolsegError(None, f"SSIM needs at least {SSIM_WIN} voxels along every axis, "
                              f"got shape {tuple(shape)}")
    return (SSIM_PAD,) * 3, tuple(int(n) - SSIM_PAD for n in shape)


def ssim_block_sum(pred: np.ndarray, truth: np.ndarray, region_start, block_start, block_stop,
                   shape, *, data_range: float) -> tuple[float, int]:
    """Sum of the SSIM map over a block's counted voxels, and their count.

    Parameters
    ----------
    pred, truth : ndarray, shape (z, y, x)
        The block grown by ``SSIM_PAD`` voxels on every side, clipped to the volume.
    region_start : 3 ints
        Volume position of ``pred[0, 0, 0]``.
    block_start, block_stop : 3 ints
        The block (volume positions).
    shape : 3 ints
        The whole volume's shape.
    data_range : float
        R in C1 = (0.01 R)^2, C2 = (0.03 R)^2.
    """
    from skimage.metrics import structural_similarity

    lo_c, hi_c = ssim_counted(shape)
    lo = [max(a, c) for a, c in zip(block_start, lo_c)]
    hi = [min(b, c) for b, c in zip(block_stop, hi_c)]
    if any(a >= b for a, b in zip(lo, hi)):
        return 0.0, 0
    _, smap = structural_similarity(np.asarray(truth, dtype=np.float64),
                                    np.asarray(pred, dtype=np.float64),
                                    win_size=SSIM_WIN, data_range=float(data_range), full=True)
    inner = tuple(slice(a - r, b - r) for a, b, r in zip(lo, hi, region_start))
    values = smap[inner]
    return float(values.sum(dtype=np.float64)), int(values.size)


def ssim(pred, truth, *, data_range: float | None = None, chunks=None) -> float:
    """Mean 3D structural similarity of ``pred`` against ``truth``, optionally chunk by chunk.

    Equals ``skimage.metrics.structural_similarity(truth, pred, data_range=R)`` on the whole
    volume (7-voxel window) for any ``chunks``.

    Parameters
    ----------
    pred, truth : array_like, shape (z, y, x)
        Test and reference volumes, at least 7 voxels along every axis.
    data_range : float, optional
        Default: :func:`default_data_range` of ``truth``.
    chunks : int or 3 ints, optional
        Compute block by block with a halo (default: one block).
    """
    from volseg.geometry import as_slices, chunk_bounds, chunk_indices, parse_size3, with_halo

    pred, truth = np.asarray(pred), np.asarray(truth)
    _check_shapes(pred.shape, truth.shape)
    if data_range is None:
        data_range = default_data_range(truth.dtype, truth.min(), truth.max())
    chunks = truth.shape if chunks is None else parse_size3(chunks, name="chunks")
    total, count = 0.0, 0
    for index in chunk_indices(truth.shape, chunks):
        start, stop = chunk_bounds(index, chunks, truth.shape)
        lo, hi = with_halo(start, stop, SSIM_PAD, truth.shape)
        s, c = ssim_block_sum(pred[as_slices(lo, hi)], truth[as_slices(lo, hi)], lo, start, stop,
                              truth.shape, data_range=data_range)
        total, count = total + s, count + c
    return total / count


def _check_shapes(a, b) -> None:
    if tuple(a) != tuple(b):
        raise VolsegError(None, f"prediction shape {tuple(a)} differs from truth shape {tuple(b)}")
