"""volume_info of an OME-Zarr pyramid: shape, levels, spacing, exact range, completion state."""

import numpy as np

from volseg.io import write_volume
from volseg.io.info import volume_info


def test_pyramid_description(tmp_path):
    data = np.arange(16 * 16 * 16, dtype=np.uint16).reshape(16, 16, 16)
    write_volume(tmp_path / "v.zarr", data, chunks=8, levels=2, spacing=(2.0, 1.0, 1.0))
    info = volume_info(tmp_path / "v.zarr")
    assert info["shape"] == [16, 16, 16] and info["levels"] == 2
    assert info["level_shapes"] == [[16, 16, 16], [8, 8, 8]] and info["spacing"] == [2.0, 1.0, 1.0]
    assert (info["min"], info["max"], info["range_sampled"]) == (0, 4095, False)
    assert info["chunks"] == [8, 8, 8] and info["dtype"] == "uint16" and info["labels"] is None
