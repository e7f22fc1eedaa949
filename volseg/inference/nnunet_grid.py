"""nnU-Net v2's sliding-window grid as pure numpy functions, for bit-compatible tiling.

nnU-Net (``nnunetv2.inference``) predicts a case by: cropping it to the bounding box of its
nonzero voxels (:func:`nonzero_bbox`), padding the crop to at least the patch size with zeros,
centred (:func:`pad_amounts`), tiling it at the positions of :func:`steps` (tile step 0.5 of the
patch), weighting every tile's logits by :func:`gaussian` and dividing the sum by the summed
weights, then putting the crop back with background outside it. Each function here reproduces
the nnU-Net function named in its docstring, so a caller that tiles a volume out of core with
them lands on nnU-Net's grid. Axis order (z, y, x), units voxels. numpy and scipy only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

Box = tuple[tuple[int, int], ...]


def steps(image_size: Sequence[int], patch_size: Sequence[int],
          tile_step_size: float = 0.5) -> list[list[int]]:
    """Start positions of the tiles along each axis, as nnU-Net's ``compute_steps_for_sliding_window``.

    Parameters
    ----------
    image_size : sequence of int
        Size of the (padded) image per axis; at least ``patch_size`` on every axis.
    patch_size : sequence of int
        Tile size per axis.
    tile_step_size : float
        Largest step as a fraction of the tile, in (0, 1]; nnU-Net's default is 0.5.

    Returns
    -------
    list of list of int
        Per axis, the tile starts: the fewest steps of at most ``patch * tile_step_size`` voxels
        that reach ``image - patch``, spread evenly and rounded half to even (``np.round``).
    """
    if len(image_size) != len(patch_size):
        raise ValueError(f"image size {tuple(image_size)} and patch size {tuple(patch_size)} differ in length")
    if not 0 < tile_step_size <= 1:
        raise ValueError(f"tile_step_size must be in (0, 1], not {tile_step_size}")
    out = []
    for size, tile in zip(image_size, patch_size):
        if size < tile:
            raise ValueError(f"image size {tuple(image_size)} is smaller than the patch {tuple(patch_size)}: pad first")
        n = int(np.ceil((size - tile) / (tile * tile_step_size))) + 1
        actual = (size - tile) / (n - 1) if n > 1 else 0.0
        out.append([int(np.round(actual * i)) for i in range(n)])
    return out


def gaussian(patch_size: Sequence[int], sigma_scale: float = 1.0 / 8,
             value_scaling_factor: float = 10.0, dtype=np.float16) -> np.ndarray:
    """Importance map of a tile, as nnU-Net's ``compute_gaussian`` (with the predictor's arguments).

    A unit impulse at the centre voxel (``size // 2``) filtered by
    ``scipy.ndimage.gaussian_filter`` (sigma ``size * sigma_scale``, constant 0 outside), scaled
    so that its maximum is ``value_scaling_factor``, cast to ``dtype`` (nnU-Net keeps it in
    float16), and every zero replaced by the smallest nonzero value so no voxel gets no weight.

    Parameters
    ----------
    patch_size : sequence of int
        Tile size (z, y, x).
    sigma_scale : float
        Sigma as a fraction of the tile size per axis; nnU-Net uses 1/8.
    value_scaling_factor : float
        Maximum of the map; nnU-Net's predictor uses 10.
    dtype : numpy dtype
        Type of the map; float16 is what nnU-Net accumulates with.

    Returns
    -------
    numpy.ndarray
        The map, shape ``patch_size``.
    """
    from scipy.ndimage import gaussian_filter

    impulse = np.zeros(tuple(int(s) for s in patch_size))
    impulse[tuple(int(s) // 2 for s in patch_size)] = 1
    weights = gaussian_filter(impulse, [s * sigma_scale for s in patch_size], 0, mode="constant", cval=0)
    weights /= np.max(weights) / value_scaling_factor
    weights = weights.astype(dtype)
    zero = weights == 0
    if zero.any():
        weights[zero] = weights[~zero].min()
    return weights


def pad_amounts(shape: Sequence[int], patch_size: Sequence[int]) -> tuple[tuple[int, int], ...]:
    """Zero padding that brings ``shape`` to at least ``patch_size``, as nnU-Net's ``pad_nd_image``.

    The content stays centred; an odd amount puts the extra voxel after it. Axes already at
    least the patch size get no padding (and are never cropped).

    Returns
    -------
    tuple of (int, int)
        ``(before, after)`` per axis, for ``np.pad(..., mode="constant")`` on the spatial axes.
    """
    out = []
    for size, tile in zip(shape, patch_size):
        diff = max(int(tile) - int(size), 0)
        out.append((diff // 2, diff // 2 + diff % 2))
    return tuple(out)


def pad(array: np.ndarray, patch_size: Sequence[int]) -> tuple[np.ndarray, tuple[slice, ...]]:
    """Pad the last ``len(patch_size)`` axes of ``array`` with zeros to at least ``patch_size``.

    Returns
    -------
    padded : numpy.ndarray
        The padded array (``array`` itself where nothing is padded).
    unpad : tuple of slice
        Slices of the last axes of ``padded`` that give back ``array``.
    """
    spatial = array.shape[array.ndim - len(patch_size):]
    amounts = pad_amounts(spatial, patch_size)
    unpad = tuple(slice(lo, lo + s) for (lo, _), s in zip(amounts, spatial))
    if not any(lo or hi for lo, hi in amounts):
        return array, unpad
    lead = ((0, 0),) * (array.ndim - len(patch_size))
    return np.pad(array, lead + amounts, mode="constant", constant_values=0), unpad


def nonzero_mask(channels: np.ndarray) -> np.ndarray:
    """nnU-Net's ``create_nonzero_mask``: voxels nonzero in any channel, holes filled.

    Parameters
    ----------
    channels : numpy.ndarray
        (C, z, y, x) image.

    Returns
    -------
    numpy.ndarray of bool
        (z, y, x) mask, ``scipy.ndimage.binary_fill_holes`` of ``any(channels != 0)``. Its
        bounding box is that of the unfilled mask (filling never reaches past the box); the
        filled mask is what ``use_mask_for_norm`` normalises inside.
    """
    from scipy.ndimage import binary_fill_holes

    return binary_fill_holes(np.any(channels != 0, axis=0))


def nonzero_bbox(mask: np.ndarray) -> Box:
    """Bounding box of the True voxels, as nnU-Net's ``get_bbox_from_mask`` (half-open).

    An all-False mask gives the whole array, as nnU-Net's does.

    Returns
    -------
    tuple of (int, int)
        ``(start, stop)`` per axis.
    """
    return finish_bbox(block_bbox(mask), mask.shape)


def block_bbox(mask: np.ndarray, offset: Sequence[int] | None = None) -> Box | None:
    """One block's share of :func:`nonzero_bbox`, for a streamed pass over a large volume.

    Parameters
    ----------
    mask : numpy.ndarray of bool
        The block's nonzero mask (``any(channel != 0)``; holes need not be filled).
    offset : sequence of int, optional
        Where the block starts in the volume (zeros if omitted).

    Returns
    -------
    tuple of (int, int) or None
        The block's box in volume coordinates, None when the block has no True voxel. Combine
        blocks with :func:`merge_bboxes` and close with :func:`finish_bbox`.
    """
    offset = tuple(offset) if offset is not None else (0,) * mask.ndim
    box = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(np.any(mask, axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if hit.size == 0:
            return None
        box.append((int(hit[0]) + offset[axis], int(hit[-1]) + 1 + offset[axis]))
    return tuple(box)


def merge_bboxes(boxes: Iterable[Box | None]) -> Box | None:
    """Union box of per-block boxes from :func:`block_bbox` (None entries are empty blocks).

    Associative and commutative, so it serves as a tree reduction (dask ``reduction``).
    """
    out = None
    for box in boxes:
        if box is None:
            continue
        out = box if out is None else tuple((min(a[0], b[0]), max(a[1], b[1])) for a, b in zip(out, box))
    return out


def finish_bbox(box: Box | None, shape: Sequence[int]) -> Box:
    """The final crop box: ``box``, or the whole volume of ``shape`` when nothing was nonzero."""
    return tuple((0, int(s)) for s in shape) if box is None else box


def bbox_slices(box: Box) -> tuple[slice, ...]:
    """Slices of ``box`` (for cropping and for putting a crop back)."""
    return tuple(slice(lo, hi) for lo, hi in box)


def tile_slices(image_size: Sequence[int], patch_size: Sequence[int],
                tile_step_size: float = 0.5) -> list[tuple[slice, ...]]:
    """The tiles of :func:`steps` as slices, in nnU-Net's order (z outermost, x innermost).

    The order matters for equality: nnU-Net sums in float16 (:func:`add_tile`), and float16
    sums depend on the order of their terms.
    """
    import itertools

    return [tuple(slice(s, s + p) for s, p in zip(corner, patch_size))
            for corner in itertools.product(*steps(image_size, patch_size, tile_step_size))]


def add_tile(logits: np.ndarray, weights: np.ndarray, tile: np.ndarray, weight: np.ndarray,
             where: tuple[slice, ...]) -> None:
    """Add one tile's logits to the running sums exactly as nnU-Net's predictor does.

    ``tile * weight`` is formed in float32 (``weight`` is the float16 :func:`gaussian`) and
    added to ``logits`` (C, z, y, x) and ``weight`` to ``weights`` (z, y, x) in their own type,
    rounding after every tile. nnU-Net's buffers are float16 (``torch.half``, also on the
    CPU); with float32 buffers the result differs from nnU-Net's by up to ~1e-3 in probability
    inside the volume and far more (0.19 measured) where the summed weight is tiny, at the
    corners of the cropped case, because nnU-Net's float16 weight sums are coarse there.

    Parameters
    ----------
    logits, weights : numpy.ndarray
        Running sums, updated in place.
    tile : numpy.ndarray
        (C, *patch) float32 logits of the tile (mirror- and nothing else averaged).
    weight : numpy.ndarray
        The :func:`gaussian` map.
    where : tuple of slice
        The tile's spatial slices in the sums' coordinates.
    """
    logits[(slice(None),) + tuple(where)] += tile.astype(np.float32, copy=False) * weight
    weights[tuple(where)] += weight


def finish_tiles(logits: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Blended logits: the sums divided by the summed weights, in the sums' type (in place)."""
    logits /= weights
    return logits
