"""volseg.inference.output: --dtype/--threshold/--channel, then the conversion of blended values."""

import numpy as np
import pytest

from volseg.errors import VolsegError
from volseg.inference.output import OutputOptions, OutputSpec


def test_options_resolve_against_the_model_channels():
    assert OutputOptions.parse().spec(1) == OutputSpec("probability", "float32", None, 0)
    assert OutputOptions.parse().spec(3) == OutputSpec("labels", "uint8", None, None)
    assert OutputOptions.parse(channel=2, dtype="float16").spec(3) == OutputSpec("probability", "float16", None, 2)
    assert OutputOptions.parse().spec(1, image=True).kind == "image"


@pytest.mark.parametrize("options, channels, image, needle", [
    ({"threshold": 1.5}, 1, False, "(0, 1)"), ({"threshold": 0.5}, 3, False, "--channel"),
    ({"threshold": 0.5}, 1, True, "image"), ({"channel": 3}, 2, False, "0..1"),
])
def test_options_the_model_cannot_honour_name_the_option(options, channels, image, needle):
    with pytest.raises(VolsegError, match=None) as err:
        OutputOptions.parse(**options).spec(channels, image=image)
    assert needle in str(err.value)


def test_specs_convert_blended_values():
    values = np.stack([np.full((2, 2, 2), 0.2, np.float32), np.full((2, 2, 2), 0.7, np.float32)])
    assert (OutputSpec("labels", "uint8").convert(values) == 1).all()
    assert OutputSpec("probability", "float32", 0.5, 1).convert(values).dtype == np.uint8
    assert OutputSpec("probability", "float16", None, 0).convert(values).dtype == np.float16
