"""A bounded on-disk cache of fetched objects, shared safely by several processes.

Entries are files named by the sha256 of their identity (URL + key + metadata digest), in 256
sub-folders. Each is written to a temporary name and renamed into place (atomic on POSIX), so a
reader sees a whole entry or none; a crashed writer leaves at most a ``.tmp-*`` file that the
next eviction removes. Reading an entry refreshes its modification time; when the cache grows
past its bound, the least recently used entries are removed until it is 10% under. An entry
starts with :data:`MAGIC` and then one byte that says whether the object exists (``1`` + its
bytes) or is absent (``0``).

The cache owns its folder: volseg writes the marker file :data:`MARKER` when it creates the
folder or adopts an empty one, and refuses a folder that holds anything else without it
(:func:`claim`), so ``--cache mydata`` can never evict a user's files. Even inside a marked
folder, eviction removes only files volseg wrote: a name of 64 hex digits in the sub-folder of
its first two, starting with :data:`MAGIC` (or such a name + ``.tmp-<pid>-<thread>``, a crashed
writer's temporary, after an hour). Anything else there, an entry-shaped name included, is
neither counted nor removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import threading
import time
from pathlib import Path

from volseg.errors import VolsegError

DEFAULT_SIZE = 20 * 2**30
MARKER = "volseg-cache.json"
MAGIC = b"VSC1"
FORMAT = {"format": "volseg-cache", "version": 1}
_SUB = re.compile(r"[0-9a-f]{2}")
_ENTRY = re.compile(r"([0-9a-f]{64})(\.tmp-\d+-\d+)?")
_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9, "t": 1e12,
          "tb": 1e12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(text, *, name: str = "--cache-size") -> int:
    """``20GiB``, ``500MB``, ``1e9`` or an int -> bytes."""
    if isinstance(text, int):
        value = text
    else:
        m = re.fullmatch(r"\s*([0-9.eE+]+)\s*([a-zA-Z]*)\s*", str(text))
        unit = m.group(2).lower() if m else None
        if not m or unit not in _UNITS:
            raise VolsegError(name, f"{text!r} is not a size; use e.g. 20GiB, 500MB or a number of bytes")
        try:
            value = int(float(m.group(1)) * _UNITS[unit])
        except ValueError:
            raise VolsegError(name, f"{text!r} is not a size; use e.g. 20GiB") from None
    if value <= 0:
        raise VolsegError(name, f"must be positive, got {text!r}")
    return value


def is_marked(root) -> bool:
    """True when ``root`` holds volseg's cache marker (:data:`MARKER` of this format)."""
    try:
        with open(Path(root) / MARKER) as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and doc.get("format") == FORMAT["format"]


def claim(root, *, option: str = "--cache") -> Path:
    """Make ``root`` a volseg cache folder, or check that it is one.

    A missing folder is created and an empty one adopted: both get the marker file
    :data:`MARKER`. A marked folder is used as it is.

    Parameters
    ----------
    root : path
        The cache folder.
    option : str
        How the user named it, for messages (``--cache`` or ``VOLSEG_CACHE``).

    Returns
    -------
    pathlib.Path
        ``root``.

    Raises
    ------
    VolsegError
        ``root`` is a file, cannot be created, or holds entries without the marker (a folder
        of the user's, or a cache of another program).
    """
    root = Path(root)
    if is_marked(root):
        return root
    if root.exists() and not root.is_dir():
        raise VolsegError(root, f"is a file, not a folder; give an empty or new folder for {option}")
    try:
        root.mkdir(parents=True, exist_ok=True)
        names = [e.name for e in os.scandir(root) if not e.name.startswith(f".{MARKER}.tmp-")]
    except OSError as exc:
        raise VolsegError(root, f"cannot be used as the read cache ({exc.strerror or exc}); "
                          f"give a writable folder for {option}") from None
    if names:
        if is_marked(root):  # another process adopted it meanwhile
            return root
        what = "1 entry" if len(names) == 1 else f"{len(names)} entries"
        raise VolsegError(root, f"is not a volseg cache (it holds {what} volseg did not write); "
                          f"give an empty or new folder for {option}")
    tmp = root / f".{MARKER}.tmp-{os.getpid()}-{threading.get_ident()}"
    try:
        tmp.write_text(json.dumps({**FORMAT, "note": "read cache of volseg; entries are evicted by size"}))
        os.replace(tmp, root / MARKER)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise VolsegError(root, f"cannot be used as the read cache ({exc.strerror or exc}); "
                          f"give a writable folder for {option}") from None
    return root


