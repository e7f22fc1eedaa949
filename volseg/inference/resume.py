"""Resumable block-wise outputs: a settings fingerprint and per-block completion markers.

An output that tasks fill block by block (predict, stitch) is created once, with the settings
that produce it recorded in its attributes (``volseg.settings`` and ``volseg.fingerprint``).
Each task writes its block and only then an empty marker file, named after the block, in the
``volseg_markers`` sub-group of the output. A rerun of the same command finds the markers and
skips those blocks; a killed task leaves no marker, so its block is redone. A rerun with other
settings is refused unless ``--overwrite``; an output with the very same settings is resumed
even with ``--overwrite`` (so the parts of a job array never wipe each other's work).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from volseg.errors import VolsegError
from volseg.io.atomic import is_empty_dir, remove_path, temp_sibling

MARKERS = "volseg_markers"
_GROUP_JSON = json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {}})


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (identifies a model independently of where it lies)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fingerprint(settings: dict) -> str:
    """A short stable hash of plain-data ``settings``."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Markers:
    """Completion markers of one output: empty files named ``<prefix><i>.<j>.<k>``.

    Parameters
    ----------
    output : path
        The output Zarr group; markers live in its ``volseg_markers`` sub-group.
    """

    def __new__(cls, output=None):
        from volseg.io.remote import is_url

        if cls is Markers and is_url(output):  # an output at a URL: markers are objects there
            from volseg.inference.remote_output import RemoteMarkers

            return super().__new__(RemoteMarkers)
        return super().__new__(cls)

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


def _read_settings(path: Path) -> dict | None:
    try:
        attrs = json.loads((path / "zarr.json").read_text()).get("attributes", {})
    except (OSError, ValueError):
        return None
    info = attrs.get("volseg") or {}
    if "fingerprint" not in info:
        return None
    return info


def _differences(old: dict, new: dict) -> str:
    keys = sorted(set(old) | set(new))
    diff = [k for k in keys if json.dumps(old.get(k), default=str) != json.dumps(new.get(k), default=str)]
    shown = ", ".join(f"{k}={old.get(k)!r} (now {new.get(k)!r})" for k in diff[:3])
    return shown + (f" and {len(diff) - 3} more" if len(diff) > 3 else "")


def open_output(path: str | os.PathLike, *, settings: dict, create: Callable[[Path, dict], None],
                overwrite: bool = False) -> tuple[Path, Markers, bool]:
    """Create a resumable output, or reopen an existing one made with the same ``settings``.

    Parameters
    ----------
    path : path
        The output Zarr group.
    settings : dict
        Plain data that determines the output's content; its fingerprint is stored.
    create : callable
        ``create(tmp_path, volseg_attrs)`` builds the empty output (metadata, arrays) at
        ``tmp_path``; it is renamed onto ``path`` when complete, so a half-created output never
        appears under ``path``. The marker sub-group is added here.
    overwrite : bool
        Replace an existing output made with other settings (or not by volseg).

    Returns
    -------
    (path, markers, resumed)

    Raises
    ------
    VolsegError
        ``path`` exists with other settings (or is not a resumable volseg output) and
        ``overwrite`` is false.
    """
    from volseg.io.remote import is_url

    if is_url(path):  # object stores have no rename: see volseg.inference.remote_output
        from volseg.inference.remote_output import open_remote_output

        return open_remote_output(path, settings=settings, create=create, overwrite=overwrite)
    path = Path(path)
    attrs = {"settings": settings, "fingerprint": fingerprint(settings)}
    for _attempt in range(2):
        if path.exists() and not is_empty_dir(path):
            info = _read_settings(path)
            if info is not None and info.get("fingerprint") == attrs["fingerprint"]:
                return path, Markers(path), True
            if not overwrite:
                if info is None:
                    raise VolsegError(path, "exists and is not a resumable volseg output; "
                                      "pass --overwrite to replace it or choose another -o")
                raise VolsegError(path, "exists with other settings: "
                                  f"{_differences(info.get('settings') or {}, settings)}; "
                                  "pass --overwrite to replace it or choose another -o")
            remove_path(path)
        if is_empty_dir(path):
            path.rmdir()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_sibling(path)
        remove_path(tmp)
        try:
            create(tmp, attrs)
            Markers(tmp).create()
            os.rename(tmp, path)
            return path, Markers(path), False
        except OSError:
            remove_path(tmp)
            if not path.exists():
                raise
            overwrite = False  # another part created it first: resume it if the settings match
        except BaseException:
            remove_path(tmp)
            raise
    raise VolsegError(path, "could not be created; check the folder is writable")
