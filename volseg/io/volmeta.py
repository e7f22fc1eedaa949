"""What a volume is, without its voxels: :class:`VolumeMeta`, dtype spelling, channel axes.

The lowest module of ``volseg.io``: the file readers (:mod:`volseg.io.readers`) and the Zarr
reader/writer (:mod:`volseg.io.omezarr`) both use it, so neither imports the other for it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from volseg.errors import VolsegError


@dataclass(frozen=True)
class VolumeMeta:
    """What a volume is, without reading its voxels.

    Attributes
    ----------
    shape : tuple of int
        (z, y, x) in voxels.
    dtype : numpy.dtype
        Voxel type, native byte order.
    chunks : tuple of int
        (z, y, x) chunk shape of the stored data (or of the lazy array for non-chunked files).
    spacing : tuple of float
        Voxel size (z, y, x) in ``unit``; 1.0 where the input records none.
    unit : str or None
        Spatial unit name (NGFF, e.g. ``"micrometer"``), or None.
    levels : int
        Number of resolution levels (1 unless an OME-Zarr pyramid).
    format : str
        ``'ome-zarr'``, ``'zarr'``, ``'tiff'``, ``'tiff-folder'``, ``'npy'`` or ``'nifti'``.
    """

    shape: tuple
    dtype: np.dtype
    chunks: tuple
    spacing: tuple = (1.0, 1.0, 1.0)
    unit: str | None = None
    levels: int = 1
    format: str = "zarr"


def native_dtype(dtype) -> np.dtype:
    """``dtype`` in native byte order, spelled plainly (``int16``, not ``<i2``)."""
    dtype = np.dtype(dtype).newbyteorder("=")
    return np.dtype(dtype.name) if dtype.kind in "biufc" else dtype


def squeeze_channel(path, shape, channel, channel_axis, what):
    """Validate a shape of 3 or 4 axes; return (shape3, index) where index picks the channel."""
    shape = tuple(int(s) for s in shape)
    if len(shape) < 3:
        raise VolsegError(path, f"is a {len(shape)}D image of shape {shape}; a 3D volume (z, y, x) is needed")
    if len(shape) > 4:
        raise VolsegError(path, f"has {len(shape)} axes {shape}; expected 3 (z, y, x) or 4 with channels")
    if len(shape) == 3:
        if channel not in (None, 0):
            raise VolsegError("--channel", f"{path} has no channel axis; drop --channel")
        return shape, None
    n = shape[channel_axis]
    rest = shape[:channel_axis] + shape[channel_axis + 1:] if channel_axis != -1 else shape[:-1]
    if channel is None:
        if n == 1:
            return rest, 0
        raise VolsegError(path, f"is 4D ({what}, {n} channels); choose one with --channel 0..{n - 1}")
    if not 0 <= channel < n:
        raise VolsegError("--channel", f"{channel} is out of range for {path}: use 0..{n - 1}")
    return rest, int(channel)
