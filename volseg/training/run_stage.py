"""Where a training run writes, so that a failed run never loses a good one.

A new run and ``--overwrite`` build the run in a work folder beside the run directory,
``RUN.new``; the run directory receives it only once the new run has saved its first good
checkpoint (``model.pt`` or ``best.pt``, weights checked finite). Until then ``RUN`` is exactly
as it was (absent, or the previous run byte for byte), and a run that fails before that point
(diverged at its first steps, refused data, a full disk, Ctrl-C) removes ``RUN.new`` and leaves
nothing. After the hand-over the run goes on writing in ``RUN`` itself.

``--resume`` writes in ``RUN`` directly, but its ``config.yml`` (the resumed settings, a new
``--lr`` say) is written only with the first good checkpoint of the resumed run: a resume that
fails before one leaves ``config.yml`` as the checkpoint was trained with.

The hand-over replaces the run files one by one with ``os.replace`` (each file whole, never
half-written) and removes the previous run's files that the new run has not written yet; other
files in ``RUN`` (an exported model, notes) are left alone.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from volseg.errors import VolsegError
from volseg.training.run_dir import BEST_FILE, CONFIG_FILE, MODEL_FILE, RUN_FILES, write_config

WORK_SUFFIX = ".new"
TENSORBOARD_DIR = "tensorboard"


def work_path(run_dir: str | os.PathLike) -> Path:
    """The work folder of a new or ``--overwrite`` run: ``RUN.new`` beside ``RUN``."""
    run_dir = Path(run_dir)
    return run_dir.with_name(run_dir.name + WORK_SUFFIX)


class RunStage:
    """The folder a run writes into now, and its hand-over to the run directory.

    Parameters
    ----------
    run_dir : path
        The run directory (``-o``).
    resume : bool
        ``--resume``: write in ``run_dir`` itself (only ``config.yml`` waits for a checkpoint).
    """

    def __init__(self, run_dir: str | os.PathLike, *, resume: bool):
        self.final = Path(run_dir)
        self.work = self.final if resume else work_path(self.final)
        self.promoted = bool(resume)
        self.config_written = False
        self.created = False  # the work folder is this run's own (removed on failure)

    @property
    def dir(self) -> Path:
        """Where the run writes now: ``RUN.new`` before the hand-over, ``RUN`` after it."""
        return self.final if self.promoted else self.work

    def start(self) -> None:
        """Create an empty work folder. A leftover of a killed start (only run files in it) is
        removed first: the caller holds the run's lock, so no other trainer uses it.

        Raises
        ------
        VolsegError
            ``RUN.new`` exists and is not a run volseg made (a file, or other content).
        """
        if self.promoted:
            return
        if os.path.lexists(self.work):
            from volseg.io.outputs import made_by_volseg

            if not self.work.is_dir() or self.work.is_symlink() or not made_by_volseg(self.work, "run"):
                raise VolsegError(self.work, f"is in the way: a new run of {self.final} is built "
                                  "there first, and volseg did not make it; move it away or choose "
                                  "another -o")
            _remove(self.work)
        self.work.mkdir(parents=True)
        self.created = True

    def checkpoint_saved(self, cfg: dict[str, Any]) -> bool:
        """After a good checkpoint: write ``config.yml`` the first time, then hand the work
        folder over to the run directory. Returns True when this call moved the run."""
        if not self.config_written:
            write_config(self.dir, cfg)
            self.config_written = True
        if self.promoted:
            return False
        self._promote()
        return True

    def _promote(self) -> None:
        self.final.mkdir(parents=True, exist_ok=True)
        # The checkpoints first, so that RUN never holds a newer config without a checkpoint.
        names = sorted(RUN_FILES + (TENSORBOARD_DIR,), key=lambda n: n == CONFIG_FILE)
        for name in names:
            new, old = self.work / name, self.final / name
            if os.path.lexists(new):
                if old.is_dir() and not old.is_symlink():
                    shutil.rmtree(old)
                os.replace(new, old)
            elif os.path.lexists(old):
                _remove(old)
        shutil.rmtree(self.work, ignore_errors=True)
        self.promoted = True

    def abandon(self) -> None:
        """A run that failed before its first good checkpoint: remove the work folder it made."""
        if self.created and not self.promoted and os.path.lexists(self.work):
            _remove(self.work)

    def state(self) -> str:
        """What a failure leaves, for the error message."""
        if self.promoted:
            return "the last good checkpoint is kept"
        if any((self.final / n).is_file() for n in (MODEL_FILE, BEST_FILE)):
            return f"no checkpoint was saved, and the previous run in {self.final} is unchanged"
        return "no checkpoint was saved, so nothing is left"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
