"""Volume storage: open any supported input lazily, write OME-Zarr atomically and streamed.

Axis order is always (z, y, x); sizes are in voxels. See :mod:`volseg.io.readers` for the
inputs (TIFF, TIFF folders, npy, NIfTI, Zarr/OME-Zarr) and :mod:`volseg.io.omezarr` for the
layout written (Zarr v3, NGFF 0.5, optional pyramid, NGFF label images).
"""

from volseg.io.atomic import atomic_dir
from volseg.io.info import volume_info
from volseg.io.omezarr import create_volume, find_labels, write_label_image, write_volume
from volseg.io.prepare import prepare
from volseg.io.readers import VolumeMeta, open_volume, read_meta

__all__ = ["open_volume", "read_meta", "VolumeMeta", "write_volume", "create_volume",
           "write_label_image", "atomic_dir", "find_labels", "prepare", "volume_info"]
