"""Errors that the command line turns into exit codes.

A :class:`VolsegError` is bad input or bad usage: the CLI prints ``error: <path>: <message>``
on one line and exits with status 2. Anything else escaping a command is an internal failure
(exit 1).
"""

from __future__ import annotations

import os


class VolsegError(Exception):
    """Bad input or bad usage, reported as ``error: <path>: <message>`` with exit code 2.

    Parameters
    ----------
    path : str or os.PathLike or None
        The file, folder or option the problem is about (``"--patch"`` for an option).
    message : str
        What is wrong and, where possible, how to fix it. One line.
    """

    def __init__(self, path: str | os.PathLike | None, message: str):
        self.path = None if path is None else os.fspath(path)
        self.message = " ".join(str(message).split())
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message

    def __reduce__(self):
        # Keep (path, message) across process boundaries (dask processes / distributed workers).
        return (type(self), (self.path, self.message))
