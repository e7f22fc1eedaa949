"""Shared inference input helpers: fixed forward batches and condition images next to the volume."""

import numpy as np
import pytest

from volseg.errors import VolsegError
from volseg.inference.source import condition_volumes, forward_batches
from volseg.io import write_volume


def test_forward_batches_are_fixed_z_innermost():
    batches = forward_batches((2, 1, 3), 4)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(6)) and [len(b) for b in batches] == [4, 2]
    assert flat[:2].tolist() == [0, 3]  # z varies fastest: (0, 0, 0) then (1, 0, 0)


def test_condition_images_must_exist_and_match(tmp_path):
    write_volume(tmp_path / "v.zarr", np.zeros((8, 8, 8), np.uint8), chunks=8)
    write_volume(tmp_path / "v.zarr" / "t2", np.zeros((8, 8, 8), np.uint8), chunks=8)
    assert condition_volumes(tmp_path / "v.zarr", ["t2"], (8, 8, 8)) == [str(tmp_path / "v.zarr" / "t2")]
    with pytest.raises(VolsegError, match=r"has no condition image 'flair'"):
        condition_volumes(tmp_path / "v.zarr", ["flair"], (8, 8, 8))
    with pytest.raises(VolsegError, match=r"has shape \(8, 8, 8\) but the volume has \(4, 4, 4\)"):
        condition_volumes(tmp_path / "v.zarr", ["t2"], (4, 4, 4))
