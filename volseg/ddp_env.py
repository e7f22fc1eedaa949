"""Where this process sits in a distributed launch, read from the environment (stdlib only).

Two launchers are recognised, in this order:

* ``torchrun`` (also ``python -m torch.distributed.run``, and torchrun started by ``srun``, one
  per node): ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``; ``MASTER_ADDR``/``MASTER_PORT`` set by
  torchrun's rendezvous.
* ``srun`` starting one task per rank: ``SLURM_PROCID``, ``SLURM_STEP_NUM_TASKS`` (or
  ``SLURM_NTASKS`` inside a job step), ``SLURM_LOCALID``; ``MASTER_ADDR`` and ``MASTER_PORT``
  must come from the job script (see ``examples/train_ddp.sbatch``). The batch script itself
  (outside ``srun``) is not a job step and runs as one process.

Kept free of torch (stdlib and :mod:`volseg.errors` only) so that the CLI can tell rank 0 (the only rank that prints errors) cheaply.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from volseg.errors import VolsegError


class RankError(VolsegError):
    """Bad input seen by one rank only (e.g. its LOCAL_RANK has no GPU): every rank prints it,
    unlike the errors of the checks all ranks make alike, which only rank 0 prints."""


@dataclass(frozen=True)
class LaunchEnv:
    """Rank, world size and local rank of this process, and the launcher that set them."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    launcher: str = "none"  # "torchrun", "slurm" or "none"

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _int(env, name: str) -> int | None:
    value = env.get(name)
    if value is None or not str(value).strip().lstrip("-").isdigit():
        return None
    return int(value)


def launch_env(environ=None) -> LaunchEnv:
    """The :class:`LaunchEnv` of this process (one process, rank 0 of 1, when not launched)."""
    env = os.environ if environ is None else environ
    world, rank = _int(env, "WORLD_SIZE"), _int(env, "RANK")
    if world is not None and rank is not None:
        local = _int(env, "LOCAL_RANK")
        return LaunchEnv(rank, world, rank if local is None else local, "torchrun")
    in_step = "SLURM_STEP_ID" in env or "SLURM_STEPID" in env
    world = _int(env, "SLURM_STEP_NUM_TASKS")
    if world is None and in_step:
        world = _int(env, "SLURM_NTASKS")
    rank = _int(env, "SLURM_PROCID")
    if world is not None and world > 1 and rank is not None:
        local = _int(env, "SLURM_LOCALID")
        return LaunchEnv(rank, world, 0 if local is None else local, "slurm")
    return LaunchEnv()


def secondary_exit_delay(environ=None) -> float:
    """Seconds a rank other than 0 waits before exiting on an error that rank 0 reports
    (``VOLSEG_DDP_ERROR_DELAY``, default 5): torchrun stops every rank as soon as one exits,
    and rank 0 must have printed the error line by then."""
    env = os.environ if environ is None else environ
    try:
        return max(0.0, float(env.get("VOLSEG_DDP_ERROR_DELAY", "5")))
    except ValueError:
        return 5.0


def is_secondary_rank(environ=None) -> bool:
    """True in ranks other than 0 of a distributed launch (they stay silent on errors)."""
    env = launch_env(environ)
    return env.distributed and not env.is_main
