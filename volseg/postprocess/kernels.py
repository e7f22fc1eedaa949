"""Block kernels of ``volseg postprocess``: pure numpy/scikit-image, no storage, no graph.

A post-processing run binarises the prediction, labels the 26-connected foreground components
and the 6-connected background components of every chunk, merges them across chunk faces into
global components (:class:`volseg.metrics.components.FaceMerger`) and decides per component:

* foreground component kept  <=>  size >= ``min_size`` and (no hysteresis, or it holds a strong
  voxel);
* background component filled  <=>  it does not touch the volume border and has at most
  ``fill_holes`` voxels (a *cavity*: a closed pocket of background inside the foreground).

Foreground uses 26-connectivity and background 6-connectivity, the complementary pair of digital
topology, as the Betti numbers of :mod:`volseg.metrics.topology` do. Axis order (z, y, x), sizes
in voxels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from volseg.metrics import components as cc


@dataclass(frozen=True)
class Binarise:
    """How a prediction block becomes a foreground mask (and, for hysteresis, a strong mask).

    * ``threshold`` T: foreground where ``value >= T`` (as ``predict --threshold``).
    * ``hysteresis`` (LOW, HIGH): weak where ``value > LOW``, strong where ``value > HIGH`` (as
      :func:`skimage.filters.apply_hysteresis_threshold`); the weak mask is labelled and a weak
      component survives when it holds a strong voxel anywhere in the volume.
    * neither: an integer/bool volume is foreground where ``value > 0``.
    """

    threshold: float | None = None
    hysteresis: tuple[float, float] | None = None
    close: int = 0

    @property
    def halo(self) -> int:
        """Voxels of context each side a chunk needs (the closing: dilation + erosion)."""
        return 2 * self.close

    def masks(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """``(foreground, strong)`` boolean masks of a block (strong is None without hysteresis)."""
        if self.hysteresis is not None:
            low, high = self.hysteresis
            return values > low, values > high
        if self.threshold is not None:
            return values >= self.threshold, None
        return values > 0, None

    def block_masks(self, read, start, stop, shape) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """Masks of the chunk ``[start, stop)`` of a volume of ``shape``, closing included.

        ``read(lo, hi)`` returns the values of a box. With ``close`` = r > 0 the foreground is
        ``mask | erode(dilate(mask, ball(r)), ball(r))`` computed on the volume padded by 2r
        voxels of its own edge values (``np.pad(mode="edge")``), so chunks read 2r voxels of halo
        and the result equals the whole-volume closing. Returns ``(fg, strong, values)``.
        """
        from volseg.geometry import with_halo

        h = self.halo
        lo, hi = with_halo(start, stop, h, shape)
        values = read(lo, hi)
        fg, strong = self.masks(values)
        inner = tuple(slice(a - b, a - b + (c - a)) for a, b, c in zip(start, lo, stop))
        if h:
            pad = [(h - (a - b), h - (d - c)) for a, b, c, d in zip(start, lo, stop, hi)]
            fg = close_mask(np.pad(fg, pad, mode="edge"), self.close)
            fg = fg[tuple(slice(h, h + (c - a)) for a, c in zip(start, stop))]
        else:
            fg = fg[inner]
        return fg, (strong[inner] if strong is not None else None), values[inner]


def close_mask(mask: np.ndarray, radius: int) -> np.ndarray:
    """``mask | erode(dilate(mask, ball(radius)), ball(radius))`` (scipy.ndimage, border 0)."""
    from scipy import ndimage
    from skimage.morphology import ball

    if radius <= 0:
        return mask
    footprint = ball(radius).astype(bool)
    closed = ndimage.binary_erosion(ndimage.binary_dilation(mask, footprint), footprint)
    return mask | closed


def summarise_block(fg: np.ndarray, strong: np.ndarray | None, *, fill: bool, start, stop,
                    shape) -> dict:
    """Pass 1 of one chunk: local labels' counts, faces, sizes and flags.

    Returns ``{"fg": (n, faces, ()), "fg_size": sizes[1..n], "fg_strong": bool[1..n] or None,
    "bg": (n, faces, border) , "bg_size": ...}`` (``bg`` only with ``fill``), in the form
    :meth:`~volseg.metrics.components.FaceMerger.add_layer` takes.
    """
    labels, n = cc.label_block(fg, connectivity=3)
    out = {"fg": (n, cc.block_faces(labels), ()),
           "fg_size": np.bincount(labels.ravel(), minlength=n + 1)[1:].astype(np.int64),
           "fg_strong": None}
    if strong is not None:
        hits = np.bincount(labels[strong].ravel(), minlength=n + 1)[1:]
        out["fg_strong"] = hits > 0
    if fill:
        bg, m = cc.label_block(~fg, connectivity=1)
        out["bg"] = (m, cc.block_faces(bg), cc.border_labels(bg, start, stop, shape))
        out["bg_size"] = np.bincount(bg.ravel(), minlength=m + 1)[1:].astype(np.int64)
    return out


def component_table(final: np.ndarray, n: int, sizes: np.ndarray,
                    flags: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Global size (and any-flag) of each component from the per-provisional-id values.

    ``final[p]`` is the component of provisional id ``p`` (``final[0] == 0``); ``sizes[p - 1]`` and
    ``flags[p - 1]`` belong to provisional id ``p``. Returns ``(size[0..n], flag[0..n])``.
    """
    size = np.bincount(final[1:], weights=sizes, minlength=n + 1).astype(np.int64)
    flag = np.ones(n + 1, dtype=bool)
    if flags is not None:
        flag = np.bincount(final[1:], weights=flags.astype(np.int64), minlength=n + 1) > 0
    return size, flag


