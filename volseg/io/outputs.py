"""Safety of outputs: which paths a command may write or replace (stdlib only).

Every command with an output calls :func:`guard_output` before it creates anything. It refuses
(:class:`~volseg.errors.VolsegError`, exit 2):

* an empty output name (an unset shell variable), the working directory or any folder above it;
* an output that is an input (or the run directory), lies inside one (``s.zarr/labels/surface``
  is inside ``s.zarr``) or contains one, or lies inside the Zarr store holding an input
  (``s.zarr/zarr.json`` for the input ``s.zarr/labels/surface``); every form is compared by one
  identity (:mod:`volseg.io.identity`: resolved paths, ``file://`` URLs as their local path,
  normalised URLs);
* an output inside any Zarr store (a file or folder volseg is not making as that store);
* an output whose parent is a file or a read-only folder;
* an existing output that volseg did not make as that kind of output (a regular file, a folder
  with other content, a Zarr group without volseg's attributes): ``--overwrite`` only ever
  replaces volseg's own outputs.

``--json``/``--preview`` files (kinds ``"json"``/``"png"``) may replace an existing JSON/PNG
file; ``-`` is stdout, device nodes are written as such, symlinks through to their target
(:func:`write_file`).

Completion of block-wise outputs: :mod:`volseg.io.completion`; locks and stale temporary
folders: :mod:`volseg.io.locks`.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import sys
import zipfile
from collections.abc import Iterable
from pathlib import Path

from volseg.errors import VolsegError
from volseg.io.completion import attrs as _attrs
from volseg.io.completion import check_complete
from volseg.io.identity import Identity, check_apart, enclosing_store, identity, local_path, store_root

KINDS = ("volume", "patches", "run", "demo", "json", "png", "file")
RUN_FILES = ("model.pt", "best.pt", "config.yml", "metrics.jsonl", "progress.png", "tensorboard")
DEMO_FILES = ("scroll.zarr", "patches.zarr", "run", "prediction.zarr", "postprocessed.zarr", "preview.png",
              "scores.json")
_PNG = b"\x89PNG\r\n\x1a\n"
_MAX_JSON = 64 * 2**20


def _is_url(text: str) -> bool:
    return "://" in text


def input_paths(items) -> Iterable:
    """The paths in ``items``: nested lists/tuples flattened, objects with ``paths``/``pairs``/
    ``val`` (training sources) opened up, None and anything else skipped."""
    for item in items:
        if isinstance(item, (str, os.PathLike)):
            yield item
        elif isinstance(item, (list, tuple)):
            yield from input_paths(item)
        elif hasattr(item, "paths"):
            pairs = [getattr(p, k, None) for p in getattr(item, "pairs", []) for k in ("image", "label")]
            yield from input_paths([item.paths, pairs, getattr(item, "val", [])])


def _real(text: str) -> Path:
    return Path(os.path.realpath(os.path.abspath(os.path.expanduser(text))))


def is_volseg_run(path: str | os.PathLike) -> bool:
    """True when ``path/model.pt`` is a volseg checkpoint (its pickle names the run format)."""
    try:
        with zipfile.ZipFile(Path(path) / "model.pt") as z:
            name = next((n for n in z.namelist() if n.endswith("data.pkl")), None)
            return name is not None and b"volseg-run" in z.read(name)
    except (OSError, zipfile.BadZipFile, KeyError):
        return False


def made_by_volseg(path: str | os.PathLike, kind: str) -> bool:
    """True when the existing folder ``path`` is an output volseg made as ``kind``.

    volume: a Zarr group whose attributes hold ``volseg`` (prepare, synth, predict --stitch,
    stitch); patches: ``volseg.kind`` is ``patches`` or ``predictions``; run: ``model.pt`` is a
    volseg checkpoint, or the folder holds only run files (a run stopped before its first
    checkpoint); demo: only the demo's own entries.
    """
    path = Path(path)
    if kind in ("volume", "patches"):
        info = _attrs(path)
        is_patches = info.get("kind") in ("patches", "predictions")
        return bool(info) and (is_patches if kind == "patches" else not is_patches)
    names = [e.name for e in os.scandir(path)]
    if kind == "run":
        return is_volseg_run(path) or all(n.startswith(RUN_FILES) for n in names)
    if kind == "demo":
        return all(n.startswith(DEMO_FILES) for n in names)
    return False


def _check_file(path: Path, kind: str, label: str) -> None:
    """An existing ``--json``/``--preview`` target: a device, or a file of that format."""
    mode = path.stat().st_mode
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode):
        return
    if stat.S_ISDIR(mode):
        raise VolsegError(label, "is a folder; give a file path")
    if not stat.S_ISREG(mode):
        raise VolsegError(label, f"exists and is not a {kind.upper()} file; volseg will not overwrite it, "
                          "choose another path")
    size = path.stat().st_size
    if size == 0:
        return
    with open(path, "rb") as f:
        head = f.read(min(size, _MAX_JSON + 1) if kind == "json" else len(_PNG))
    if kind == "png" and head == _PNG:
        return
    if kind == "json" and size <= _MAX_JSON:
        try:
            json.loads(head)
            return
        except ValueError:
            pass
    raise VolsegError(label, f"exists and is not a {kind.upper()} file; volseg will not overwrite it, "
                      "choose another path")


def guard_output(output: str | os.PathLike | None, *, inputs: Iterable = (), kind: str,
                 overwrite: bool = False, option: str = "-o", outputs: Iterable = ()) -> Path | str | None:
    """Check that ``output`` may be written (and, with ``overwrite``, replaced) before creating it.

    Parameters
    ----------
    output : path, "-" or None
        The output; None (an unset optional ``--json``) and ``-`` (stdout, json only) pass.
    inputs : iterable of paths
        Every input of the command, the run directory included (None entries are skipped).
        Paths and URLs are compared by :func:`volseg.io.identity.identity` (a ``file://`` URL
        is its local path; ``s3://b//k/`` is ``s3://b/k``), and an input's whole Zarr store
        (:func:`volseg.io.identity.store_root`) is off limits too.
    kind : {"volume", "patches", "run", "demo", "json", "png", "file"}
        What the command writes: an OME-Zarr volume, a patch store, a run directory, the demo
        folder, a JSON or a PNG file, or another single file (an exported model) whose caller
        checks an existing one's mark.
    overwrite : bool
        ``--overwrite`` was given.
    option : str
        The option naming the output in messages (``-o``, ``--json``, ``--preview``).
    outputs : iterable of paths
        The command's other outputs (``--json`` must not be ``-o``); compared like inputs.

    Returns
    -------
    pathlib.Path, str, "-" or None
        ``output`` as a local path (not resolved; a ``file://`` URL as the path it names), a
        URL as given, or the pass-through value. Callers write to what it returns.

    Raises
    ------
    VolsegError
        See the module docstring; the message names the option, the path and the fix.
    """
    if kind not in KINDS:
        raise VolsegError(option, f"unknown output kind {kind!r}; one of {', '.join(KINDS)}")
    if output is None and kind in ("json", "png"):
        return None
    text = "" if output is None else os.fspath(output)
    label = f"{option} {text}".strip() if text.strip() else option
    if not text.strip():
        raise VolsegError(option, "is empty; give a path for the output (an unset shell variable?)")
    if text == "-" and kind == "json":
        return "-"
    text = local_path(text)
    out = identity(text)
    if not out.scheme:
        real = Path(str(out))
        cwd = _real(os.getcwd())
        if real == cwd or real in cwd.parents:
            what = "is the working directory" if real == cwd else "contains the working directory"
            raise VolsegError(label, f"{what}; choose a new name such as out.zarr")
    for inp, role in [(i, "input") for i in input_paths(inputs)] + [(o, "output") for o in input_paths(outputs)]:
        if os.fspath(inp).strip():
            check_apart(out, os.fspath(inp), role, label, option)
    if out.scheme:
        return text
    store = enclosing_store(real)
    if store is not None:
        raise VolsegError(label, f"lies inside the Zarr store {store}; volseg writes no file or folder into "
                          "a store it is not making: choose a path outside it")
    parent = real.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise VolsegError(label, f"cannot be created: {parent} is a file, not a folder")
    exists = os.path.lexists(real)
    if not exists and not os.access(parent, os.W_OK | os.X_OK):
        raise VolsegError(label, f"cannot be written: the folder {parent} is read-only")
    if kind in ("json", "png"):
        if exists:
            _check_file(real, kind, label)
        return Path(text)
    if kind == "file":  # the caller checks an existing file's mark (volseg export)
        if exists and not real.is_file():
            raise VolsegError(label, "exists and is not a regular file (a folder or a device); give a file "
                              "name such as model.onnx")
        return Path(text)
    if not exists:
        return Path(text)
    if not real.is_dir():
        raise VolsegError(label, f"is an existing file, not a {_NAMES[kind]}; volseg will not replace it, "
                          "choose another output")
    if any(os.scandir(real)) and not made_by_volseg(real, kind):
        raise VolsegError(label, f"exists and is not a {_NAMES[kind]} made by volseg; volseg never writes "
                          "into or deletes folders it did not make (--overwrite included): choose another output")
    if overwrite and not os.access(real, os.W_OK | os.X_OK):
        raise VolsegError(label, "cannot be replaced: it is read-only")
    return Path(text)


_NAMES = {"volume": "volume (OME-Zarr)", "patches": "patch store", "run": "run directory",
          "demo": "demo folder"}


# ------------------------------------------------------------------------------ writing files
def write_file(dest: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``dest`` safely.

    ``-``: stdout. A device node or FIFO (``/dev/null``): written as such. A symlink: its
    target is written (the link stays). A regular file: written to a temporary sibling and
    renamed over it, so it is never half-written.
    """
    text = local_path(os.fspath(dest))
    if text == "-":
        sys.stdout.write(data.decode())
        sys.stdout.flush()
        return
    path = Path(os.path.realpath(text))
    try:
        if path.exists() and not stat.S_ISREG(path.stat().st_mode):
            with open(path, "wb") as f:
                f.write(data)
            return
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        finally:
            if os.path.lexists(tmp):
                os.unlink(tmp)
    except OSError as exc:
        raise os_error(exc, text, need=len(data)) from None


# ------------------------------------------------------------------------------ errors
_USER_ERRNOS = {errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.ENOTDIR,
                errno.EISDIR, errno.EEXIST, errno.ENAMETOOLONG, errno.EFBIG}


def os_error(exc: OSError, path: str | os.PathLike | None = None, *, need: int | None = None) -> VolsegError:
    """A one-line :class:`VolsegError` for a failed write: the path, the cause, bytes needed/free.

    Without ``path`` or the error's file name (a full disk found by ``write()``, deep inside a
    Zarr store), the file is the innermost ``path`` of the traceback's frames (the store's write);
    the free space is that of its filesystem, and is left out when no path is known.
    """
    if path is None and not exc.filename:
        tb = exc.__traceback__
        while tb is not None:
            found = tb.tb_frame.f_locals.get("path")
            if isinstance(found, (str, os.PathLike)) and not _is_url(os.fspath(found)):
                path = found
            tb = tb.tb_next
    known = path is not None or bool(exc.filename)
    where = os.fspath(path if path is not None else (exc.filename or "output"))
    cause = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        cause = "the disk is full" if exc.errno == errno.ENOSPC else "the disk quota is exceeded"
        cause += space_note(where, need) if known else ""
        return VolsegError(where, f"cannot be written: {cause}; free some space or choose another location")
    return VolsegError(where, f"cannot be written ({cause}); choose a writable location")


def space_note(where: str | os.PathLike, need: int | None = None) -> str:
    """The note " (N bytes free, about M needed)" for a full disk, on the filesystem that holds
    ``where`` (its nearest existing folder); empty when unknown."""
    import shutil

    folder = Path(os.path.abspath(os.fspath(where)))
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return ""
    text = f" ({free:,} bytes free"
    return text + (f", about {need:,} bytes needed)" if need else ")")


def is_user_os_error(exc: BaseException) -> bool:
    """True for an OSError the user can fix (permissions, full disk, read-only, file in the way)."""
    return isinstance(exc, OSError) and exc.errno in _USER_ERRNOS


# ------------------------------------------------------------------------------ input identity
def input_stamp(path: str | os.PathLike) -> dict | None:
    """A cheap identity of an input: size and modification time of a file; for a folder the
    newest modification time of its entries and of the Zarr metadata one level down.

    None for a URL or a missing path. Stored in resume fingerprints so an output computed from
    an earlier version of the input is not silently resumed.
    """
    text = local_path(os.fspath(path))
    if _is_url(text) or not os.path.exists(text):
        return None
    st = os.stat(text)
    if not stat.S_ISDIR(st.st_mode):
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    newest, count = st.st_mtime_ns, 0
    with os.scandir(text) as entries:
        for e in entries:
            count += 1
            newest = max(newest, e.stat().st_mtime_ns)
            if e.is_dir():
                for meta in ("zarr.json", ".zarray", ".zattrs"):
                    m = os.path.join(e.path, meta)
                    if os.path.exists(m):
                        newest = max(newest, os.stat(m).st_mtime_ns)
    return {"entries": count, "mtime_ns": newest}


def guard_reader(inputs: Iterable, *, files: dict | None = None) -> None:
    """For a command that reads volumes and writes only files (evaluate, postprocess's checks).

    Refuses an unfinished input (:func:`check_complete`) and checks each file output
    ``{option: (path, kind)}`` (kind ``"json"`` or ``"png"``) with :func:`guard_output` against
    the inputs. Inputs that are arrays rather than paths are skipped.
    """
    paths = list(input_paths(inputs))
    check_complete(*paths)
    for option, (path, kind) in (files or {}).items():
        guard_output(path, inputs=paths, kind=kind, option=option)
