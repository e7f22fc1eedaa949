"""Data-parallel training across processes and nodes with torch's DistributedDataParallel.

``torchrun --nproc-per-node N volseg train ...`` (or ``srun`` with one task per rank, see
:mod:`volseg.ddp_env`) runs N copies of the same command; :func:`setup` joins them into one
process group (``nccl`` on CUDA, each rank on the GPU of its ``LOCAL_RANK``; ``gloo`` on CPU).

Semantics, chosen so that N ranks x batch b train exactly like 1 process x batch N*b:

* ``--batch-size`` is per rank (torchrun/nnU-Net convention); ``training.global_batch_size``
  (``--global-batch-size``) fixes the global batch instead and must divide by the world size.
* Every rank draws the same seeded global batch stream and keeps a disjoint slice of each
  global batch (:class:`volseg.training.loop.RankSlice`).
* The segmentation loss is a ratio of batch sums (BCE over valid voxels, batch soft Dice): the
  sums are all-reduced with autograd (:func:`all_reduce_sum`), so each rank's loss is the
  global one; DistributedDataParallel averages the gradients, which then equal the
  single-process gradient. The diffusion loss is a per-sample mean: each rank draws the noise
  of the global batch and keeps its rows; DDP's gradient average is the global mean.
* GroupNorm only (no BatchNorm), so no synchronised batch statistics are needed.
* Rank 0 alone validates, writes checkpoints, ``config.yml`` and ``metrics.jsonl`` and shows
  progress; every rank resumes from the same ``model.pt``.
* Collectives time out after ``VOLSEG_DDP_TIMEOUT`` seconds (default 1800): a rank that dies
  makes the others fail with an error naming the lost peer instead of hanging (gloo notices a
  closed connection at once; torchrun also stops the surviving ranks).
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
from torch import nn

from volseg.ddp_env import LaunchEnv, RankError, launch_env
from volseg.errors import VolsegError

DEFAULT_TIMEOUT_S = 1800.0


@dataclass
class Dist:
    """This process's place in the run: rank, world size, and whether a group is joined."""

    env: LaunchEnv
    active: bool = False

    @property
    def rank(self) -> int:
        return self.env.rank

    @property
    def world(self) -> int:
        return self.env.world if self.active else 1

    @property
    def is_main(self) -> bool:
        return self.env.rank == 0

    @property
    def shard(self) -> tuple[int, int]:
        return (self.rank if self.active else 0, self.world)

    def barrier(self) -> None:
        if self.active:
            _collective(torch.distributed.barrier)

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any rank (e.g. a spent time budget)."""
        if not self.active:
            return bool(flag)
        value = torch.tensor([1.0 if flag else 0.0])
        _collective(torch.distributed.all_reduce, value, op=torch.distributed.ReduceOp.MAX)
        return bool(value.item() > 0)

    def mean(self, value: float) -> float:
        """The mean of ``value`` over ranks (the logged diffusion loss)."""
        if not self.active:
            return value
        tensor = torch.tensor([float(value)], dtype=torch.float64)
        _collective(torch.distributed.all_reduce, tensor)
        return float(tensor.item()) / self.world

    def close(self) -> None:
        if self.active and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        self.active = False


def _timeout() -> datetime.timedelta:
    text = os.environ.get("VOLSEG_DDP_TIMEOUT", str(DEFAULT_TIMEOUT_S))
    try:
        seconds = float(text)
    except ValueError:
        raise VolsegError("VOLSEG_DDP_TIMEOUT", f"expected seconds, got {text!r}") from None
    if seconds <= 0:
        raise VolsegError("VOLSEG_DDP_TIMEOUT", f"must be positive, got {text!r}")
    return datetime.timedelta(seconds=seconds)


def per_rank_batch(batch_size: int, global_batch_size: int | None, world: int) -> int:
    """The batch each rank draws: ``batch_size``, or ``global_batch_size / world``.

    Raises
    ------
    VolsegError
        ``global_batch_size`` does not divide by the world size.
    """
    if global_batch_size is None:
        return int(batch_size)
    if global_batch_size % world:
        raise VolsegError("--global-batch-size", f"{global_batch_size} does not divide over "
                          f"{world} ranks; use a multiple of {world} (or --batch-size, per rank)")
    return global_batch_size // world


def setup(device: torch.device, *, environ=None) -> tuple[Dist, torch.device]:
    """Join the process group when launched by torchrun/srun; the device this rank trains on.

    Parameters
    ----------
    device : torch.device
        The resolved ``--device``; a CUDA device becomes ``cuda:LOCAL_RANK`` under DDP.

    Returns
    -------
    (Dist, torch.device)
    """
    env = launch_env(environ)
    if not env.distributed:
        return Dist(env), device
    if device.type == "cuda":
        if env.local_rank >= torch.cuda.device_count():
            raise RankError("LOCAL_RANK", f"{env.local_rank}, but this node has "
                              f"{torch.cuda.device_count()} CUDA device(s); start at most that "
                              "many ranks per node")
        device = torch.device("cuda", env.local_rank)
        torch.cuda.set_device(device)
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if not os.environ.get(name):
            raise VolsegError(name, "is not set; under srun export MASTER_ADDR (the first node "
                              "of the job) and MASTER_PORT (a free port), see "
                              "examples/train_ddp.sbatch")
    backend = "nccl" if device.type == "cuda" else "gloo"
    torch.distributed.init_process_group(backend, init_method="env://", rank=env.rank,
                                         world_size=env.world, timeout=_timeout(),
                                         device_id=device if device.type == "cuda" else None)
    return Dist(env, active=True), device


def _collective(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except torch.distributed.DistError as exc:  # backend, network and store errors, timeouts
        raise lost_peer(exc) from exc
    except RuntimeError as exc:
        text = str(exc).lower()
        if any(word in text for word in ("gloo", "nccl", "connection", "timed out", "timeout",
                                         "peer", "socket")):
            raise lost_peer(exc) from exc
        raise


def lost_peer(exc: BaseException) -> RuntimeError:
    """The error a rank raises when a collective fails (another rank died or hung)."""
    first = " ".join(str(exc).split())[:200]
    return RuntimeError(f"distributed training stopped: another rank died or stopped "
                        f"answering ({first}); see that rank's log, then rerun with --resume")


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; the backward sums the incoming gradients over ranks as well.

    Every rank computes the same loss L from the global sums S = sum_r s_r, so dL/ds_r = dL/dS
    on each rank; summing it over ranks gives N dL/dS, which DistributedDataParallel's gradient
    average divides by N again: the parameter gradient is the single-process one.
    """

    @staticmethod
    def forward(ctx, tensor):
        out = tensor.detach().clone()
        torch.distributed.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        torch.distributed.all_reduce(grad)
        return grad


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all ranks, differentiably (the gradient is all-reduced back)."""
    return _AllReduceSum.apply(tensor)


class _LossModule(nn.Module):
    """The training loss as a module, so DistributedDataParallel sees one forward per step."""

    def __init__(self, model: nn.Module, cfg: dict, shard: tuple[int, int]):
        super().__init__()
        self.model, self.cfg, self.shard = model, cfg, shard

    def forward(self, batch: dict, generator: torch.Generator) -> torch.Tensor:
        from volseg.training.loop import diffusion_step_loss, unet_loss

        if self.cfg["model"]["type"] == "unet":
            return unet_loss(self.model, batch, self.cfg["loss"], reduce=all_reduce_sum)
        return diffusion_step_loss(self.model, batch, generator, shard=self.shard)


def wrap(model: nn.Module, cfg: dict, dist: Dist, device: torch.device):
    """``forward(batch, generator) -> loss`` for :func:`volseg.training.loop.train_step`: the
    model's loss under DistributedDataParallel, or None (plain loss) outside a process group."""
    if not dist.active:
        return None
    from torch.nn.parallel import DistributedDataParallel

    module = _LossModule(model, cfg, dist.shard)
    ddp = DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda"
                                  else None)

    def forward(batch, generator):
        return ddp(batch, generator)

    return forward


def run_step(dist: Dist, step_fn, *args, **kwargs) -> float:
    """``step_fn(*args, **kwargs)`` (one training step), turning a failed collective into
    :func:`lost_peer`; the returned loss is the global one on every rank."""
    if not dist.active:
        return step_fn(*args, **kwargs)
    value = _collective(step_fn, *args, **kwargs)
    if kwargs["cfg"]["model"]["type"] != "unet":  # per-rank MSE: average it for the log
        value = dist.mean(value)
    return value
