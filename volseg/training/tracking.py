"""Run tracking beyond ``metrics.jsonl``: ``progress.png`` and optional TensorBoard events.

One :class:`Tracker` per run holds every writer call of the trainer, so that a multi-process
run can create it on the writing process only (``enabled=False`` elsewhere). At each
validation the progress plot is redrawn from ``metrics.jsonl`` (the run's own record, which
``--resume`` truncates to the resumed step, so the plot always matches it). With
``tensorboard=True`` every record's numbers go to event files under ``RUN/tensorboard``
(``train/loss``, ``train/lr``, ``val/<metric>``, ``time/seconds``); a resumed run purges
the events past its step first.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

from volseg.errors import VolsegError
from volseg.training.progress_plot import PLOT_FILE, draw_progress, plot_available, read_records

TENSORBOARD_DIR = "tensorboard"


def require_tensorboard() -> None:
    """Refuse ``--tensorboard`` where the tensorboard package is not installed."""
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        raise VolsegError("--tensorboard", "install tensorboard (pip install tensorboard, or "
                                           "pip install 'volseg[tensorboard]')") from None


def _tag(key: str) -> str:
    if key.startswith("val_"):
        return f"val/{key[4:]}"
    if key in ("seconds", "cpu_seconds"):
        return f"time/{key}"
    return f"train/{key}"


class Tracker:
    """Progress plot and TensorBoard writer of one run.

    Parameters
    ----------
    run_dir : path
        The run directory (holds ``metrics.jsonl``).
    metric : str
        The validation key drawn in the plot (``val_dice``, ``val_psnr``).
    tensorboard : bool
        Also write TensorBoard event files under ``run_dir/tensorboard``.
    start_step : int
        The step the run starts (or resumes) at; TensorBoard events at later steps are purged.
    enabled : bool
        False: every call does nothing (the non-writing ranks of a distributed run).
    title : str, optional
        The plot's title (default: the name of ``run_dir``).
    """

    def __init__(self, run_dir: str | Path, *, metric: str, tensorboard: bool = False,
                 start_step: int = 0, enabled: bool = True, title: str | None = None):
        self.run_dir = Path(run_dir)
        self.title = title if title is not None else self.run_dir.name
        self.metric = metric
        self.enabled = enabled
        self.plot = enabled and plot_available()
        self.writer = None
        if not enabled:
            return
        if not self.plot:
            print("notice: matplotlib is not installed, so no progress.png is drawn "
                  "(pip install 'volseg[plot]')", file=sys.stderr)
        if tensorboard:
            require_tensorboard()
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.run_dir / TENSORBOARD_DIR),
                                        purge_step=start_step if start_step else None)

    def log(self, record: dict[str, Any], *, validated: bool) -> None:
        """After ``record`` was appended to ``metrics.jsonl``: events, and the plot at validation."""
        if not self.enabled:
            return
        if self.writer is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.writer.add_scalar(_tag(key), value, record["step"])
            self.writer.flush()
        if validated and self.plot:
            self.redraw()

    def redraw(self) -> Path | None:
        """Draw ``progress.png`` from the run's ``metrics.jsonl`` (None without matplotlib)."""
        if not (self.enabled and self.plot):
            return None
        records = read_records(self.run_dir / "metrics.jsonl")
        return draw_progress(records, self.run_dir / PLOT_FILE, metric=self.metric,
                             title=self.title)

    def relocate(self, move: Callable[[], Path]) -> None:
        """Follow the run to another folder: close the event file, call ``move()`` (which moves
        the run's files and returns the new folder), then write there (a new event file beside
        the moved ones; TensorBoard reads them together)."""
        had_writer = self.writer is not None
        self.close()
        self.run_dir = Path(move())
        if had_writer:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.run_dir / TENSORBOARD_DIR))

    def close(self) -> None:
        """Flush and close the event files."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
