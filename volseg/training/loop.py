"""The pieces of one training step: data stream, mixed precision, EMA, loss per model type.

Kept apart from :mod:`volseg.training.trainer` (which orchestrates config, run directory and
checkpoints) so that the benchmarks time exactly the step the trainer runs.
"""

from __future__ import annotations

import contextlib
import copy
import functools
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from volseg.models.ddim import training_target
from volseg.models.precision import amp_pays_off  # noqa: F401  (re-exported: demo, tests)
from volseg.training.losses import diffusion_loss, regression_loss, segmentation_loss
from volseg.training.schedule import lr_at  # noqa: F401  (re-exported: the trainer's import)


class StreamSampler(Sampler[int]):
    """An endless stream of indices ``epoch * n + j``, j a fresh seeded permutation per epoch.

    Indices keep growing across epochs (the convention of :mod:`volseg.data.dataset`: datasets
    that stream random patches draw new ones every epoch, the others take the index modulo
    their length). Stream position p is epoch ``p // n``, entry ``p % n``, so a run resumed at
    step s (position ``s * batch_size``) sees exactly the batches an uninterrupted run would.
    """

    def __init__(self, n: int, *, seed: int, start: int = 0, shuffle: bool = True):
        self.n, self.seed, self.start, self.shuffle = n, seed, start, shuffle

    def __iter__(self) -> Iterator[int]:
        epoch, offset = divmod(self.start, self.n)
        while True:
            if self.shuffle:
                gen = torch.Generator().manual_seed(self.seed * 100003 + epoch)
                order = torch.randperm(self.n, generator=gen).tolist()
            else:
                order = list(range(self.n))
            yield from (epoch * self.n + j for j in order[offset:])
            epoch, offset = epoch + 1, 0

    def __len__(self) -> int:  # a DataLoader asks; the stream is cut by the step count
        return 2 ** 62


class RankSlice(Sampler[int]):
    """Rank ``rank``'s share of an index stream cut into global batches of
    ``world * batch_size``: entries ``rank * batch_size .. (rank + 1) * batch_size - 1`` of each."""

    def __init__(self, stream: Sampler[int], *, batch_size: int, rank: int, world: int):
        self.stream, self.batch_size, self.rank, self.world = stream, batch_size, rank, world

    def __iter__(self) -> Iterator[int]:
        lo, hi, size = self.rank * self.batch_size, (self.rank + 1) * self.batch_size, \
            self.world * self.batch_size
        for position, index in enumerate(self.stream):
            if lo <= position % size < hi:
                yield index

    def __len__(self) -> int:
        return 2 ** 62


class _Modulo(Dataset):
    """Index ``i`` -> ``dataset[i % len(dataset)]`` for datasets that expect indices < len."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        return self.dataset[int(i) % len(self.dataset)]


def _takes_growing_indices(dataset: Dataset) -> bool:
    return type(dataset).__module__.startswith("volseg.data.")


def batch_stream(dataset: Dataset, *, batch_size: int, seed: int, start_step: int = 0,
                 workers: int = 0, pin_memory: bool = False,
                 shard: tuple[int, int] = (0, 1)) -> Iterator[dict[str, Any]]:
    """Batches for steps ``start_step, start_step + 1, ...`` (endless).

    Every item is drawn from the sampler position alone (the volseg datasets seed each item by
    its index), so the stream is the same for any number of ``workers`` and after ``--resume``.
    ``shard`` (rank, world size): the global batch of ``world * batch_size`` items is the one
    a single process would draw, and this rank gets its ``rank``-th slice of ``batch_size``.
    """
    rank, world = shard
    sampler = StreamSampler(len(dataset), seed=seed, start=start_step * batch_size * world)
    if world > 1:
        sampler = RankSlice(sampler, batch_size=batch_size, rank=rank, world=world)
    if not _takes_growing_indices(dataset):
        dataset = _Modulo(dataset)
    init = None
    if workers:
        from volseg.data.dataset import seed_worker

        init = functools.partial(seed_worker, seed=seed + start_step)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                        worker_init_fn=init, prefetch_factor=4 if workers else None,
                        generator=torch.Generator().manual_seed(seed + start_step),
                        pin_memory=pin_memory)
    return iter(loader)


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on CPU, fp16 on CUDA; a no-op context when disabled."""
    if not enabled:
        return contextlib.nullcontext()
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(device: torch.device, amp: bool) -> torch.amp.GradScaler:
    """A GradScaler that is active only for fp16 on CUDA (a pass-through elsewhere)."""
    return torch.amp.GradScaler(device.type if device.type == "cuda" else "cpu",
                                enabled=amp and device.type == "cuda")


