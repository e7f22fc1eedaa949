"""Block kernels of ``volseg postprocess``: pure numpy/scikit-image, no storage, no graph.

Each step acts on the previous step's result, in this order:

1. smooth a probability map (Gaussian, :func:`smooth_values`) and binarise it;
2. ``--min-size``: label the 26-connected foreground components of every chunk, merge them across
   chunk faces into global components (:class:`volseg.metrics.components.FaceMerger`) and keep a
   component  <=>  size >= ``min_size`` and (no hysteresis, or it holds a strong voxel);
3. the local repairs of the kept mask K (:class:`volseg.postprocess.repairs.Repairs`, the volume
   padded with its edge values): ``--open`` (opening), ``--close`` (closing with a ball,
   ellipsoid or box, :func:`close_mask` for a ball), ``--plug-holes`` (one-voxel holes by a
   2 x 2 x 2 lookup table), ``--fill-sheet-holes`` (large holes through a sheet filled along its
   height map, :mod:`volseg.postprocess.sheet_holes`): M = repairs(K);
4. ``--fill-holes N``: fill the holes of M: the 2D holes of at most N pixels of every axis-aligned
   slice (:func:`fill_slice_holes`: tunnels through sheets) and the *cavities* of M, the
   6-connected background components of M with at most N voxels that do not touch the volume
   border (labelled and merged across chunks like the components of step 2).

So a removed speck never comes back as its filled cavity and never bridges onto a sheet.

Foreground uses 26-connectivity and background 6-connectivity, the complementary pair of digital
topology, as the Betti numbers of :mod:`volseg.metrics.topology` do. Axis order (z, y, x), sizes
in voxels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from volseg.metrics import components as cc
from volseg.postprocess.repairs import DEFAULT_CLOSE, DEFAULT_OPEN, Repairs, parse_element
from volseg.postprocess.sheet_holes import parse_max_area

_TRUNCATE = 4.0    # Gaussian kernel radius in standard deviations (scipy's default)


def smooth_values(values: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian-filtered float32 copy of ``values`` (sigma in voxels, edges reflected).

    A network's probabilities flicker voxel by voxel at sheet boundaries and in the noise; one
    voxel of smoothing before the threshold removes most one-voxel bumps, pits and specks, which
    are tunnels and components to the topology metrics (``benchmarks/postprocess.py``). On a
    block read with :attr:`Binarise.halo` voxels of context (fewer only at the volume border,
    where the reflection is the whole volume's), the block's values equal the whole volume's.
    """
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(np.asarray(values, dtype=np.float32), sigma, mode="reflect",
                           truncate=_TRUNCATE, output=np.float32)


