"""nnU-Net v2's per-channel intensity normalisation, reproduced in numpy.

Each scheme matches the class of the same name in
``nnunetv2.preprocessing.normalization.default_normalization_schemes`` (float32 arithmetic,
the same epsilon, the same order of operations). Schemes that need image statistics
(``ZScoreNormalization``, ``RescaleTo01Normalization``) take them as :class:`ChannelStats`, so
a caller that cannot hold the volume in memory computes them in a streamed pass
(:func:`block_stats` per block, :func:`combine_stats` to merge) and passes them in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

SCHEMES = ("CTNormalization", "ZScoreNormalization", "NoNormalization",
           "RescaleTo01Normalization", "RGBTo01Normalization")
NEEDS_STATS = ("ZScoreNormalization", "RescaleTo01Normalization")
EPS = 1e-8


@dataclass(frozen=True)
class ChannelStats:
    """Statistics of one channel over the voxels a scheme normalises with.

    Attributes
    ----------
    count : int
        Number of voxels.
    mean, std : float
        Mean and population standard deviation (``numpy.std``, ddof 0).
    minimum, maximum : float
        Extremes.
    """

    count: int
    mean: float
    std: float
    minimum: float
    maximum: float


def block_stats(values: np.ndarray) -> tuple[int, float, float, float, float]:
    """One block's (count, sum, sum of squares, min, max) in float64, for :func:`combine_stats`.

    ``values`` are the voxels of one channel in the block (already restricted to the
    normalisation mask where ``use_mask_for_norm`` holds); an empty block gives count 0.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        return 0, 0.0, 0.0, np.inf, -np.inf
    return int(v.size), float(v.sum()), float(np.dot(v, v)), float(v.min()), float(v.max())


def combine_stats(parts: Iterable[tuple[int, float, float, float, float]]) -> ChannelStats:
    """Merge per-block :func:`block_stats` tuples into the channel's :class:`ChannelStats`.

    The variance is ``sumsq / n - mean**2`` in float64, clipped at 0; against nnU-Net's
    in-memory ``image.std()`` (float32 pairwise sums) it agrees to float32 precision for
    volumes whose mean is not huge against their spread.

    Raises
    ------
    ValueError
        When no block had a voxel.
    """
    n, total, squares, low, high = 0, 0.0, 0.0, np.inf, -np.inf
    for count, s, ss, lo, hi in parts:
        n += int(count)
        total += float(s)
        squares += float(ss)
        low, high = min(low, float(lo)), max(high, float(hi))
    if n == 0:
        raise ValueError("no voxels to compute normalisation statistics from")
    mean = total / n
    return ChannelStats(n, mean, float(np.sqrt(max(squares / n - mean * mean, 0.0))), low, high)


def image_stats(values: np.ndarray) -> ChannelStats:
    """:class:`ChannelStats` of an in-memory channel exactly as nnU-Net computes them (float32)."""
    v = np.asarray(values, dtype=np.float32)
    return ChannelStats(int(v.size), float(v.mean()), float(v.std()), float(v.min()), float(v.max()))


def normalise_channel(image: np.ndarray, scheme: str, properties: Mapping[str, float] | None = None,
                      stats: ChannelStats | None = None, mask: np.ndarray | None = None) -> np.ndarray:
    """Normalise one channel as nnU-Net's scheme ``scheme`` does.

    Parameters
    ----------
    image : numpy.ndarray
        One channel, any shape; converted to float32 (a copy).
    scheme : str
        One of :data:`SCHEMES`.
    properties : mapping, optional
        The channel's entry of the plans' ``foreground_intensity_properties_per_channel``
        (``mean``, ``std``, ``percentile_00_5``, ``percentile_99_5``); needed by CTNormalization.
    stats : ChannelStats, optional
        Statistics for ZScoreNormalization (over ``mask`` when given) and
        RescaleTo01Normalization (min/max); computed from ``image`` when omitted.
    mask : numpy.ndarray of bool, optional
        ZScoreNormalization with ``use_mask_for_norm``: only voxels inside are normalised, the
        others keep their value (nnU-Net's ``seg >= 0``, the filled nonzero mask).

    Returns
    -------
    numpy.ndarray
        float32 array, same shape.
    """
    image = np.array(image, dtype=np.float32, copy=True)
    if scheme == "CTNormalization":
        if properties is None:
            raise ValueError("CTNormalization needs the plans' foreground intensity properties")
        np.clip(image, properties["percentile_00_5"], properties["percentile_99_5"], out=image)
        image -= properties["mean"]
        image /= max(properties["std"], EPS)
        return image
    if scheme == "ZScoreNormalization":
        if mask is not None:
            inside = image[mask]
            s = stats or image_stats(inside)
            image[mask] = (inside - np.float32(s.mean)) / np.float32(max(s.std, EPS))
            return image
        s = stats or image_stats(image)
        image -= np.float32(s.mean)
        image /= np.float32(max(s.std, EPS))
        return image
    if scheme == "NoNormalization":
        return image
    if scheme == "RescaleTo01Normalization":
        s = stats or image_stats(image)
        image -= np.float32(s.minimum)
        image /= max(np.float32(s.maximum) - np.float32(s.minimum), np.float32(EPS))
        return image
    if scheme == "RGBTo01Normalization":
        if image.size and (image.min() < 0 or image.max() > 255):
            raise ValueError(f"RGBTo01Normalization expects values in 0..255, found "
                             f"{image.min()}..{image.max()}")
        image /= 255.0
        return image
    raise ValueError(f"unknown normalisation scheme {scheme!r}; nnU-Net ships {', '.join(SCHEMES)}")