class EMA:
    """Exponential moving average of a model's weights (a full eval copy of the model).

    The decay warms up as ``min(rate, (1 + n) / (10 + n))`` after n updates, so short runs are
    not dominated by the initial weights.
    """

    def __init__(self, model: nn.Module, rate: float = 0.999):
        self.rate = rate
        self.updates = 0
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        decay = min(self.rate, (1 + self.updates) / (10 + self.updates))
        for ema_p, p in zip(self.module.parameters(), model.parameters()):
            ema_p.mul_(decay).add_(p.detach(), alpha=1.0 - decay)
        for ema_b, b in zip(self.module.buffers(), model.buffers()):
            ema_b.copy_(b)

    def state_dict(self) -> dict[str, Any]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, Any], updates: int) -> None:
        self.module.load_state_dict(state)
        self.updates = updates


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Move the tensors of a batch to ``device`` (others unchanged)."""
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v
            for k, v in batch.items()}


def unet_loss(model: nn.Module, batch: dict[str, torch.Tensor], loss_cfg: dict[str, Any],
              reduce=None) -> torch.Tensor:
    """BCE + soft Dice (+ skeleton recall, + soft clDice) of the UNet on one batch (ignore label masked);
    ``reduce`` sums the batch sums across ranks (see
    :func:`volseg.training.losses.segmentation_loss`). With ``loss.type`` l1 / l2: the mean
    absolute / squared error of the standardised target (image regression)."""
    logits = model.logits(batch["image"].float())
    if loss_cfg.get("type", "segmentation") != "segmentation":
        return regression_loss(logits, model.normalize_target(batch["target"].float()), loss_cfg["type"])
    return segmentation_loss(logits, batch["label"], ignore_label=loss_cfg["ignore_label"],
                             bce_weight=loss_cfg["bce_weight"],
                             dice_weight=loss_cfg["dice_weight"],
                             skeleton_recall_weight=loss_cfg.get("skeleton_recall_weight", 0.0),
                             skeleton_tube_radius=loss_cfg.get("skeleton_tube_radius", 1),
                             cldice_weight=loss_cfg.get("cldice_weight", 0.0),
                             cldice_iters=loss_cfg.get("cldice_iters", 3),
                             reduce=reduce)


def diffusion_step_loss(model: nn.Module, batch: dict[str, torch.Tensor],
                        generator: torch.Generator, shard: tuple[int, int] = (0, 1)
                        ) -> torch.Tensor:
    """Fast-DDPM MSE of the model output: t drawn (antithetically) from the model's timesteps.

    The output is compared with eps (the original loss), x_0 or v, as the model's
    ``prediction`` says (:func:`volseg.models.ddim.training_target`).

    The timesteps and the noise come from the CPU ``generator`` (seeded, saved for --resume).
    ``shard`` (rank, world size): every rank draws them for the global batch of
    ``world * n`` and keeps its own rows, as one process with the global batch would.
    """
    device = batch["image"].device
    condition = model.normalize_condition(batch["image"].float())
    x0 = model.normalize_target(batch["target"].float())
    n = x0.shape[0]
    rank, world = shard
    total = n * world
    seq = torch.tensor(model.timesteps, dtype=torch.long)
    first = torch.randint(0, len(seq), (total // 2 + 1,), generator=generator)
    idx = torch.cat([first, len(seq) - 1 - first])[:total][rank * n:(rank + 1) * n]
    t = seq[idx]
    eps = torch.randn((total,) + tuple(x0.shape[1:]), generator=generator)
    eps = eps[rank * n:(rank + 1) * n].to(device)
    a = model.alphas_cumprod[t.to(device)].view(-1, 1, 1, 1, 1)
    x_t = x0 * a.sqrt() + eps * (1.0 - a).sqrt()
    pred = model.denoiser(torch.cat([condition, x_t], dim=1), t.to(device).float())
    return diffusion_loss(pred, training_target(x0, eps, a, model.prediction))


def step_loss(model: nn.Module, batch: dict[str, torch.Tensor], cfg: dict[str, Any],
              generator: torch.Generator) -> torch.Tensor:
    """The training loss of one batch for either model type."""
    if cfg["model"]["type"] == "unet":
        return unet_loss(model, batch, cfg["loss"])
    return diffusion_step_loss(model, batch, generator)


def make_optimizer(params, optim: dict[str, Any]) -> torch.optim.Optimizer:
    """Adam or AdamW from the ``optim`` config section."""
    cls = torch.optim.AdamW if optim["optimizer"] == "adamw" else torch.optim.Adam
    return cls(params, lr=optim["lr"], betas=(optim["beta1"], 0.999), eps=optim["eps"],
               weight_decay=optim["weight_decay"], amsgrad=optim["amsgrad"])


def train_step(model: nn.Module, batch: dict[str, torch.Tensor], *, cfg: dict[str, Any],
               optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
               device: torch.device, amp: bool, generator: torch.Generator,
               ema: EMA | None = None, forward=None) -> float:
    """One optimisation step (forward under autocast, scaled backward, clip, step, EMA).

    ``forward(batch, generator)``, when given, computes the loss instead of :func:`step_loss`
    (the DistributedDataParallel wrapper of :mod:`volseg.training.distributed`).

    Returns
    -------
    float
        The loss value.
    """
    optimizer.zero_grad(set_to_none=True)
    with autocast(device, amp):
        loss = (step_loss(model, batch, cfg, generator) if forward is None
                else forward(batch, generator))
    scaler.scale(loss).backward()
    clip = cfg["optim"]["grad_clip"]
    if clip:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    scaler.step(optimizer)
    scaler.update()
    if ema is not None:
        ema.update(model)
    return float(loss.detach())
