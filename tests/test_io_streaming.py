"""Streamed writing helpers: --chunks/--spacing/--dtype parsing and write-block shapes."""

import numpy as np
import pytest

from volseg.errors import VolsegError
from volseg.io.streaming import block_shape, parse_chunks, parse_dtype, parse_spacing


def test_options_and_block_shapes():
    assert parse_chunks("64x128x128") == (64, 128, 128) and parse_chunks(32) == (32, 32, 32)
    with pytest.raises(VolsegError, match=r"^--chunks: expected an int or ZxYxX"):
        parse_chunks("big")
    assert parse_spacing(None) == (1.0, 1.0, 1.0) and parse_spacing(2) == (2.0, 2.0, 2.0)
    with pytest.raises(VolsegError, match="expected 3 positive numbers"):
        parse_spacing((1, 0, 1))
    assert parse_dtype("keep", ">u2") == np.dtype("uint16")
    with pytest.raises(VolsegError, match=r"^--dtype: unknown dtype 'nope'; use keep or one of"):
        parse_dtype("nope", "u1")
    # whole chunks, grown along x, then y, then z, under the byte budget
    assert block_shape((4, 4, 4), (16, 16, 16), 1, budget=4 * 4 * 16) == (4, 4, 16)
    assert block_shape((4, 4, 4), (16, 16, 16), 1, budget=4 * 8 * 16) == (4, 8, 16)
    assert block_shape((4, 4, 4), (10, 10, 10), 1, budget=10**6) == (10, 10, 10)
