"""Per-block completion markers and settings fingerprints: the one marker scheme of volseg.

A block-wise output (predict, stitch, diffusion sampling, postprocess, patchify) is filled by
tasks that each write one block and only then its **marker**: a file named after the block,
``<prefix><i>.<j>.<k>`` (:func:`marker_name`; ``prefix`` tells block kinds apart, e.g. ``c`` for
output chunks, ``g`` for patch groups, ``s3-`` for diffusion step 3). A killed task leaves no
marker, so a rerun redoes exactly its block. A marker is empty, or holds a short text written
atomically (patchify: how many of the range's patches contain label 1).

Where the markers lie (the layouts on disk, unchanged since they were introduced):

* ``<output>/volseg_markers/`` (:meth:`BlockMarkers.inside`): a Zarr sub-group of the output
  (predict, stitch, postprocess); for an output at a URL, objects under the same key
  (:class:`RemoteMarkers`);
* ``<store>.done/`` (:meth:`BlockMarkers.beside`): a sibling folder outside the Zarr hierarchy
  (patchify, prefix ``""``: markers named ``<lo>`` after the first patch index of the range).

:mod:`volseg.io.completion` counts them, :mod:`volseg.io.resume` and
:mod:`volseg.io.remote_output` create and resume outputs with them. Stdlib only (fsspec for
URLs through :mod:`volseg.io.remote`, imported lazily).

Examples
--------
>>> import tempfile
>>> out = tempfile.mkdtemp()
>>> markers = BlockMarkers.inside(out)
>>> markers.create()
>>> markers.mark((0, 1, 2))
>>> sorted(markers.done()), markers.todo([(0, 1, 2), (1, 0, 0)])
([(0, 1, 2)], [(1, 0, 0)])
>>> marker_name((0, 1, 2), "g"), parse_marker("g0.1.2", "g"), parse_marker("zarr.json", "g")
('g0.1.2', (0, 1, 2), None)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

MARKERS = "volseg_markers"
BESIDE_SUFFIX = ".done"
PATCH_PREFIX = ""  # patchify's markers in <store>.done: named after the range's first patch index
_GROUP_JSON = json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {}})


def fingerprint(settings: dict) -> str:
    """A short stable hash of plain-data ``settings`` (key order does not matter).

    >>> fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1})
    True
    """
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def differences(old: dict, new: dict) -> str:
    """The settings that differ, for a refusal message (the first three, then how many more).

    >>> differences({"overlap": 0.5, "tta": False}, {"overlap": 0.25, "tta": False})
    'overlap=0.5 (now 0.25)'
    """
    keys = sorted(set(old) | set(new))
    diff = [k for k in keys if json.dumps(old.get(k), default=str) != json.dumps(new.get(k), default=str)]
    shown = ", ".join(f"{k}={old.get(k)!r} (now {new.get(k)!r})" for k in diff[:3])
    return shown + (f" and {len(diff) - 3} more" if len(diff) > 3 else "")


def marker_name(key: Sequence[int], prefix: str = "c") -> str:
    """The marker file name of block ``key``: ``<prefix><k0>.<k1>...``."""
    return prefix + ".".join(str(int(k)) for k in key)


def parse_marker(name: str, prefix: str = "c") -> tuple[int, ...] | None:
    """The block key of marker ``name`` with ``prefix``; None for any other name (``zarr.json``,
    a temporary file, a marker of another prefix)."""
    match = re.fullmatch(re.escape(prefix) + r"(\d+(?:\.\d+)*)", name, flags=re.ASCII)
    return None if match is None else tuple(int(v) for v in match.group(1).split("."))


def _names(folder: Path) -> list[str]:
    try:
        return [entry.name for entry in os.scandir(folder)]
    except (FileNotFoundError, NotADirectoryError):
        return []


class BlockMarkers:
    """Completion markers of one output: files named ``<prefix><i>.<j>.<k>`` in one folder.

    Parameters
    ----------
    output : path
        The output Zarr group; markers live in its ``volseg_markers`` sub-group. Use
        :meth:`beside` for markers in the sibling folder ``<output>.done``.
    """

    def __init__(self, output: str | os.PathLike):
        self.root = Path(output) / MARKERS

    @classmethod
    def inside(cls, output: str | os.PathLike) -> BlockMarkers:
        """Markers in ``<output>/volseg_markers`` (predict, stitch, postprocess)."""
        return cls(output)

    @classmethod
    def beside(cls, store: str | os.PathLike) -> BlockMarkers:
        """Markers in the sibling folder ``<store>.done`` (patchify: outside the patch store)."""
        store = Path(store)
        markers = cls.__new__(cls)
        markers.root = store.with_name(store.name + BESIDE_SUFFIX)
        return markers

    @staticmethod
    def name(key: Sequence[int], prefix: str = "c") -> str:
        return marker_name(key, prefix)

    def create(self) -> None:
        """Make the marker sub-group (a valid, empty Zarr group)."""
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "zarr.json").write_text(_GROUP_JSON)

    def mark(self, key: Sequence[int], prefix: str = "c", text: str | None = None) -> None:
        """Record block ``key`` as done (call only after its data is written).

        ``text``: contents of the marker, written atomically (a temporary file renamed into
        place; the folder is made when missing); None leaves it empty.
        """
        path = self.root / self.name(key, prefix)
        if text is None:
            path.touch()
            return
        self.root.mkdir(exist_ok=True)
        tmp = self.root / f".{path.name}.tmp-{os.getpid()}"
        tmp.write_text(text)
        os.replace(tmp, path)

    def _listing(self) -> list[str]:
        return _names(self.root)

    def done(self, prefix: str = "c") -> set[tuple[int, ...]]:
        """The keys of the blocks marked done with ``prefix``."""
        keys = (parse_marker(name, prefix) for name in self._listing())
        return {key for key in keys if key is not None}

    def todo(self, keys: Iterable[Sequence[int]], prefix: str = "c") -> list[tuple[int, ...]]:
        """The ``keys`` not yet marked done, in their order."""
        done = self.done(prefix)
        return [tuple(k) for k in keys if tuple(k) not in done]

    def texts(self, prefix: str = "c") -> dict[tuple[int, ...], str]:
        """``{key: marker contents}`` of the blocks marked done (unreadable markers left out)."""
        out = {}
        for name in self._listing():
            key = parse_marker(name, prefix)
            if key is None:
                continue
            try:
                out[key] = (self.root / name).read_text()
            except OSError:
                continue
        return out


class RemoteMarkers(BlockMarkers):
    """:class:`BlockMarkers` as empty objects under ``URL/volseg_markers/`` (an output at a URL)."""

    def __init__(self, output: str):
        from volseg.io.remote import filesystem, join

        self.url = join(output, MARKERS)
        self.fs, self.path = filesystem(self.url)
        self.root = self.url

    def create(self) -> None:
        self.fs.pipe_file(f"{self.path}/zarr.json", _GROUP_JSON.encode())

    def mark(self, key: Sequence[int], prefix: str = "c", text: str | None = None) -> None:
        self.fs.pipe_file(f"{self.path}/{self.name(key, prefix)}", (text or "").encode())

    def _listing(self) -> list[str]:
        try:
            self.fs.invalidate_cache(self.path)
            return [n.rstrip("/").rsplit("/", 1)[-1] for n in self.fs.ls(self.path, detail=False)]
        except FileNotFoundError:
            return []

    def texts(self, prefix: str = "c") -> dict[tuple[int, ...], str]:
        return {key: self.fs.cat_file(f"{self.path}/{self.name(key, prefix)}").decode()
                for key in self.done(prefix)}


class Markers(BlockMarkers):
    """``Markers(output)``: the markers of a block-wise output in ``<output>/volseg_markers``;
    for an output at a URL, a :class:`RemoteMarkers` (objects there)."""

    def __new__(cls, output=None):
        from volseg.io.remote import is_url

        if cls is Markers and is_url(output):
            return RemoteMarkers(output)
        return super().__new__(cls)
