"""The evaluate preview: --slice parsing and a PNG of the three planes written atomically."""

import numpy as np
import pytest

from volseg.errors import VolsegError
from volseg.metrics.preview import parse_slice, write_preview


def test_slice_and_png(tmp_path):
    assert parse_slice(None, (8, 10, 12)) == (4, 5, 6) and parse_slice("1,2,3", (8, 10, 12)) == (1, 2, 3)
    with pytest.raises(VolsegError, match=r"^--slice: '9,0,0' is outside the volume of shape \(8, 10, 12\)"):
        parse_slice("9,0,0", (8, 10, 12))
    truth = np.zeros((8, 10, 12), np.uint8)
    truth[2:6, 3:7, 4:8] = 1
    pred = np.where(truth == 1, 0.9, 0.1).astype(np.float32)
    out = write_preview(tmp_path / "p.png", pred, truth, image=np.random.default_rng(0).random((8, 10, 12)))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.png"]
