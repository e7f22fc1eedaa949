"""A PNG preview: orthogonal slices of image, prediction and truth side by side, with an overlay.

Rows are the three orthogonal planes through one voxel (z, y, x) (default: the volume's centre):
the z-plane (y, x), the y-plane (z, x) and the x-plane (z, y). Columns are the image (when given),
the prediction, the truth and an overlay. For segmentations the overlay draws, over the image
(or grey), true positives in yellow, false positives (prediction only) in red and false
negatives (truth only) in green; ignored truth voxels are blue in the truth column. For intensity
volumes the overlay is the absolute difference |prediction - truth|. Only the three planes are
read from each volume. Written with Pillow, atomically.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from volseg.errors import VolsegError

_GAP = 4


@dataclass(frozen=True)
class Preview:
    """Where :func:`volseg.metrics.evaluate.evaluate` writes its preview, and through which voxel.

    Attributes
    ----------
    path : path
        Output ``.png``.
    centre : "z,y,x" or 3 ints, optional
        Voxel the three planes pass through (``--slice``); default the volume's centre.
    """

    path: str | os.PathLike
    centre: str | Sequence[int] | None = None

    @classmethod
    def of(cls, preview: "Preview | str | os.PathLike | None") -> "Preview | None":
        """``preview`` itself, a path as a preview through the centre, or None."""
        return preview if preview is None or isinstance(preview, Preview) else cls(preview)


def parse_slice(text: str | Sequence[int] | None, shape: Sequence[int]) -> tuple[int, int, int]:
    """``--slice z,y,x`` -> the voxel the three planes pass through (default: the centre)."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return tuple(int(n) // 2 for n in shape)  # type: ignore[return-value]
    try:
        values = [int(v) for v in (text.replace("x", ",").split(",") if isinstance(text, str) else text)]
    except ValueError:
        raise VolsegError("--slice",
                          f"expected three voxel indices z,y,x such as 10,64,64, got {text!r}") from None
    if len(values) != 3 or any(not 0 <= v < n for v, n in zip(values, shape)):
        raise VolsegError("--slice", f"{text!r} is outside the volume of shape {tuple(shape)}; "
                          "give z,y,x with 0 <= index < size")
    return tuple(values)  # type: ignore[return-value]


def _planes(arr, centre) -> list[np.ndarray]:
    z, y, x = centre
    out = []
    for key in ((z, slice(None), slice(None)), (slice(None), y, slice(None)), (slice(None), slice(None), x)):
        plane = arr[key]
        if hasattr(plane, "compute"):
            plane = plane.compute()
        out.append(np.asarray(plane))
    return out


def _grey(plane: np.ndarray, lo: float, hi: float) -> np.ndarray:
    scaled = (plane.astype(np.float64) - lo) / (hi - lo if hi > lo else 1.0)
    grey = (np.clip(scaled, 0, 1) * 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def _range(planes: list[np.ndarray]) -> tuple[float, float]:
    values = np.concatenate([p.ravel().astype(np.float64) for p in planes])
    lo, hi = np.percentile(values, [0.5, 99.5]) if values.size else (0.0, 1.0)
    return float(lo), float(hi)


def _mask_rgb(fg: np.ndarray, ignore: np.ndarray | None = None) -> np.ndarray:
    rgb = np.zeros(fg.shape + (3,), dtype=np.uint8)
    rgb[fg] = 255
    if ignore is not None:
        rgb[ignore] = (60, 90, 255)
    return rgb


def write_preview(path: str | os.PathLike, pred, truth, *, image=None,
                  centre: str | Sequence[int] | None = None, threshold: float = 0.5,
                  ignore_label: int | None = 2, segmentation: bool | None = None) -> Path:
    """Write the preview PNG of ``pred`` against ``truth`` (and ``image``) to ``path``.

    Parameters
    ----------
    path : path
        Output ``.png``; written to a temporary sibling and renamed.
    pred, truth, image : array_like, shape (z, y, x)
        Numpy or dask volumes of one shape; ``image`` optional.
    centre : "z,y,x" or 3 ints, optional
        Voxel the planes pass through; default the centre.
    threshold, ignore_label
        As for :func:`volseg.metrics.evaluate.evaluate`.
    segmentation : bool, optional
        Draw masks (True) or intensities (False); default: True for an integer/bool truth.

    Returns
    -------
    Path of the written file.
    """
    from PIL import Image

    from volseg.metrics.masks import binary_mask

    shape = tuple(truth.shape)
    point = parse_slice(centre, shape)
    if segmentation is None:
        segmentation = np.dtype(truth.dtype).kind in "biu"
    p_planes, t_planes = _planes(pred, point), _planes(truth, point)
    i_planes = _planes(image, point) if image is not None else None
    rows = []
    for k in range(3):
        columns = []
        base = None
        if i_planes is not None:
            lo, hi = _range(i_planes)
            base = _grey(i_planes[k], lo, hi)
            columns.append(base)
        if segmentation:
            g = binary_mask(t_planes[k], threshold=threshold, ignore=ignore_label, name="truth")
            p = binary_mask(p_planes[k], threshold=threshold, ignore=ignore_label, name="prediction")
            ignored = (t_planes[k] == ignore_label) if (ignore_label is not None
                                                        and t_planes[k].dtype.kind in "iu") else None
            if ignored is not None:
                p &= ~ignored
            columns += [_mask_rgb(p), _mask_rgb(g, ignored)]
            over = (base if base is not None else np.full(g.shape + (3,), 40, np.uint8)).copy()
            colours = {(True, True): (255, 220, 0), (True, False): (255, 40, 40),
                       (False, True): (40, 220, 40)}
            for (in_p, in_g), colour in colours.items():
                sel = (p == in_p) & (g == in_g)
                over[sel] = (0.35 * over[sel] + 0.65 * np.array(colour)).astype(np.uint8)
            columns.append(over)
        else:
            lo, hi = _range(t_planes)
            columns += [_grey(p_planes[k], lo, hi), _grey(t_planes[k], lo, hi)]
            diff = np.abs(p_planes[k].astype(np.float64) - t_planes[k].astype(np.float64))
            columns.append(_grey(diff, 0.0, max(hi - lo, 1e-12)))
        rows.append(columns)
    canvas = _compose(rows)
    import io

    from volseg.io.outputs import write_file

    buffer = io.BytesIO()
    Image.fromarray(canvas).save(buffer, format="PNG")
    write_file(path, buffer.getvalue())  # atomic for a file; a symlink's target, a device as such
    return Path(path)


def _compose(rows: list[list[np.ndarray]]) -> np.ndarray:
    # Small volumes are enlarged (nearest neighbour) so every tile is at least ~160 pixels.
    side = max(max(t.shape[0], t.shape[1]) for row in rows for t in row)
    factor = max(1, 160 // max(side, 1))
    if factor > 1:
        rows = [[t.repeat(factor, axis=0).repeat(factor, axis=1) for t in row] for row in rows]
    heights = [max(c.shape[0] for c in row) for row in rows]
    widths = [max(rows[r][c].shape[1] for r in range(len(rows))) for c in range(len(rows[0]))]
    canvas = np.full((sum(heights) + _GAP * (len(rows) + 1), sum(widths) + _GAP * (len(widths) + 1), 3),
                     255, dtype=np.uint8)
    y = _GAP
    for r, row in enumerate(rows):
        x = _GAP
        for c, tile in enumerate(row):
            canvas[y:y + tile.shape[0], x:x + tile.shape[1]] = tile
            x += widths[c] + _GAP
        y += heights[r] + _GAP
    return canvas
