"""postprocess options: --hysteresis LOW,HIGH and --smooth parsed, bad values named with the fix."""

import pytest

from volseg.errors import VolsegError
from volseg.postprocess.options import DEFAULT_SMOOTH, parse_hysteresis, parse_smooth


def test_hysteresis_and_smooth():
    assert parse_hysteresis("0.3,0.7") == (0.3, 0.7) and parse_hysteresis(None) is None
    assert parse_hysteresis((0.5, 0.5)) == (0.5, 0.5) and parse_hysteresis(" ") is None
    with pytest.raises(VolsegError, match=r"^--hysteresis: LOW 0.8 is above HIGH 0.2; pass LOW,HIGH"):
        parse_hysteresis("0.8,0.2")
    with pytest.raises(VolsegError, match="expected LOW,HIGH such as 0.3,0.7, got 'x'"):
        parse_hysteresis("x")
    assert parse_smooth(None, "f", "p.zarr") == DEFAULT_SMOOTH and parse_smooth(None, "u", "p.zarr") == 0.0
