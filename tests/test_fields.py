"""Shared pieces of the synthetic generators: --shape parsing and smooth random fields."""

import numpy as np
import pytest

from volseg.data.fields import MIN_SIDE, _low_freq, _parse_shape
from volseg.errors import VolsegError


def test_shape_parsing_and_a_smooth_unit_field():
    assert _parse_shape(32) == (32, 32, 32) and _parse_shape("16x20x24") == (16, 20, 24)
    with pytest.raises(VolsegError, match=r"^--shape: 'big' is not N or DxHxW"):
        _parse_shape("big")
    with pytest.raises(VolsegError, match="--shape"):
        _parse_shape(MIN_SIDE - 1)
    field = _low_freq(np.random.default_rng(0), (32, 32, 32), (4, 4, 4))
    assert field.dtype == np.float32 and field.shape == (32, 32, 32)
    assert abs(float(field.std()) - 1.0) < 0.2
    assert float(np.abs(np.diff(field, axis=2)).mean()) < 0.3 * float(field.std())  # smooth
