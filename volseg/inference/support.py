"""Where ``predict`` computes: ``--roi`` (a box of the volume) and ``--mask`` (a support mask).

Axis order (z, y, x); sizes and positions in voxels of level 0 of the volume read. Both options
select patches of the *whole volume's* patch grid (:class:`~volseg.inference.plan.Plan`), never
a grid of their own, so every voxel whose covering patches all run gets the bytes of the full
run (same patches, same batches, same blend):

* ``--roi z0:z1,y0:y1,x0:x1`` (half-open, Python slice ends: open or negative) keeps the output's
  full shape and coordinates; a patch runs iff it overlaps the box, an output chunk is computed
  iff it overlaps the box, and voxels outside the box are the fill value 0.
* ``--mask MASK[@LEVEL]``: a patch runs iff the mask is nonzero somewhere under its footprint
  (mapped conservatively to mask voxels). The mask may be any volume volseg reads, at a scale
  that divides the volume's shape by an integer factor per axis (a pyramid level: ``ceil`` or
  ``floor`` of ``n / k``). A patch not run contributes 0 with its normal blend weight, so
  voxels far from the mask are exactly 0, and an output chunk no running patch overlaps is not
  computed (it reads as the fill value 0).

The chunks (``--stitch``) or patch groups (patch store) left out are not tasks at all: markers,
``--part`` and completion count only the selected ones. :func:`build_support` reads the mask
once (refusing one over :data:`MASK_VOXELS_MAX` voxels) and reduces it to one bit per patch.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from volseg.errors import VolsegError
from volseg.roi import box_chunks, clip_box, roi_box

#: The most mask voxels read into memory (1 GiB as bytes); a larger mask: use a coarser level.
MASK_VOXELS_MAX = 2 ** 30


def parse_mask(value, level=None) -> tuple[str | None, int | None]:
    """``--mask MASK[@LEVEL]`` (and ``mask_level`` of a settings file) -> (path or URL, level)."""
    from volseg.io.levels import parse_level

    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
        if level is not None:
            raise VolsegError("--mask", f"mask_level {level!r} without a mask; give --mask MASK@LEVEL")
        return None, None
    text = str(value).strip()
    head, at, tail = text.rpartition("@")
    if at and "/" not in tail:
        if not tail.isdigit():
            raise VolsegError("--mask", f"{text!r}: the level after @ must be a number, e.g. {head}@2")
        if level is not None and parse_level(level) != int(tail):
            raise VolsegError("--mask", f"{text!r} names level {tail} but mask_level is {level}; give one of them")
        return head, int(tail)
    return text, parse_level(level)


def mask_factors(mask_shape: Sequence[int], shape: Sequence[int], where: str) -> tuple[int, ...]:
    """Per-axis integer factor k mapping the volume's ``shape`` onto ``mask_shape``.

    Axis length m fits n when ``m == n // k`` or ``m == ceil(n / k)`` (pyramid levels round
    either way); the smallest such k is taken.
    """
    factors = []
    for m, n in zip(mask_shape, shape):
        fits = [k for k in sorted({n // max(m, 1), -(-n // max(m, 1))})
                if k >= 1 and m in (n // k, -(-n // k))]
        if not fits:
            ms, vs = "x".join(map(str, mask_shape)), "x".join(map(str, shape))
            raise VolsegError(where, f"mask shape {ms} does not map onto the volume's shape {vs} by an integer "
                              "factor per axis (a level-L mask has ceil or floor of n / 2**L voxels per axis); "
                              "give a mask of this volume or the level of its pyramid that fits (MASK@LEVEL)")
        factors.append(fits[0])
    return tuple(factors)


def read_mask(path: str, level: int | None, shape: Sequence[int]) -> tuple[np.ndarray, tuple[int, ...]]:
    """The mask (bool, its own shape) and its per-axis factors onto a volume of ``shape``."""
    from volseg.io import open_volume, read_meta
    from volseg.io.boxes import read_region
    from volseg.io.levels import resolve_level

    where = f"{path}@{level}" if level is not None else str(path)
    try:
        located = resolve_level(path, level)
        meta = read_meta(located)
    except VolsegError as exc:  # say which input it is: the volume's own errors read alike
        raise VolsegError(exc.path, f"{exc.message} (--mask)") from None
    if len(meta.shape) != 3:
        raise VolsegError(where, f"the mask has {len(meta.shape)} dimensions {tuple(meta.shape)}; "
                          "it must be a 3D (z, y, x) volume")
    factors = mask_factors(meta.shape, shape, where)
    voxels = int(np.prod(meta.shape))
    if voxels > MASK_VOXELS_MAX:
        coarser = (level or 0) + max(1, math.ceil(math.log(voxels / MASK_VOXELS_MAX, 8)))  # 8x fewer per level
        raise VolsegError(where, f"the mask has {voxels} voxels, more than the {MASK_VOXELS_MAX} "
                          f"({MASK_VOXELS_MAX / 2 ** 30:g} GiB) read into memory; use a coarser level of it, "
                          f"e.g. {path}@{coarser}")
    volume = open_volume(located)
    mask = np.zeros(tuple(meta.shape), bool)
    step = max(1, int((meta.chunks or meta.shape)[0]))
    for z in range(0, meta.shape[0], step):  # slabs: the native dtype never held whole
        stop = min(z + step, meta.shape[0])
        mask[z:stop] = read_region(volume, (z, 0, 0), (stop, *meta.shape[1:])) != 0
    return mask, factors


def mask_runs(mask: np.ndarray, factors: Sequence[int], plan) -> np.ndarray:
    """One bit per patch of ``plan``'s grid: the mask is nonzero under the patch's footprint.

    The footprint ``[o, o + P)`` (clipped to the volume: padding only mirrors voxels inside it)
    maps to mask voxels ``[o // k, ceil(stop / k))`` per axis, clipped to the mask, so a patch
    touching any part of a mask voxel counts (conservative). Reduced axis by axis.
    """
    out = mask
    for a in range(3):
        m, k = mask.shape[a], int(factors[a])
        stops = np.minimum(plan.starts[a] + plan.patch[a], plan.shape[a])
        lo = np.minimum(plan.starts[a] // k, m - 1)
        hi = np.maximum(np.minimum(-(-stops // k), m), lo + 1)
        out = np.stack([np.take(out, np.arange(s, e), axis=a).any(axis=a) for s, e in zip(lo, hi)], axis=a)
    return out


@dataclass(frozen=True)
class Support:
    """The patches of a plan's grid that run (``keep``) and the box of ``--roi``.

    Attributes
    ----------
    keep : numpy.ndarray of bool or None
        One entry per patch of the grid, shape ``plan.counts`` (None: every patch runs).
    start, stop : tuple of int
        The ROI box (the whole volume without ``--roi``); voxels outside are zeroed.
    """

    keep: np.ndarray | None
    start: tuple
    stop: tuple

    @classmethod
    def recorded(cls, settings: dict | None) -> "Support | None":
        """The box recorded in an output's settings (``roi``: [start, stop]), None without one:
        ``volseg stitch`` of a patch store made with ``--roi`` computes and keeps only that box."""
        roi = (settings or {}).get("roi")
        return None if roi is None else cls(None, tuple(int(v) for v in roi[0]), tuple(int(v) for v in roi[1]))

    def patches(self, axis_index: Sequence[np.ndarray]) -> np.ndarray:
        """Which patches of the product of per-axis index arrays run (bool, that product's shape)."""
        if self.keep is None:
            return np.ones(tuple(len(i) for i in axis_index), bool)
        return self.keep[np.ix_(*[np.asarray(i) for i in axis_index])]

    def chunks(self, plan) -> list[tuple[int, int, int]]:
        """The output chunks to compute, C order: inside the box and overlapped by a running patch."""
        return [ch for ch in box_chunks(self.start, self.stop, plan.chunks)
                if self.keep is None or self.patches(plan.touching(ch)).any()]

    def groups(self, plan) -> list[tuple[int, int, int]]:
        """The patch groups holding a running patch, C order (the tasks of the patch-store mode)."""
        return [g for g in plan.group_list() if self.patches(plan.owned(g)).any()]

    def clip(self, block: np.ndarray, start: Sequence[int], stop: Sequence[int]) -> np.ndarray:
        """Zero the voxels of ``block`` ((C,) z, y, x at [start, stop)) outside the box, in place."""
        return clip_box(block, start, stop, self.start, self.stop)


def build_support(settings, plan, volume_shape) -> tuple[Support | None, dict]:
    """The :class:`Support` of ``settings.roi``/``settings.mask`` over ``plan`` (None when neither
    is set) and the facts a resumable output's fingerprint records (empty when neither)."""
    from volseg.io.outputs import input_stamp
    from volseg.io.remote import is_url

    if settings.roi is None and settings.mask is None:
        return None, {}
    facts: dict = {}
    start, stop = (0, 0, 0), tuple(int(s) for s in volume_shape)
    keep = np.ones(plan.counts, bool)
    if settings.roi is not None:
        start, stop = roi_box(settings.roi, volume_shape)
        touch = [(s < e) & (s + p > b) for s, p, b, e in zip(plan.starts, plan.patch, start, stop)]
        keep &= touch[0][:, None, None] & touch[1][None, :, None] & touch[2][None, None, :]
        facts["roi"] = [list(start), list(stop)]
    if settings.mask is not None:
        mask, factors = read_mask(settings.mask, settings.mask_level, volume_shape)
        keep &= mask_runs(mask, factors, plan)
        import os

        facts.update({"mask": settings.mask if is_url(settings.mask) else os.path.abspath(settings.mask),
                      "mask_level": settings.mask_level, "mask_stamp": input_stamp(settings.mask)})
    return Support(keep, tuple(start), tuple(stop)), facts


__all__ = ["MASK_VOXELS_MAX", "Support", "build_support", "mask_factors", "mask_runs", "parse_mask", "read_mask"]
