"""Resumable block-wise outputs: a settings fingerprint and per-block completion markers.

An output that tasks fill block by block (predict, stitch) is created once, with the settings
that produce it recorded in its attributes (``volseg.settings`` and ``volseg.fingerprint``).
Each task writes its block and only then an empty marker file (:mod:`volseg.io.markers`),
named after the block, in the ``volseg_markers`` sub-group of the output. A rerun of the same command finds the markers and
skips those blocks; a killed task leaves no marker, so its block is redone. A rerun with other
settings, or made from another version of an input (the settings hold each input's
size/modification stamp), is refused unless ``--overwrite``. ``--overwrite`` computes everything
again in the work folder ``<output>.new`` (shared by the parts of a job array) and replaces the
existing output only once the new one is complete (:func:`finish_output`), so a failing run
never destroys a good output. Completion is recorded as ``volseg.complete`` in the output's
attributes (:func:`volseg.io.completion.check_complete`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from volseg.errors import VolsegError
from volseg.io.atomic import is_empty_dir, remove_path, temp_sibling

from volseg.io.markers import MARKERS, Markers, fingerprint
from volseg.io.markers import differences as _differences


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (identifies a model independently of where it lies)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_settings(path: Path) -> dict | None:
    try:
        attrs = json.loads((path / "zarr.json").read_text()).get("attributes", {})
    except (OSError, ValueError):
        return None
    info = attrs.get("volseg") or {}
    if "fingerprint" not in info:
        return None
    return info


def open_output(path: str | os.PathLike, *, settings: dict, create: Callable[[Path, dict], None],
                overwrite: bool = False, total: int = 0, unit: str = "chunks",
                prefix: str = "c") -> tuple[Path, Markers, bool]:
    """Create a resumable output, or reopen an existing one made with the same ``settings``.

    Parameters
    ----------
    path : path
        The output Zarr group (checked beforehand with :func:`volseg.io.outputs.guard_output`).
    settings : dict
        Plain data that determines the output's content (inputs' identities included); its
        fingerprint is stored.
    create : callable
        ``create(tmp_path, volseg_attrs)`` builds the empty output (metadata, arrays) at
        ``tmp_path``; it is renamed into place when complete, so a half-created output never
        appears. The marker sub-group is added here.
    overwrite : bool
        Compute everything again. An existing ``path`` is kept untouched: the new output is
        built in the work folder ``<path>.new`` (shared by the ``--part`` jobs of one
        ``--overwrite`` run, resumed when rerun with the same settings) and replaces ``path``
        only once every block is written (:func:`finish_output`).
    total, unit, prefix
        Blocks of the whole output, their name in messages and their marker prefix; recorded
        as ``complete: false``, ``blocks_total``, ``blocks_unit``, ``marker_prefix``.

    Returns
    -------
    (work_path, markers, resumed)
        Where to write (``path`` or ``<path>.new``), its markers, and whether it existed.

    Raises
    ------
    VolsegError
        ``path`` exists with other settings, from another version of an input, or is not a
        resumable volseg output, and ``overwrite`` is false.

    Notes
    -----
    The work folder stays shared-locked by this process (:func:`volseg.io.locks.share_folder`)
    until :func:`finish_output` or a failure in :func:`removed_if_empty`: a concurrent run that
    completes it first waits for this one before moving it into place, so an identical second
    ``--overwrite`` run started together resumes the same folder instead of losing it.
    """
    from volseg.io.locks import output_lock, share_folder
    from volseg.io.remote import is_url

    if is_url(path):  # object stores have no rename: see volseg.io.remote_output
        from volseg.io.remote_output import open_remote_output

        return open_remote_output(path, settings=settings, create=create, overwrite=overwrite,
                                  total=total, unit=unit, prefix=prefix)
    for _attempt in range(8):
        # the lock a finishing --overwrite run holds while it moves <path>.new onto path: this
        # run never looks at a half-moved output
        with output_lock(work_path(path), wait=True):
            work, markers, resumed = _open_local(Path(path), settings=settings, create=create,
                                                 overwrite=overwrite, total=total, unit=unit, prefix=prefix)
            if share_folder(work):
                return work, markers, resumed
        # the folder was removed or replaced meanwhile: look again
    raise VolsegError(path, "kept being replaced by other volseg runs writing it; wait for them to finish, "
                      "then run the command again")


def _open_local(path: Path, *, settings, create, overwrite, total, unit, prefix) -> tuple[Path, Markers, bool]:
    """:func:`open_output` of a local folder, before the work folder is locked."""
    attrs = {"settings": settings, "fingerprint": fingerprint(settings), "complete": False,
             "blocks_total": int(total), "blocks_unit": unit, "marker_prefix": prefix}
    target = path
    if path.exists() and not is_empty_dir(path):
        info = _read_settings(path)
        if not overwrite:
            if info is not None and info.get("fingerprint") == attrs["fingerprint"]:
                return path, Markers(path), True
            if info is None:
                raise VolsegError(path, "exists and is not a resumable volseg output; "
                                  "pass --overwrite to replace it or choose another -o")
            raise VolsegError(path, _refusal(info.get("settings") or {}, settings))
        target = work_path(path)
        info = _read_settings(target) if target.exists() else None
        if info is not None and info.get("fingerprint") == attrs["fingerprint"]:
            return target, Markers(target), True
        remove_path(target)
    if is_empty_dir(target):
        target.rmdir()
    target.parent.mkdir(parents=True, exist_ok=True)
    for _attempt in range(2):
        tmp = temp_sibling(target)
        remove_path(tmp)
        try:
            create(tmp, attrs)
            Markers(tmp).create()
            os.rename(tmp, target)
            return target, Markers(target), False
        except OSError:
            remove_path(tmp)
            if not target.exists():
                raise
            info = _read_settings(target)  # another part created it first: resume it if it matches
            if info is not None and info.get("fingerprint") == attrs["fingerprint"]:
                return target, Markers(target), True
            raise VolsegError(path, _refusal(info.get("settings") or {} if info else {}, settings)) from None
        except BaseException:
            remove_path(tmp)
            raise
    raise VolsegError(path, "could not be created; check the folder is writable")


def work_path(path: str | os.PathLike) -> Path:
    """``<path>.new``: where an ``--overwrite`` run builds the output that replaces ``path``."""
    path = Path(path)
    return path.with_name(path.name + ".new")


def _refusal(old: dict, new: dict) -> str:
    keys = sorted(set(old) | set(new))
    diff = [k for k in keys if json.dumps(old.get(k), default=str) != json.dumps(new.get(k), default=str)]
    if diff and all(k.endswith("_stamp") for k in diff):
        return ("was computed from an earlier version of its input (the input changed since: "
                f"{', '.join(diff)}); pass --overwrite to compute it again")
    return (f"exists with other settings: {_differences(old, new)}; "
            "pass --overwrite to replace it or choose another -o")


def finish_output(path: str | os.PathLike, work: str | os.PathLike, *, total: int, prefix: str = "c") -> bool:
    """Record completion once every block has its marker; an ``--overwrite`` work folder then
    replaces ``path``. Safe when several parts finish at once (a short lock). True when complete.
    """
    from volseg.io.atomic import replace_dir
    from volseg.io.locks import folder_alone, output_lock, release_folder
    from volseg.io.completion import attrs, count_markers, set_complete
    from volseg.io.remote import is_url

    if is_url(path):  # written in place (no work folder): see volseg.io.remote_output
        from volseg.io.remote_output import finish_remote_output

        return finish_remote_output(os.fspath(path), total=total, prefix=prefix)
    path, work = Path(path), Path(work)
    release_folder(work)  # this run writes no more: before the lock, which a finisher may hold while waiting
    if work == path and attrs(path).get("complete"):
        return True  # a rerun of a finished output: nothing to record
    with output_lock(work, wait=True):
        if not work.exists():
            return True  # another part completed and moved it into place
        if count_markers(work, prefix) < total:
            return False
        set_complete(work)
        if work != path:
            with folder_alone(work, path):  # runs still writing into either finish first
                replace_dir(work, path)
    return True


@contextlib.contextmanager
def removed_if_empty(work: str | os.PathLike, keep: bool) -> Iterator[None]:
    """Remove an output this run created when the run fails before any block was written
    (a scheduler that cannot be reached, a bad option found late). ``keep``: an output that
    existed, or one shared with concurrent ``--part`` jobs, is never removed."""
    from volseg.io.remote import is_url

    from volseg.io.locks import release_folder

    if is_url(work):  # a remote output is resumed, never removed
        keep = True
    try:
        yield
    except BaseException:
        if not is_url(work):
            release_folder(work)
        if keep:
            raise
        root = Path(work) / MARKERS
        if not keep and not any(e.name != "zarr.json" for e in _entries(root)):
            remove_path(work)
        raise


def _entries(folder: Path) -> list:
    try:
        return list(os.scandir(folder))
    except OSError:
        return []