def apply_block(fg: np.ndarray, *, keep_fg: np.ndarray, fg_offset: int,
                fill_bg: np.ndarray | None = None, bg_offset: int = 0) -> np.ndarray:
    """Pass 2 of one chunk: the uint8 cleaned labels (1 foreground, 0 background).

    ``keep_fg[p]`` says whether provisional foreground id ``p`` (local label + ``fg_offset``)
    survives; ``fill_bg[p]`` whether provisional background id ``p`` is a cavity to fill.
    The block is relabelled exactly as in :func:`summarise_block` (deterministic), so the
    provisional ids agree.
    """
    labels, _ = cc.label_block(fg, connectivity=3)
    ids = np.where(labels > 0, labels.astype(np.int64) + fg_offset, 0)
    out = keep_fg[ids] & fg
    if fill_bg is not None:
        bg, _ = cc.label_block(~fg, connectivity=1)
        bids = np.where(bg > 0, bg.astype(np.int64) + bg_offset, 0)
        out |= fill_bg[bids] & ~fg
    return out.astype(np.uint8)


def postprocess_array(values: np.ndarray, *, threshold: float | None = None,
                      hysteresis: tuple[float, float] | None = None, close: int = 0,
                      min_size: int = 0, fill_holes: int = 0) -> np.ndarray:
    """Whole-volume reference of ``volseg postprocess`` (in memory, for checks and small data).

    Parameters
    ----------
    values : ndarray, shape (z, y, x)
        Probabilities (with ``threshold`` or ``hysteresis``) or labels (foreground > 0).
    threshold, hysteresis, close
        See :class:`Binarise` (``close``: radius of the closing, 0 = none).
    min_size : int
        26-connected foreground components of fewer voxels are removed.
    fill_holes : int
        6-connected background components not touching the volume border with at most this
        many voxels are filled (0: none).

    Returns
    -------
    ndarray of uint8, shape (z, y, x)
    """
    from skimage.measure import label

    values = np.asarray(values)
    binarise = Binarise(threshold, hysteresis, close)
    fg, strong = binarise.masks(values)
    if close:
        h = binarise.halo
        fg = close_mask(np.pad(fg, h, mode="edge"), close)[h:-h, h:-h, h:-h]
    labels, n = label(fg, connectivity=3, return_num=True)
    size = np.bincount(labels.ravel(), minlength=n + 1)
    keep = size >= min_size
    if strong is not None:
        keep &= np.bincount(labels[strong].ravel(), minlength=n + 1) > 0
    keep[0] = False
    out = keep[labels]
    if fill_holes > 0:
        bg, m = label(~fg, connectivity=1, return_num=True)
        bsize = np.bincount(bg.ravel(), minlength=m + 1)
        border = np.zeros(m + 1, dtype=bool)
        for axis in range(3):
            for side in (0, -1):
                border[np.unique(np.take(bg, side, axis=axis))] = True
        fill = (~border) & (bsize <= fill_holes)
        fill[0] = False
        out |= fill[bg]
    return out.astype(np.uint8)
