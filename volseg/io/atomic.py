"""Write directories atomically: build under a temporary sibling name, then rename.

Nothing is ever half-written under a final name: a writer fills ``<name>.tmp-<pid>`` next to
the output and, only when everything succeeded, renames it onto ``<name>``. On any error the
temporary directory is removed and an existing output is left exactly as it was.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Iterator

from volseg.errors import VolsegError


def is_empty_dir(path: str | os.PathLike) -> bool:
    """True when ``path`` is an existing directory with no entries."""
    path = Path(path)
    if not path.is_dir() or path.is_symlink():
        return False
    with os.scandir(path) as entries:
        return next(entries, None) is None


def check_output(path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Validate an output name: it must not exist unless ``overwrite`` (an empty folder is free).

    Raises
    ------
    VolsegError
        ``path`` exists and ``overwrite`` is false, or ``path`` names an existing file where a
        folder would go while ``overwrite`` is false.
    """
    path = Path(path)
    if (path.exists() or path.is_symlink()) and not overwrite and not is_empty_dir(path):
        raise VolsegError(path, "exists; pass --overwrite to replace it")
    return path


def temp_sibling(path: str | os.PathLike, tag: str = "tmp") -> Path:
    """The temporary sibling name ``<name>.<tag>-<pid>`` used while ``path`` is being built."""
    path = Path(path)
    return path.with_name(f"{path.name}.{tag}-{os.getpid()}")


def remove_path(path: str | os.PathLike) -> None:
    """Remove a file, link or folder tree if it exists (errors ignored)."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Build a directory under a temporary sibling name and rename it onto ``path`` on success.

    Parameters
    ----------
    path : str or os.PathLike
        The final directory. Its parent folders are created when missing.
    overwrite : bool
        Replace an existing ``path``. Without it an existing (non-empty) ``path`` is an error.

    Yields
    ------
    pathlib.Path
        An existing, empty temporary directory next to ``path`` (``<name>.tmp-<pid>``) to fill.
        On success it replaces ``path`` (the old one is removed only after the new one is in
        place); on any exception it is removed and ``path`` is untouched.

    Raises
    ------
    VolsegError
        ``path`` exists and ``overwrite`` is false.
    """
    path = check_output(path, overwrite=overwrite)
    tmp = temp_sibling(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_path(tmp)
        tmp.mkdir()
    except OSError as exc:
        raise VolsegError(path, f"cannot be written ({exc.strerror or exc}); choose a writable location") from None
    try:
        yield tmp
    except BaseException:
        remove_path(tmp)
        raise
    if is_empty_dir(path):
        path.rmdir()
    try:
        replace_dir(tmp, path)
    except BaseException:
        remove_path(tmp)
        raise


def replace_dir(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Rename the finished directory ``src`` onto ``dst``.

    An existing ``dst`` is moved aside first and removed only once ``src`` is in place; if the
    rename fails, it is put back, so ``dst`` is never left half-replaced.
    """
    src, dst = Path(src), Path(dst)
    old = None
    if dst.exists() or dst.is_symlink():
        old = temp_sibling(dst, "old")
        remove_path(old)
        os.replace(dst, old)
    try:
        os.replace(src, dst)
    except BaseException:
        if old is not None:
            os.replace(old, dst)
        raise
    if old is not None:
        remove_path(old)
