"""resize_3d: nearest keeps labels and dtype, linear gives float32, bad arguments are named."""

import numpy as np
import pytest

from volseg.data.resize import resize_3d
from volseg.errors import VolsegError


def test_labels_and_images():
    labels = np.zeros((4, 4, 4), np.uint8)
    labels[:2] = 1
    up = resize_3d(labels, (8, 8, 8), order=0)
    assert up.dtype == np.uint8 and set(np.unique(up)) == {0, 1} and (up[:4] == 1).all() and (up[4:] == 0).all()
    image = np.linspace(0, 1, 8 ** 3, dtype=np.float64).reshape(8, 8, 8)
    small = resize_3d(image, (4, 4, 4))
    assert small.dtype == np.float32 and small.shape == (4, 4, 4)
    assert abs(float(small.mean()) - float(image.mean())) < 1e-3
    with pytest.raises(VolsegError, match=r"^order: expected an interpolation order 0..5, got 9"):
        resize_3d(image, (4, 4, 4), order=9)
    with pytest.raises(VolsegError, match="expected a 3D"):
        resize_3d(np.zeros((2, 2)), (4, 4, 4))
