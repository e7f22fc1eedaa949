"""Label validation: 0, 1 and the ignore label pass; any other value is named with its position."""

import numpy as np
import pytest

from volseg.errors import VolsegError
from volseg.io.labelcheck import check_label_patches, check_labels


def test_allowed_values_and_the_first_bad_one():
    ok = np.array([0, 1, 2], np.uint8).reshape(1, 1, 3)
    check_labels(ok, "lab.zarr")
    check_labels(ok.astype(bool), "lab.zarr", ignore=None)
    with pytest.raises(VolsegError, match=r"^lab.zarr: label volume holds the value 2 at \(5, 6, 9\); .*labels 0, 1;"):
        check_labels(ok, "lab.zarr", ignore=None, offset=(5, 6, 7))
    with pytest.raises(VolsegError, match="the non-integer value 0.5"):
        check_labels(np.array([0.0, 0.5]).reshape(1, 1, 2), "p.npy")
    patches = np.zeros((2, 2, 2, 2), np.int16)
    patches[1, 1, 0, 1] = 7
    with pytest.raises(VolsegError, match=r"the value 7 at \(11, 20, 31\); training needs"):
        check_label_patches(patches, [(0, 0, 0), (10, 20, 30)], "lab.npy")
