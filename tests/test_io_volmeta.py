"""Volume metadata helpers: native dtypes, and 4D inputs reduced to one channel (or refused)."""

import numpy as np
import pytest

from volseg.errors import VolsegError
from volseg.io.volmeta import native_dtype, squeeze_channel


def test_native_dtype_and_channels():
    assert native_dtype(">i2") == np.dtype("int16") and str(native_dtype("<f4")) == "float32"
    assert squeeze_channel("v", (4, 5, 6), None, 0, "c") == ((4, 5, 6), None)
    assert squeeze_channel("v", (1, 4, 5, 6), None, 0, "c") == ((4, 5, 6), 0)
    assert squeeze_channel("v", (4, 5, 6, 3), 2, -1, "c") == ((4, 5, 6), 2)
    with pytest.raises(VolsegError, match=r"^v: is 4D \(czyx, 3 channels\); choose one with --channel 0..2"):
        squeeze_channel("v", (3, 4, 5, 6), None, 0, "czyx")
    with pytest.raises(VolsegError, match=r"^--channel: 5 is out of range for v: use 0..2"):
        squeeze_channel("v", (3, 4, 5, 6), 5, 0, "czyx")
    with pytest.raises(VolsegError, match="a 3D volume"):
        squeeze_channel("v", (4, 5), None, 0, "c")
