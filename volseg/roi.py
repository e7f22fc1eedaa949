"""``--roi z0:z1,y0:y1,x0:x1``: a box of a volume, parsed once and resolved against its shape.

Axis order (z, y, x); positions in voxels of level 0, half-open. Ends may be open (``:``,
``100:``) or negative (from the far end), as in Python slices; unlike a slice, an end outside
the volume is an error, not clipped (a box that does not fit is a mistake: another level's
coordinates, say). numpy only: shared by ``predict`` (:mod:`volseg.inference.support`),
``stitch`` and ``postprocess``.

Examples
--------
>>> parse_roi(" 4:20, :, -8: ")
'4:20,:,-8:'
>>> roi_box("4:20,:,-8:", (32, 32, 32))
((4, 0, 24), (20, 32, 32))
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from volseg.errors import VolsegError

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


def clip_box(block: np.ndarray, start: Sequence[int], stop: Sequence[int], box_start: Sequence[int],
             box_stop: Sequence[int]) -> np.ndarray:
    """Zero the voxels of ``block`` ((C,) z, y, x covering [start, stop)) outside the box
    [box_start, box_stop), in place; returns ``block``."""
    inner = tuple(slice(min(max(s - a, 0), b - a), min(max(e - a, s - a, 0), b - a))
                  for a, b, s, e in zip(start, stop, box_start, box_stop))
    keep = np.zeros(block.shape[-3:], bool)
    keep[inner] = True
    block[..., ~keep] = 0
    return block


def box_chunks(start: Sequence[int], stop: Sequence[int], chunks: Sequence[int]) -> list[tuple[int, int, int]]:
    """The indices of the chunks (of size ``chunks``, from 0) that overlap [start, stop), C order."""
    import itertools

    ranges = [range(a // c, (b - 1) // c + 1) for a, b, c in zip(start, stop, chunks)]
    return [tuple(int(v) for v in ch) for ch in itertools.product(*ranges)]


__all__ = ["ROI_FIX", "box_chunks", "clip_box", "parse_roi", "roi_box"]
