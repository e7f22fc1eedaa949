"""Foreground masks of label volumes and probability maps, shared by evaluate and preview."""

from __future__ import annotations

import numpy as np

from volseg.errors import VolsegError
from volseg.io.labelcheck import check_labels


def binary_mask(values: np.ndarray, *, threshold: float, ignore: int | None, name: str) -> np.ndarray:
    """Foreground of a label volume (0, 1, ignore) or of a probability map (> threshold)."""
    kind = values.dtype.kind
    if kind == "b":
        return values.astype(bool)
    if kind in "iu":
        check_labels(values, name, ignore=ignore, need="segmentation metrics need")
        return values == 1
    if kind == "f":
        return values > threshold
    raise VolsegError(name, f"unsupported dtype {values.dtype} for segmentation metrics")
