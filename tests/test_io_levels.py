"""--level N: the path of a pyramid level, refused with the available levels when absent."""

import numpy as np
import pytest

from volseg.errors import VolsegError
from volseg.io import write_volume
from volseg.io.levels import parse_level, resolve_level


def test_levels_of_a_pyramid_and_of_plain_files(tmp_path):
    write_volume(tmp_path / "v.zarr", np.zeros((16, 16, 16), np.uint8), chunks=8, levels=2)
    assert resolve_level(str(tmp_path / "v.zarr"), None) == str(tmp_path / "v.zarr")
    assert resolve_level(str(tmp_path / "v.zarr"), "1").rstrip("/").endswith("v.zarr/1")
    with pytest.raises(VolsegError, match=r"v.zarr: has no level 2; available levels: 0..1"):
        resolve_level(str(tmp_path / "v.zarr"), 2)
    np.save(tmp_path / "a.npy", np.zeros((2, 2, 2)))
    assert resolve_level(str(tmp_path / "a.npy"), 0) == str(tmp_path / "a.npy")
    with pytest.raises(VolsegError, match="only OME-Zarr pyramids have levels"):
        resolve_level(str(tmp_path / "a.npy"), 1)
    with pytest.raises(VolsegError, match=r"^--level: 'x' is not a level number"):
        parse_level("x")
    with pytest.raises(VolsegError, match="must be 0 or more, got -1"):
        parse_level(-1)
