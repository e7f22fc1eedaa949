"""Per-block completion markers and settings fingerprints (the local, lowest layer of resume).

:mod:`volseg.io.resume` (local outputs, ``--overwrite`` work folders, completion) and
:mod:`volseg.io.remote_output` (outputs at URLs) both build on this module.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

MARKERS = "volseg_markers"
_GROUP_JSON = json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {}})


def fingerprint(settings: dict) -> str:
    """A short stable hash of plain-data ``settings``."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class BlockMarkers:
    """Completion markers of one output: empty files named ``<prefix><i>.<j>.<k>``.

    Parameters
    ----------
    output : path
        The output Zarr group; markers live in its ``volseg_markers`` sub-group.
    """

    def __init__(self, output: str | os.PathLike):
        self.root = Path(output) / MARKERS

    @staticmethod
    def name(key: Sequence[int], prefix: str = "c") -> str:
        return prefix + ".".join(str(int(k)) for k in key)

    def create(self) -> None:
        """Make the marker sub-group (a valid, empty Zarr group)."""
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "zarr.json").write_text(_GROUP_JSON)

    def mark(self, key: Sequence[int], prefix: str = "c") -> None:
        """Record block ``key`` as done (call only after its data is written)."""
        (self.root / self.name(key, prefix)).touch()

    def done(self, prefix: str = "c") -> set[tuple[int, ...]]:
        """The keys of the blocks marked done with ``prefix``."""
        if not self.root.is_dir():
            return set()
        keys = set()
        for entry in os.scandir(self.root):
            rest = entry.name[len(prefix):]
            if entry.name.startswith(prefix) and rest.replace(".", "").isdigit():
                keys.add(tuple(int(v) for v in rest.split(".")))
        return keys

    def todo(self, keys: Iterable[Sequence[int]], prefix: str = "c") -> list[tuple[int, ...]]:
        """The ``keys`` not yet marked done, in their order."""
        done = self.done(prefix)
        return [tuple(k) for k in keys if tuple(k) not in done]


def differences(old: dict, new: dict) -> str:
    keys = sorted(set(old) | set(new))
    diff = [k for k in keys if json.dumps(old.get(k), default=str) != json.dumps(new.get(k), default=str)]
    shown = ", ".join(f"{k}={old.get(k)!r} (now {new.get(k)!r})" for k in diff[:3])
    return shown + (f" and {len(diff) - 3} more" if len(diff) > 3 else "")
