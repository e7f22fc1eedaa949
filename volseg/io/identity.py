"""One identity for every input and output, whatever its form (stdlib only).

The output guards (:func:`volseg.io.outputs.guard_output`) compare outputs with inputs through
:func:`identity`, so the same place is recognised however it is written:

* a local path (relative, ``./``, ``..``, ``~``, symlinks) is its resolved real path;
* a ``file://`` URL is the local path it names (:func:`local_path`): ``file:///abs/x``,
  ``file://localhost/abs/x``; ``file://rel/x`` is relative to the working directory, as fsspec
  reads it. Outputs given as ``file://`` are turned into local paths once, at the command
  boundary, so every local guard, lock, atomic rename and marker applies to them;
* any other URL is (scheme, host, path components): the scheme and host lower-cased
  (``gcs://`` is ``gs://``), the default port dropped (``http://h:80/x`` is ``http://h/x``),
  empty and ``.`` components dropped and ``..`` applied (``s3://b//k/./x/`` is ``s3://b/k/x``).

:func:`store_root` widens an input to the Zarr hierarchy that holds it (``scroll.zarr`` for the
input ``scroll.zarr/labels/surface``), so an output can be refused anywhere in that store, its
metadata documents included.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from volseg.errors import VolsegError

FILE_SCHEME = "file://"
ZARR_METADATA = ("zarr.json", ".zgroup", ".zarray", ".zattrs")
_SCHEME_ALIASES = {"gcs": "gs"}
_DEFAULT_PORTS = {"http": 80, "https": 443}


def is_file_url(value) -> bool:
    """True for a ``file://`` URL (any case)."""
    return isinstance(value, str) and value[:len(FILE_SCHEME)].lower() == FILE_SCHEME


def local_path(value):
    """``value`` with a ``file://`` URL turned into the local path it names; anything else
    (a local path, another URL, None) unchanged.

    Raises
    ------
    VolsegError
        A ``file://`` URL without a path, or one naming another host.
    """
    if not is_file_url(value):
        return value
    rest = value[len(FILE_SCHEME):]
    if rest.lower().startswith("localhost/"):
        rest = rest[len("localhost"):]
    if not rest.strip():
        raise VolsegError(value, "has no path; write file:///absolute/path or a plain local path")
    return rest


@dataclass(frozen=True)
class Identity:
    """Where a path or URL points: ``scheme`` ("" for the local file system), ``host`` (the
    bucket of ``s3://``, ``host[:port]`` of ``http://``) and the path ``parts`` from its root."""

    scheme: str
    host: str
    parts: tuple[str, ...]

    def __str__(self) -> str:
        if not self.scheme:
            return os.path.join(os.sep, *self.parts[1:]) if self.parts else os.sep
        return f"{self.scheme}://{self.host}/" + "/".join(self.parts)

    def contains(self, other: "Identity") -> bool:
        """True when ``other`` lies strictly inside ``self``."""
        return (self.scheme, self.host) == (other.scheme, other.host) and \
            len(other.parts) > len(self.parts) and other.parts[:len(self.parts)] == self.parts


def _real(text: str) -> Path:
    return Path(os.path.realpath(os.path.abspath(os.path.expanduser(text))))


def _url_identity(text: str) -> Identity:
    parsed = urlsplit(text)
    scheme = parsed.scheme.lower()
    scheme = _SCHEME_ALIASES.get(scheme, scheme)
    host = (parsed.hostname or parsed.netloc.rpartition("@")[2]).lower()
    try:
        port = parsed.port
    except ValueError:
        raise VolsegError(text, "has an invalid port; write host:PORT with a number") from None
    if port is not None and port != _DEFAULT_PORTS.get(scheme):
        host = f"{host}:{port}"
    parts: list[str] = []
    for part in parsed.path.split("/"):
        if part == "..":
            if parts:
                parts.pop()
        elif part not in ("", "."):
            parts.append(part)
    if parsed.query:
        parts.append(f"?{parsed.query}")
    return Identity(scheme, host, tuple(parts))


def identity(value: str | os.PathLike) -> Identity:
    """The :class:`Identity` of a local path, ``file://`` URL or other URL (see the module
    docstring). Local paths are resolved through symlinks."""
    text = local_path(os.fspath(value))
    if "://" in text:
        return _url_identity(text)
    return Identity("", "", _real(text).parts)


def is_zarr_node(folder: str | os.PathLike) -> bool:
    """True when ``folder`` holds Zarr metadata (a v3 ``zarr.json`` or a v2 group/array)."""
    return any(os.path.isfile(os.path.join(folder, name)) for name in ZARR_METADATA)


def enclosing_store(path: str | os.PathLike) -> Path | None:
    """The outermost folder above ``path`` (resolved through symlinks) that holds Zarr
    metadata, or None: the root of the Zarr hierarchy that ``path`` lies strictly inside
    (``scroll.zarr`` for ``scroll.zarr/labels/surface`` or ``scroll.zarr/zarr.json``)."""
    real = _real(os.fspath(path))
    return next((folder for folder in reversed(real.parents) if is_zarr_node(folder)), None)


def store_root(ident: Identity) -> Identity:
    """The widest Zarr store holding ``ident``: for a local path the root of its Zarr hierarchy
    (:func:`enclosing_store`, or the path itself); for a URL the path up to its first component
    named ``*.zarr`` (no request is made), else the URL itself."""
    if not ident.scheme:
        root = enclosing_store(str(ident))
        return Identity("", "", root.parts) if root is not None else ident
    for i, part in enumerate(ident.parts):
        if part.lower().endswith(".zarr"):
            return Identity(ident.scheme, ident.host, ident.parts[:i + 1])
    return ident


def check_apart(out: Identity, name: str, role: str, label: str, option: str, *, fix: str | None = None) -> None:
    """Refuse an output ``out`` that is, lies inside or contains the input/output ``name``, or
    (for an input) lies inside the Zarr store that holds it. ``label`` names the output in the
    message; ``fix`` replaces the default advice (choose another ``option`` path)."""
    other = identity(name)
    if out == other:
        raise VolsegError(label, f"is the {role} {name}; {fix or f'choose another {option} path'}")
    if other.contains(out):
        raise VolsegError(label, f"lies inside the {role} {name}; {fix or 'choose a path outside it'}")
    if out.contains(other):
        raise VolsegError(label, f"contains the {role} {name}; {fix or f'choose another {option} path'}")
    root = store_root(other) if role == "input" else other
    if root.contains(out) or root == out:
        raise VolsegError(label, f"lies inside the Zarr store {root} that holds the input {name}; "
                          f"{fix or 'choose a path outside it'}")