@dataclass(frozen=True)
class Binarise:
    """How a prediction block becomes a foreground mask (and, for hysteresis, a strong mask).

    * ``threshold`` T: foreground where ``value >= T`` (as ``predict --threshold``).
    * ``hysteresis`` (LOW, HIGH): weak where ``value > LOW``, strong where ``value > HIGH`` (as
      :func:`skimage.filters.apply_hysteresis_threshold`); the weak mask is labelled and a weak
      component survives when it holds a strong voxel anywhere in the volume.
    * neither: an integer/bool volume is foreground where ``value > 0``.

    ``smooth`` sigma > 0 first filters a probability map with a Gaussian of that standard
    deviation (voxels, :func:`smooth_values`); a block then needs :attr:`halo` voxels of context.

    ``box`` (start, stop) of ``--roi``: the prediction reads as 0 outside it
    (:func:`volseg.postprocess.blocks.block_values`).
    """

    threshold: float | None = None
    hysteresis: tuple[float, float] | None = None
    smooth: float = 0.0
    box: tuple | None = None

    @property
    def halo(self) -> int:
        """Voxels of context the smoothing reads on each side (scipy's kernel radius)."""
        return int(_TRUNCATE * self.smooth + 0.5) if self.smooth else 0

    def masks(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """``(foreground, strong)`` boolean masks of a block (strong is None without hysteresis)."""
        if self.hysteresis is not None:
            low, high = self.hysteresis
            return values > low, values > high
        if self.threshold is not None:
            return values >= self.threshold, None
        return values > 0, None


def close_mask(mask: np.ndarray, radius: int) -> np.ndarray:
    """``mask | erode(dilate(mask, ball(radius)), ball(radius))`` (scipy.ndimage, border 0).

    Closes holes through a sheet (tunnels) whose width is up to about 2 * radius voxels (a
    1-voxel-thick sheet is never closed: the ball finds no support on both faces) and gaps of
    that width between surfaces.
    """
    from scipy import ndimage
    from skimage.morphology import ball

    if radius <= 0:
        return mask
    footprint = ball(radius).astype(bool)
    closed = ndimage.binary_erosion(ndimage.binary_dilation(mask, footprint), footprint)
    return mask | closed


def summarise_block(fg: np.ndarray, strong: np.ndarray | None) -> dict:
    """Pass 1 of one chunk: local labels' counts, faces, sizes and flags.

    Returns ``{"fg": (n, faces, ()), "fg_size": sizes[1..n], "fg_strong": bool[1..n] or None}``,
    in the form :meth:`~volseg.metrics.components.FaceMerger.add_layer` takes.
    """
    labels, n = cc.label_block(fg, connectivity=3)
    out = {"fg": (n, cc.block_faces(labels), ()),
           "fg_size": np.bincount(labels.ravel(), minlength=n + 1)[1:].astype(np.int64),
           "fg_strong": None}
    if strong is not None:
        hits = np.bincount(labels[strong].ravel(), minlength=n + 1)[1:]
        out["fg_strong"] = hits > 0
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


def kept_block(fg: np.ndarray, keep_fg: np.ndarray, fg_offset: int) -> np.ndarray:
    """The chunk's foreground voxels whose component survives.

    ``keep_fg[p]`` says whether provisional foreground id ``p`` (local label + ``fg_offset``)
    survives. The chunk is relabelled exactly as in :func:`summarise_block` (deterministic), so
    the provisional ids agree.
    """
    labels, _ = cc.label_block(fg, connectivity=3)
    ids = np.where(labels > 0, labels.astype(np.int64) + fg_offset, 0)
    return keep_fg[ids] & fg


def filled_block(mask: np.ndarray, fill_bg: np.ndarray, bg_offset: int) -> np.ndarray:
    """The chunk's background voxels of ``mask`` in cavities to fill (``fill_bg[p]`` per
    provisional id; the chunk is relabelled as in :func:`summarise_background`)."""
    bg, _ = cc.label_block(~mask, connectivity=1)
    ids = np.where(bg > 0, bg.astype(np.int64) + bg_offset, 0)
    return fill_bg[ids] & ~mask


def fill_slice_holes(mask: np.ndarray, max_size: int) -> np.ndarray:
    """Fill 2D holes of at most ``max_size`` pixels in every axis-aligned slice (z, y and x).

    A 2D hole is a 4-connected background component of one slice that does not touch the
    slice's border. A small hole through a sheet shows as such a hole in the slices across the
    sheet, while the open gap between two separate sheets never does, so this closes tunnels
    without bridging neighbouring surfaces. The holes of all three orientations are found on
    the same input and filled together.
    """
    from skimage.measure import label

    if max_size <= 0:
        return mask
    out = mask.copy()
    for axis in range(3):
        for k in range(mask.shape[axis]):
            plane = np.take(mask, k, axis=axis)
            bg, n = label(~plane, connectivity=1, return_num=True)
            if n == 0:
                continue
            size = np.bincount(bg.ravel(), minlength=n + 1)
            fill = size <= max_size
            for edge in (bg[0], bg[-1], bg[:, 0], bg[:, -1]):
                fill[edge] = False
            fill[0] = False
            if fill.any():
                index = [slice(None)] * 3
                index[axis] = k
                out[tuple(index)] |= fill[bg]
    return out


def chunk_holes(box: np.ndarray, lo, start, stop, *, holes: int) -> np.ndarray:
    """:func:`fill_slice_holes` of the chunk ``[start, stop)`` from the mask ``box`` at ``lo``.

    ``box`` covers the chunk plus ``holes + 1`` voxels (clipped to the volume): a 2D hole of at
    most ``holes`` pixels that meets the chunk lies within ``holes`` voxels of it, so one more
    voxel of context tells it from a larger one and the result equals the whole-volume one.
    """
    a = [max(b, s - holes - 1) for b, s in zip(lo, start)]
    e = [min(b + n, t + holes + 1) for b, n, t in zip(lo, box.shape, stop)]
    crop = box[tuple(slice(x - b, y - b) for x, y, b in zip(a, e, lo))]
    crop = fill_slice_holes(crop, holes)
    return crop[tuple(slice(s - x, t - x) for s, t, x in zip(start, stop, a))]


def summarise_background(mask: np.ndarray, *, start, stop, shape) -> dict:
    """The 6-connected background components of a chunk's mask, in the form
    :meth:`~volseg.metrics.components.FaceMerger.add_layer` takes: ``{"bg": (n, faces,
    border labels), "bg_size": sizes[1..n]}``."""
    bg, m = cc.label_block(~mask, connectivity=1)
    return {"bg": (m, cc.block_faces(bg), cc.border_labels(bg, start, stop, shape)),
            "bg_size": np.bincount(bg.ravel(), minlength=m + 1)[1:].astype(np.int64)}


def postprocess_array(values: np.ndarray, *, threshold: float | None = None,
                      hysteresis: tuple[float, float] | None = None, smooth: float = 0.0,
                      close=DEFAULT_CLOSE, min_size: int = 0, fill_holes: int = 0, open=DEFAULT_OPEN,
                      plug_holes: bool = False, fill_cavities: int = 0, fill_sheet_holes: int = 0) -> np.ndarray:
    """Whole-volume reference of ``volseg postprocess`` (in memory, for checks and small data).

    Parameters
    ----------
    values : ndarray, shape (z, y, x)
        Probabilities (with ``threshold`` or ``hysteresis``) or labels (foreground > 0).
    threshold, hysteresis
        See :class:`Binarise`.
    smooth : float
        Sigma (voxels) of a Gaussian applied to ``values`` before the threshold
        (:func:`smooth_values`); 0: none.
    close : int, "Z,Y,X" or "box:Z,Y,X"
        Closing applied to the kept components: a ball radius (:func:`close_mask`), ellipsoid
        radii or odd box sides (:func:`volseg.postprocess.repairs.parse_element`); 0: none.
        Default, as the command's, ``"1,0,0"`` (a line of 3 voxels along z).
    min_size : int
        26-connected foreground components of fewer voxels are removed.
    fill_holes : int
        Then, in the kept (and closed) mask, 2D holes of at most this many pixels in every
        axis-aligned slice are filled (:func:`fill_slice_holes`: tunnels through sheets), and
        its 6-connected background components not touching the volume border with at most
        this many voxels (cavities). 0: neither. Each step acts on the previous one's result.
    open : int, "Z,Y,X" or "box:Z,Y,X"
        Opening of the kept components before the closing (same forms); 0: none. Default, as
        the command's, ``"1,0,0"``.
    plug_holes : bool
        After the closing, plug one-voxel holes (:func:`volseg.postprocess.repairs.plug_holes`).
    fill_cavities : int
        Last, fill the cavities of at most this many voxels of the result (those the slice
        holes enclosed; :func:`cavities`); 0: none.
    fill_sheet_holes : int
        After the plugging (before ``fill_holes``), fill holes of at most this many columns
        through a sheet along its interpolated height map
        (:func:`volseg.postprocess.sheet_holes.fill_sheet_holes`); 0: none.

    Returns
    -------
    ndarray of uint8, shape (z, y, x)
    """
    from skimage.measure import label

    values = smooth_values(values, smooth) if smooth else np.asarray(values)
    fg, strong = Binarise(threshold, hysteresis, smooth).masks(values)
    labels, n = label(fg, connectivity=3, return_num=True)
    size = np.bincount(labels.ravel(), minlength=n + 1)
    keep = size >= min_size
    if strong is not None:
        keep &= np.bincount(labels[strong].ravel(), minlength=n + 1) > 0
    keep[0] = False
    out = keep[labels]                                   # step 2: the kept components
    repairs = Repairs(parse_element(close, "--close"), parse_element(open, "--open"), bool(plug_holes),
                      parse_max_area(fill_sheet_holes))
    out = repairs.whole(out)                             # step 3: opening, closing, plugging, sheet holes
    if fill_holes > 0:                                   # step 4: holes of the repaired mask
        out = fill_slice_holes(out, fill_holes) | cavities(out, fill_holes)
    if fill_cavities > 0:                                # step 5: cavities of that result
        out = out | cavities(out, fill_cavities)
    return out.astype(np.uint8)


def cavities(mask: np.ndarray, max_size: int) -> np.ndarray:
    """The 6-connected background components of ``mask`` with at most ``max_size`` voxels that
    do not touch the volume border (whole volume in memory)."""
    from skimage.measure import label

    bg, m = label(~mask, connectivity=1, return_num=True)
    bsize = np.bincount(bg.ravel(), minlength=m + 1)
    border = np.zeros(m + 1, dtype=bool)
    for axis in range(3):
        for side in (0, -1):
            border[np.unique(np.take(bg, side, axis=axis))] = True
    fill = (~border) & (bsize <= max_size)
    fill[0] = False
    return fill[bg]
