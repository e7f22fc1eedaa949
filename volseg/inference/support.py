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

import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from volseg.errors import VolsegError

#: The most mask voxels read into memory (1 GiB as bytes); a larger mask: use a coarser level.
MASK_VOXELS_MAX = 2 ** 30

ROI_FIX = ("use z0:z1,y0:y1,x0:x1 in level-0 voxels, half-open, e.g. 0:128,256:512,: (open ends and "
           "negative ends count as in Python slices)")
_END = r"\s*(-?\d+)?\s*"


def parse_roi(value) -> str | None:
    """``--roi``: text ``z0:z1,y0:y1,x0:x1`` (or a list of three ``a:b`` items) -> canonical text.

    Ends may be open (``:``, ``100:``) or negative (counted from the far end, as in Python).
    None or ``none`` gives None. Positions are checked against the volume by :func:`roi_box`.
    """
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
        return None
    parts = [str(v) for v in value] if isinstance(value, (list, tuple)) else str(value).split(",")
    axes = []
    for part in parts:
        match = re.fullmatch(_END + ":" + _END, part)
        if match is None:
            raise VolsegError("--roi", f"{value!r} is not a box; {ROI_FIX}")
        axes.append(tuple(None if g is None else int(g) for g in match.groups()))
    if len(axes) != 3:
        raise VolsegError("--roi", f"{value!r} has {len(axes)} axes, not 3 (z, y, x); {ROI_FIX}")
    for name, (a, b) in zip("zyx", axes):
        if a is not None and b is not None and (a >= 0) == (b >= 0) and b <= a:
            raise VolsegError("--roi", f"{value!r} is empty along {name} ({a}:{b}); the end must be "
                              f"greater than the start; {ROI_FIX}")
    return ",".join(f"{'' if a is None else a}:{'' if b is None else b}" for a, b in axes)


def roi_box(roi: str, shape: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The (start, stop) of the canonical ``roi`` text in a volume of ``shape``.

    Unlike a Python slice, an end outside the volume is an error, not clipped: a box that does
    not fit is a mistake (another level's coordinates, say).
    """
    start, stop = [], []
    for name, part, n in zip("zyx", roi.split(","), shape):
        a_text, b_text = part.split(":")
        a = int(a_text) if a_text else 0
        b = int(b_text) if b_text else n
        if not (-n <= a < n and -n <= b <= n):
            raise VolsegError("--roi", f"{roi}: {name} range {part} lies outside the volume of shape "
                              f"{'x'.join(map(str, shape))} ({name} has {n} voxels: 0..{n}); give level-0 "
                              "voxel positions inside it")
        a, b = a % n, (b + n if b < 0 else b)
        if b <= a:
            raise VolsegError("--roi", f"{roi}: {name} range {part} is empty in a volume of {n} voxels "
                              f"along {name} ({a}:{b}); the end must be greater than the start")
        start.append(a)
        stop.append(b)
    return tuple(start), tuple(stop)


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
    located = resolve_level(path, level)
    meta = read_meta(located)
    if len(meta.shape) != 3:
        raise VolsegError(where, f"the mask has {len(meta.shape)} dimensions {tuple(meta.shape)}; "
                          "it must be a 3D (z, y, x) volume")
    factors = mask_factors(meta.shape, shape, where)
    voxels = int(np.prod(meta.shape))
    if voxels > MASK_VOXELS_MAX:
        raise VolsegError(where, f"the mask has {voxels} voxels (over {MASK_VOXELS_MAX} = 1 GiB in memory); "
                          f"use a coarser level of it, e.g. {path}@{(level or 0) + 2}")
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
    keep : numpy.ndarray of bool
        One entry per patch of the grid, shape ``plan.counts``.
    start, stop : tuple of int
        The ROI box (the whole volume without ``--roi``); voxels outside are zeroed.
    """

    keep: np.ndarray
    start: tuple
    stop: tuple

    def patches(self, axis_index: Sequence[np.ndarray]) -> np.ndarray:
        """Which patches of the product of per-axis index arrays run (bool, that product's shape)."""
        return self.keep[np.ix_(*[np.asarray(i) for i in axis_index])]

    def chunks(self, plan) -> list[tuple[int, int, int]]:
        """The output chunks to compute, C order: inside the box and overlapped by a running patch."""
        ranges = [range(a // c, (b - 1) // c + 1) for a, b, c in zip(self.start, self.stop, plan.chunks)]
        return [tuple(int(v) for v in ch) for ch in itertools.product(*ranges) if self.patches(plan.touching(ch)).any()]

    def groups(self, plan) -> list[tuple[int, int, int]]:
        """The patch groups holding a running patch, C order (the tasks of the patch-store mode)."""
        return [g for g in plan.group_list() if self.patches(plan.owned(g)).any()]

    def clip(self, block: np.ndarray, start: Sequence[int], stop: Sequence[int]) -> np.ndarray:
        """Zero the voxels of ``block`` ((C,) z, y, x at [start, stop)) outside the box, in place."""
        inner = tuple(slice(min(max(s - a, 0), b - a), min(max(e - a, s - a, 0), b - a))
                      for a, b, s, e in zip(start, stop, self.start, self.stop))
        keep = np.zeros(block.shape[-3:], bool)
        keep[inner] = True
        block[..., ~keep] = 0
        return block


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


__all__ = ["MASK_VOXELS_MAX", "Support", "build_support", "mask_factors", "mask_runs", "parse_mask", "parse_roi",
           "read_mask", "roi_box"]
