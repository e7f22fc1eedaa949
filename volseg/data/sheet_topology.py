"""Label repairs that give a synthetic scroll's truth the topology of one sheet.

The leaderboard's topology sees label 1 with a 6-connected foreground, volseg's streamed Betti
numbers with a 26-connected one; a rolled sheet must be one component without tunnels or
cavities under both. These in-place passes over a (z, y, x) label volume (0 air, 1 papyrus,
2 ignore) use ``wrap``, the position of each voxel's sheet along the spiral in turns (float32,
same shape): voxels half a turn or more apart lie on different wraps.
"""

from __future__ import annotations

import numpy as np


def _touching_other_wrap(sheet: np.ndarray, wrap: np.ndarray) -> np.ndarray:
    """Voxels with a 26-neighbour in ``sheet`` that lies on another wrap (half a wrap away or more)."""
    touch = np.zeros(sheet.shape, bool)
    for offset in _FORWARD_OFFSETS:
        a = tuple(slice(0, n - d) if d >= 0 else slice(-d, n) for n, d in zip(sheet.shape, offset))
        b = tuple(slice(d, n) if d >= 0 else slice(0, n + d) for n, d in zip(sheet.shape, offset))
        other = np.abs(wrap[a] - wrap[b]) > 0.5
        touch[a] |= sheet[b] & other
        touch[b] |= sheet[a] & other
    return touch


def separate_wraps(labels: np.ndarray, wrap: np.ndarray) -> None:
    """Label 2 on papyrus voxels 26-adjacent to papyrus of another wrap (in place).

    Where wraps touch, their label-1 cores must not meet: a bridge between two wraps would be a
    handle (a spurious tunnel) in the truth, and in CT the interface is not visible anyway.
    """
    sheet = labels == 1
    labels[sheet & _touching_other_wrap(sheet, wrap)] = 2


def close_diagonal_gaps(labels: np.ndarray, wrap: np.ndarray, *, rounds: int = 6) -> None:
    """Fill papyrus voxels (2 -> 1) where the sheet's core only touches itself diagonally (in place).

    The leaderboard's topology sees a 6-connected foreground, so two core voxels meeting only at
    an edge or a corner are not connected there and the background slips between them: a
    spurious hole through the sheet. Where that happens, one of the voxels completing the face
    connection is set to 1 when it lies on the same wrap and is ignore-labelled (inside the
    sheet's one-voxel boundary band); air (label 0) and other wraps are never filled.
    """
    n = labels.shape

    def window(offset):
        return tuple(slice(o, m - 1 + o) for o, m in zip(offset, n))

    for _ in range(rounds):
        changed = False
        sheet = labels == 1
        free = (labels == 2) & ~_touching_other_wrap(sheet, wrap)
        for corners in _DIAGONALS:
            a, b = corners[0], corners[1]
            fillers = corners[2:]
            hit = sheet[window(a)] & sheet[window(b)]
            for f in fillers:
                hit &= ~sheet[window(f)]
            if not hit.any():
                continue
            ref = wrap[window(a)]
            done = np.zeros_like(hit)
            for f in fillers:
                cand = hit & ~done & free[window(f)] & (np.abs(wrap[window(f)] - ref) < 0.5)
                if cand.any():
                    labels[window(f)][cand] = 1
                    free[window(f)][cand] = False
                    done |= cand
                    changed = True
        for corners in _DIAGONALS:
            if len(corners) != 8:
                continue
            a, b, others = corners[0], corners[1], corners[2:]
            hit = ~sheet[window(a)] & ~sheet[window(b)]          # air meeting air at a corner
            for f in others:                                       # ... through papyrus
                hit &= sheet[window(f)]
            if not hit.any():
                continue
            ref = wrap[window(others[0])]
            for f in (a, b):
                cand = hit & free[window(f)] & (np.abs(wrap[window(f)] - ref) < 0.5)
                if cand.any():
                    labels[window(f)][cand] = 1
                    free[window(f)][cand] = False
                    hit &= ~cand
                    changed = True
        if not changed:
            break


def drop_fragments(labels: np.ndarray, *, fraction: float = 0.02) -> None:
    """Label 2 on papyrus pieces (6-connected) under ``fraction`` of the largest one (in place).

    The spiral is one sheet; a small piece cut off where wraps are squeezed together would be a
    spurious component (and carry spurious holes), so it becomes ignore.
    """
    from scipy import ndimage

    pieces, n = ndimage.label(labels == 1)
    if n <= 1:
        return
    sizes = np.bincount(pieces.ravel())
    sizes[0] = 0
    small = sizes < fraction * sizes.max()
    small[0] = False
    labels[small[pieces]] = 2


def _diagonals():
    """(a, b, fillers...) in the 2x2x2 cube: a and b meet at an edge or a corner only."""
    cube = [(z, y, x) for z in (0, 1) for y in (0, 1) for x in (0, 1)]
    out = []
    for a in cube:
        for b in cube:
            diff = sum(abs(i - j) for i, j in zip(a, b))
            if a < b and diff >= 2:
                # voxels on the shortest face-connected paths from a to b
                fillers = [c for c in cube if c not in (a, b)
                           and sum(abs(i - j) for i, j in zip(a, c)) + sum(abs(i - j) for i, j in zip(c, b)) == diff]
                out.append((a, b, *fillers))
    return out


_DIAGONALS = _diagonals()
_FORWARD_OFFSETS = [(dz, dy, dx) for dz in (0, 1) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                    if (dz, dy, dx) > (0, 0, 0)]
