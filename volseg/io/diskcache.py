"""A bounded on-disk cache of fetched objects, shared safely by several processes.

Entries are files named by the sha256 of their identity (URL + key + metadata digest), in 256
sub-folders. Each is written to a temporary name and renamed into place (atomic on POSIX), so a
reader sees a whole entry or none; a crashed writer leaves at most a ``.tmp-*`` file that the
next eviction removes. Reading an entry refreshes its modification time; when the cache grows
past its bound, the least recently used entries are removed until it is 10% under. The first
byte of an entry says whether the object exists (``1`` + its bytes) or is absent (``0``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import threading
import time
from pathlib import Path

from volseg.errors import VolsegError

DEFAULT_SIZE = 20 * 2**30
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


class DiskCache:
    """Objects by identity under ``root``, at most about ``max_bytes`` in all (LRU by mtime).

    Parameters
    ----------
    root : path
        Cache folder (created when missing).
    max_bytes : int
        Bound of the total size of the entries.
    """

    ABSENT = object()

    def __init__(self, root, max_bytes: int = DEFAULT_SIZE):
        self.root = Path(root)
        self.max_bytes = int(max_bytes)
        self._added = 0
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
        if not data:
            return None
        with contextlib.suppress(OSError):
            os.utime(path)
        return self.ABSENT if data[:1] == b"0" else data[1:]

    def put(self, ident: str, data: bytes | None) -> None:
        """Store ``data`` (None: the object is absent) atomically; evict when over the bound."""
        path = self._path(ident)
        body = b"0" if data is None else b"1" + bytes(data)
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
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
        """(mtime, size, path) of every entry."""
        out = []
        if not self.root.is_dir():
            return out
        for sub in self.root.iterdir():
            if not sub.is_dir():
                continue
            for entry in os.scandir(sub):
                with contextlib.suppress(OSError):
                    st = entry.stat()
                    out.append((st.st_mtime, st.st_size, Path(entry.path)))
        return out

    def size(self) -> int:
        """Total bytes held."""
        return sum(size for _, size, _ in self.entries())

    def evict(self) -> int:
        """Remove least recently used entries (and stale temporaries) until 10% under the bound;
        returns the bytes removed. Safe while other processes read and write."""
        entries = sorted(self.entries())
        total, removed, now = sum(e[1] for e in entries), 0, time.time()
        for mtime, size, path in entries:
            if ".tmp-" in path.name:  # being written, unless an hour old (a crashed writer)
                if now - mtime > 3600:
                    with contextlib.suppress(OSError):
                        path.unlink()
                continue
            if total - removed <= self.max_bytes * 0.9:
                break
            with contextlib.suppress(OSError):
                path.unlink()
                removed += size
        return removed
