"""Strict JSON for figures (stdlib only): numpy scalars and arrays, paths, non-finite -> null."""

from __future__ import annotations

import json
import math
import os
import sys
from typing import Any


def to_plain(value: Any) -> Any:
    """``value`` with numpy scalars/arrays, tuples and paths made JSON-ready; inf/nan -> None."""
    if hasattr(value, "tolist") and hasattr(value, "dtype"):  # numpy scalars and arrays
        value = value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def dumps(obj: Any) -> str:
    """One strict JSON document (no NaN/Infinity), indented, with a final newline."""
    return json.dumps(to_plain(obj), indent=2, allow_nan=False) + "\n"


def write_json(obj: Any, dest: str | os.PathLike) -> None:
    """Write ``obj`` to ``dest`` ('-' = stdout); a file goes to a temporary sibling, then is renamed."""
    text = dumps(obj)
    if str(dest) == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    from volseg.io.outputs import write_file

    write_file(dest, text.encode())  # atomic for a file; a symlink's target, a device as such
