"""One writer per output: an exclusive lock file beside it (``<output>.lock``, fcntl).

The lock file holds the writer's pid. The kernel drops the lock when its process dies, so a
lock left by a killed run is simply taken over by the next one. The file is removed on release;
a writer that locked a file which was removed meanwhile tries again, so two processes never
hold "the" lock on two different files.

Block-wise outputs that several processes fill together (the ``--part`` jobs of one run, or two
identical runs) use a lock on the output folder itself instead: each writer shares it
(:func:`share_folder`) while it writes, and the one that moves the finished folder into place
waits until it is alone (:func:`folder_alone`), so no writer loses its folder mid-run.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import sys
from pathlib import Path
from typing import Iterator

from volseg.errors import VolsegError


def lock_path(output: str | os.PathLike) -> Path:
    """``<output>.lock``, next to the output."""
    output = Path(os.path.abspath(os.fspath(output)))
    return output.with_name(output.name + ".lock")


@contextlib.contextmanager
def output_lock(output: str | os.PathLike, *, wait: bool = False) -> Iterator[Path]:
    """Hold the exclusive writer lock of ``output`` for the ``with`` block.

    Parameters
    ----------
    output : path
        The output folder (it need not exist yet; its parent must).
    wait : bool
        Block until the lock is free (short critical sections) instead of refusing.

    Raises
    ------
    VolsegError
        ``OUT: another volseg (pid N) is writing it`` when another live process holds the lock.
    """
    path = lock_path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            from volseg.io.outputs import os_error

            raise os_error(exc, path) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            pid = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise VolsegError(output, f"another volseg (pid {pid}) is writing it; wait for it to finish "
                              "or stop it, then run the command again") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the file was removed by its previous holder after we opened it: retry
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)


_SHARED: dict[str, int] = {}


def share_folder(folder: str | os.PathLike) -> bool:
    """Hold a shared lock on the folder ``folder`` itself until :func:`release_folder`.

    Blocks while another process holds it alone (moving it). Returns False when ``folder`` is
    gone or was replaced by another folder before the lock was taken: the caller looks again.
    A folder this process already shares is released first (one lock per folder and process).
    """
    key = os.path.abspath(os.fspath(folder))
    release_folder(key)
    try:
        fd = os.open(key, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return False
    fcntl.flock(fd, fcntl.LOCK_SH)
    try:
        now, held = os.stat(key), os.fstat(fd)
        same = (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)
    except FileNotFoundError:
        same = False
    if not same:
        os.close(fd)
        return False
    _SHARED[key] = fd
    return True


def release_folder(folder: str | os.PathLike) -> None:
    """Drop this process's shared lock on ``folder`` (if it holds one)."""
    fd = _SHARED.pop(os.path.abspath(os.fspath(folder)), None)
    if fd is not None:
        os.close(fd)


@contextlib.contextmanager
def folder_alone(*folders: str | os.PathLike) -> Iterator[None]:
    """Hold the existing ``folders`` exclusively for the ``with`` block: waits until no other
    process shares them (:func:`share_folder`). Release this process's own shares first."""
    fds = []
    try:
        for folder in folders:
            release_folder(folder)
            try:
                fd = os.open(os.fspath(folder), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except (FileNotFoundError, NotADirectoryError):
                continue
            fds.append(fd)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        for fd in fds:
            os.close(fd)


@contextlib.contextmanager
def claimed_output(output: str | os.PathLike, *, inputs=(), kind: str = "volume", overwrite: bool = False,
                   quiet: bool = False) -> Iterator[Path]:
    """Take ``output`` for one writer: guard it, hold its lock for the ``with`` block, and check it
    again under the lock (another run may have finished it meanwhile: then ``--overwrite`` is
    needed); stale temporaries of killed runs are removed. Yields the local output path
    (``file://`` URLs become paths)."""
    from volseg.io.atomic import check_output
    from volseg.io.outputs import guard_output

    output = guard_output(output, inputs=inputs, kind=kind, overwrite=overwrite)
    with output_lock(output):  # one writer; a second run started together is refused, not raced
        guard_output(output, inputs=inputs, kind=kind, overwrite=overwrite)
        output = check_output(output, overwrite=overwrite)
        remove_stale_temps(output, quiet=quiet)
        yield Path(output)


def pid_alive(pid: int) -> bool:
    """True when a process with ``pid`` exists on this machine."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(output: str | os.PathLike, *, quiet: bool = False) -> list[Path]:
    """Remove ``<output>.tmp-<pid>`` (and ``.old-``/``.new-``) siblings left by dead processes.

    Says so on stderr (one line) unless ``quiet``. Returns the removed paths.
    """
    from volseg.io.atomic import remove_path

    path = Path(os.path.abspath(os.fspath(output)))
    if not path.parent.is_dir():
        return []
    pattern = re.compile(re.escape(path.name) + r"\.(tmp|old|new)-(\d+)$")
    removed = []
    for e in os.scandir(path.parent):
        m = pattern.match(e.name)
        if m and not pid_alive(int(m.group(2))):
            remove_path(e.path)
            removed.append(Path(e.path))
    if removed and not quiet:
        names = ", ".join(p.name for p in removed)
        print(f"removed {len(removed)} stale temporary folder(s) of killed runs: {names}", file=sys.stderr)
    return removed
