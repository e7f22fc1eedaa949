"""Learning-rate schedules: constant, poly (nnU-Net's default) and cosine, each after a linear warmup.

The learning rate of a step depends only on the step number, the schedule's settings and its
horizon (the planned number of steps), never on earlier state, so a resumed run continues the
schedule exactly. Steps are 0-based; ``warmup`` steps ramp linearly ``lr * (step + 1) / warmup``.
After the warmup, with ``t = step - warmup`` and ``T = horizon - warmup``:

* ``constant``: ``lr``
* ``poly``: ``min_lr + (lr - min_lr) * (1 - t / T) ** poly_exponent`` (nnU-Net: exponent 0.9)
* ``cosine``: ``min_lr + (lr - min_lr) * (1 + cos(pi * t / T)) / 2``

The horizon is ``optim.schedule_steps`` when set, else the run's total steps (``--steps``, or
``--epochs`` x batches per epoch). Fix ``optim.schedule_steps`` when a run will be resumed
with more ``--steps`` than it started with, so the decay does not restart.
"""

from __future__ import annotations

import math
from typing import Any

from volseg.errors import VolsegError

SCHEDULES = ("constant", "poly", "cosine")


def check_schedule(optim: dict[str, Any], *, where: str = "config") -> None:
    """Cross-key checks of the ``optim`` section's schedule keys (names the bad key).

    Raises
    ------
    VolsegError
        Unknown ``optim.schedule``, a non-positive ``poly_exponent``, a negative ``warmup``,
        ``min_lr`` outside ``[0, lr]``, a non-positive ``schedule_steps``.
    """
    name = optim["schedule"]
    if name not in SCHEDULES:
        raise VolsegError(where, f"'optim.schedule' must be one of {', '.join(SCHEDULES)}, "
                                 f"got {name!r}")
    if optim["poly_exponent"] <= 0:
        raise VolsegError(where, f"'optim.poly_exponent' must be > 0 (nnU-Net uses 0.9), got "
                                 f"{optim['poly_exponent']}")
    if optim["warmup"] < 0:
        raise VolsegError(where, f"'optim.warmup' must be >= 0 steps, got {optim['warmup']}")
    if not 0.0 <= optim["min_lr"] <= optim["lr"]:
        raise VolsegError(where, f"'optim.min_lr' must be in [0, optim.lr = {optim['lr']}], got "
                                 f"{optim['min_lr']}")
    steps = optim["schedule_steps"]
    if steps is not None and steps < 1:
        raise VolsegError(where, f"'optim.schedule_steps' must be at least 1, got {steps}")


def lr_at(step: int, optim: dict[str, Any], *, total: int | None = None) -> float:
    """The learning rate of 0-based ``step``.

    Parameters
    ----------
    step : int
        Optimisation step, 0-based.
    optim : dict
        The ``optim`` config section: ``lr``, ``warmup``, and optionally ``schedule``
        (default constant), ``poly_exponent`` (0.9), ``min_lr`` (0), ``schedule_steps``.
    total : int, optional
        The run's planned steps (the horizon unless ``schedule_steps`` is set); needed by
        ``poly`` and ``cosine``.
    """
    lr, warmup = float(optim["lr"]), int(optim.get("warmup") or 0)
    if warmup and step < warmup:
        return lr * (step + 1) / warmup
    name = optim.get("schedule", "constant")
    if name == "constant":
        return lr
    horizon = optim.get("schedule_steps") or total
    if horizon is None:
        raise VolsegError("optim.schedule", f"{name} needs the number of steps (--steps, "
                                            "--epochs or optim.schedule_steps)")
    span = max(1, int(horizon) - warmup)
    frac = min(1.0, max(0.0, (step - warmup) / span))
    low = float(optim.get("min_lr") or 0.0)
    if name == "poly":
        factor = (1.0 - frac) ** float(optim.get("poly_exponent", 0.9))
    elif name == "cosine":
        factor = 0.5 * (1.0 + math.cos(math.pi * frac))
    else:
        raise VolsegError("optim.schedule", f"unknown schedule {name!r}; use "
                                            f"{', '.join(SCHEDULES)}")
    return low + (lr - low) * factor
