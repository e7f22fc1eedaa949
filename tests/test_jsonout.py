"""Strict JSON for figures: numpy values and paths made plain, non-finite -> null, atomic files."""

import json
import math
from pathlib import Path

import numpy as np

from volseg.jsonout import dumps, to_plain, write_json


def test_plain_values_and_strict_json(tmp_path):
    value = {"a": np.float32(1.5), "b": np.arange(3), "c": (1, math.inf), "d": Path("x/y"), 2: math.nan}
    assert to_plain(value) == {"a": 1.5, "b": [0, 1, 2], "c": [1, None], "d": "x/y", "2": None}
    text = dumps(value)
    assert text.endswith("\n") and "NaN" not in text and "Infinity" not in text
    write_json(value, tmp_path / "f.json")
    assert json.loads((tmp_path / "f.json").read_text()) == json.loads(text)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.json"]  # no temporary file left