def check_place(root, *, inputs=(), outputs=(), option: str = "--cache") -> None:
    """Refuse a cache folder that is, contains or lies inside an input, output or run directory,
    lies inside the Zarr store that holds an input, or inside any Zarr store: the comparison of
    ``volseg.io.outputs.guard_output`` (:func:`volseg.io.identity.check_apart`), so every form
    (symlinks, ``..``, ``file://``, normalised URLs) means one place. ``inputs`` and ``outputs``
    are flat (:func:`volseg.io.outputs.input_paths` flattens nested ones); None and ``-`` are
    skipped.

    Raises
    ------
    VolsegError
        ``DIR: is the input scroll.zarr; give a separate folder for --cache`` (and "lies
        inside", "contains").
    """
    from volseg.io.identity import check_apart, enclosing_store, identity

    fix = f"give a separate, empty or new folder for {option} (eviction deletes files in it)"
    place = identity(root)
    for items, role in ((inputs, "input"), (outputs, "output")):
        for item in items:
            if item is not None and os.fspath(item).strip() and os.fspath(item) != "-":
                check_apart(place, os.fspath(item), role, os.fspath(root), option, fix=fix)
    store = enclosing_store(str(place))
    if store is not None:
        raise VolsegError(root, f"lies inside the Zarr store {store}; {fix}")


class DiskCache:
    """Objects by identity under ``root``, at most about ``max_bytes`` in all (LRU by mtime).

    Parameters
    ----------
    root : path
        Cache folder: made a volseg cache (:func:`claim`) before the first entry is written.
    max_bytes : int
        Bound of the total size of the entries.
    """

    ABSENT = object()

    def __init__(self, root, max_bytes: int = DEFAULT_SIZE):
        self.root = Path(root)
        self.max_bytes = int(max_bytes)
        self._added = 0
        self._claimed = False
        self._lock = threading.Lock()

    def __getstate__(self):
        return {"root": self.root, "max_bytes": self.max_bytes}

    def __setstate__(self, state):
        self.__init__(state["root"], state["max_bytes"])

    def _path(self, ident: str) -> Path:
        h = hashlib.sha256(ident.encode()).hexdigest()
        return self.root / h[:2] / h

    def get(self, ident: str):
        """The cached bytes, :attr:`ABSENT` for an object known not to exist, or None (a miss)."""
        path = self._path(ident)
        try:
            data = path.read_bytes()
        except OSError:
            return None
        if len(data) <= len(MAGIC) or not data.startswith(MAGIC):
            return None
        with contextlib.suppress(OSError):
            os.utime(path)
        body = data[len(MAGIC):]
        return self.ABSENT if body[:1] == b"0" else body[1:]

    def put(self, ident: str, data: bytes | None) -> None:
        """Store ``data`` (None: the object is absent) atomically; evict when over the bound."""
        if not self._claimed:
            claim(self.root)
            self._claimed = True
        path = self._path(ident)
        body = MAGIC + (b"0" if data is None else b"1" + bytes(data))
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
        try:
            path.parent.mkdir(exist_ok=True)
            tmp.write_bytes(body)
            os.replace(tmp, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise VolsegError(self.root, f"cannot write the read cache ({exc.strerror or exc}); "
                              "choose a writable --cache folder") from None
        with self._lock:
            self._added += len(body)
            due = self._added > self.max_bytes // 20
            if due:
                self._added = 0
        if due:
            self.evict()

    def entries(self) -> list[tuple[float, int, Path]]:
        """(mtime, size, path) of every file named like an entry or an entry's temporary (see
        the module docstring); nothing else in the folder is listed."""
        out = []
        if not is_marked(self.root):
            return out
        for sub in os.scandir(self.root):
            if not (_SUB.fullmatch(sub.name) and sub.is_dir(follow_symlinks=False)):
                continue
            for entry in os.scandir(sub.path):
                m = _ENTRY.fullmatch(entry.name)
                if not m or not m.group(1).startswith(sub.name) or not entry.is_file(follow_symlinks=False):
                    continue
                with contextlib.suppress(OSError):
                    st = entry.stat(follow_symlinks=False)
                    out.append((st.st_mtime, st.st_size, Path(entry.path)))
        return out

    def size(self) -> int:
        """Total bytes held by entries."""
        return sum(size for _, size, path in self.entries() if _is_entry(path))

    def evict(self) -> int:
        """Remove least recently used entries (and stale temporaries) until 10% under the bound;
        returns the bytes removed. Safe while other processes read and write. Files that are
        not volseg's entries (see the module docstring) are never removed."""
        entries = sorted(self.entries())
        now, temps, kept = time.time(), [], []
        for item in entries:
            (temps if ".tmp-" in item[2].name else kept).append(item)
        for mtime, _, path in temps:  # being written, unless an hour old (a crashed writer)
            if now - mtime > 3600:
                with contextlib.suppress(OSError):
                    path.unlink()
        total, removed = sum(e[1] for e in kept), 0
        for _, size, path in kept:
            if total - removed <= self.max_bytes * 0.9:
                break
            if not _is_entry(path):  # an entry-shaped name volseg did not write: not counted, kept
                total -= size
                continue
            with contextlib.suppress(OSError):
                path.unlink()
                removed += size
        return removed


def _is_entry(path: Path) -> bool:
    """True when the file starts like an entry volseg wrote (:data:`MAGIC`, then 0 or 1)."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(MAGIC) + 1)
    except OSError:
        return False
    return head[:len(MAGIC)] == MAGIC and head[len(MAGIC):] in (b"0", b"1")
