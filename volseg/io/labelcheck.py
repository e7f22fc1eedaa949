"""Label volumes hold 0 (background), 1 (foreground) and the ignore label (2): checked while read.

One function, :func:`check_labels`, gives the same message wherever labels are read
(``evaluate`` scoring, ``patchify`` cutting training patches), block by block.
"""

from __future__ import annotations

import os

import numpy as np

from volseg.errors import VolsegError


def check_labels(values: np.ndarray, path, *, ignore: int | None = 2, offset=None,
                 need: str = "segmentation needs",
                 fix: str = "binarise it (e.g. labels > 0) or pass probabilities as float") -> None:
    """Raise :class:`VolsegError` unless every value of ``values`` is 0, 1 or ``ignore``.

    Parameters
    ----------
    values : numpy.ndarray, (z, y, x)
        A block of a label volume (any dtype; floats must hold whole numbers).
    path : str or os.PathLike
        The label volume, named in the error.
    ignore : int or None
        The ignore label (None: only 0 and 1 are allowed).
    offset : (z, y, x), optional
        Position of ``values[0, 0, 0]`` in the volume; when given, the error names the position.
    need, fix : str
        Who needs the labels, and how to fix them, in the message.
    """
    kind = values.dtype.kind
    if kind == "b":
        return
    if kind not in "iuf":
        raise VolsegError(path, f"has dtype {values.dtype}; labels must be integers 0, 1"
                          + (f" and {ignore} (ignore)" if ignore is not None else ""))
    bad = (values != 0) & (values != 1)
    if ignore is not None:
        bad &= values != ignore
    if not bad.any():
        return
    first = np.unravel_index(int(np.argmax(bad.ravel())), values.shape)
    value = values[first]
    where = "" if offset is None else \
        " at (" + ", ".join(str(int(f) + int(o)) for f, o in zip(first, offset)) + ")"
    shown = f"{float(value):g}" if kind == "f" else str(int(value))
    what = "the non-integer value" if kind == "f" and not float(value).is_integer() else "the value"
    allowed = "0, 1" + (f" and {ignore} (ignore)" if ignore is not None else "")
    raise VolsegError(os.fspath(path), f"label volume holds {what} {shown}{where}; {need} "
                      f"labels {allowed}; {fix}")


def check_label_patches(patches: np.ndarray, origins, path, *, ignore: int | None = 2,
                        need: str = "training needs",
                        fix: str = "binarise it (e.g. labels > 0) before patchify") -> None:
    """:func:`check_labels` on each (D, H, W) patch of ``patches`` (n, D, H, W) at ``origins`` (n, 3)."""
    for patch, origin in zip(patches, np.asarray(origins)):
        check_labels(patch, path, ignore=ignore, offset=origin, need=need, fix=fix)
