"""binary_mask: labels (1 is foreground, validated), probabilities (> threshold), booleans."""

import numpy as np
import pytest

from volseg.errors import VolsegError
from volseg.metrics.masks import binary_mask


def test_each_kind_of_volume():
    labels = np.array([0, 1, 2, 1], np.uint8)
    assert binary_mask(labels, threshold=0.5, ignore=2, name="t").tolist() == [False, True, False, True]
    prob = np.array([0.2, 0.5, 0.51], np.float32)
    assert binary_mask(prob, threshold=0.5, ignore=None, name="p").tolist() == [False, False, True]
    assert binary_mask(np.array([True, False]), threshold=0.5, ignore=None, name="b").tolist() == [True, False]
    with pytest.raises(VolsegError, match="^t: label volume holds the value 3"):
        binary_mask(np.array([3], np.uint8).reshape(1, 1, 1), threshold=0.5, ignore=2, name="t")
    with pytest.raises(VolsegError, match="unsupported dtype complex64"):
        binary_mask(np.zeros(2, np.complex64), threshold=0.5, ignore=None, name="c")
