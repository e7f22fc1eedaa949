"""Rich progress bars that appear only on a terminal and never when ``quiet``."""

from __future__ import annotations

import contextlib
import sys
from typing import Iterator


def _on_terminal() -> bool:
    return sys.stderr.isatty()


class _NullBar:
    def advance(self, n: int = 1) -> None:
        pass

    def update(self, **fields) -> None:
        pass


class _RichBar:
    def __init__(self, progress, task):
        self._progress = progress
        self._task = task

    def advance(self, n: int = 1) -> None:
        self._progress.advance(self._task, n)

    def update(self, **fields) -> None:
        self._progress.update(self._task, **fields)


@contextlib.contextmanager
def progress_bar(description: str, total: int | None, *, quiet: bool = False) -> Iterator:
    """Yield an object with ``advance(n)`` and ``update(**fields)``.

    A rich bar on stderr when it is a terminal and ``quiet`` is false; otherwise a no-op.
    ``update(status="...")`` sets the text shown after the bar.
    """
    if quiet or not _on_terminal():
        yield _NullBar()
        return
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn,
                               TextColumn, TimeElapsedColumn, TimeRemainingColumn)

    columns = [SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(),
               MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
               TextColumn("{task.fields[status]}")]
    with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
        task = progress.add_task(description, total=total, status="")
        yield _RichBar(progress, task)
