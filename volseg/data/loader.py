"""The DataLoader of the training datasets: epoch-continuing indices and seeded workers.

:class:`EpochSampler` hands out indices ``epoch * n + j`` so that index-seeded datasets (see
:mod:`volseg.data.dataset`) draw new patches every epoch even with persistent workers, and the
same seed gives the same batches for any number of workers. :func:`seed_worker` seeds numpy,
``random`` and torch in each worker from ``(seed, worker id)``.
"""

from __future__ import annotations

import functools
import random
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from volseg.data.sampling import item_rng
from volseg.errors import VolsegError


class EpochSampler(Sampler):
    """Indices ``epoch * n + j`` for j in a (seeded, per-epoch shuffled) order of ``range(n)``.

    Each pass (epoch) continues where the last one stopped, so index-seeded datasets draw new
    patches every epoch; the datasets take the index modulo their length where they need to.
    """

    def __init__(self, n: int, *, shuffle: bool = True, seed: int = 0):
        self.n = int(n)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.epoch = 0

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        epoch, self.epoch = self.epoch, self.epoch + 1
        order = item_rng(self.seed, 3, epoch).permutation(self.n) if self.shuffle else np.arange(self.n)
        base = epoch * self.n
        return iter((base + order).tolist())


def seed_worker(worker_id: int, *, seed: int = 0) -> None:
    """Seed numpy, random and torch in a DataLoader worker from (seed, worker id)."""
    ss = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(worker_id)])
    value = int(ss.generate_state(1)[0])
    np.random.seed(value)
    random.seed(value)
    torch.manual_seed(value)
    torch.set_num_threads(1)


def make_loader(dataset: Dataset, *, batch_size: int, workers: int = 0, seed: int = 0,
                shuffle: bool = True) -> DataLoader:
    """A DataLoader over ``dataset`` with epoch-continuing indices, seeded persistent workers and
    prefetching (``workers`` processes; 0 loads in the calling process)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise VolsegError("--batch-size", f"expected a positive integer, got {batch_size!r}")
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 0:
        raise VolsegError("--workers", f"expected an integer >= 0, got {workers!r}")
    sampler = EpochSampler(len(dataset), shuffle=shuffle, seed=seed)
    extra: dict[str, Any] = {}
    if workers > 0:
        extra = {"persistent_workers": True, "prefetch_factor": 4,
                 "worker_init_fn": functools.partial(seed_worker, seed=int(seed))}
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=int(workers),
                      pin_memory=torch.cuda.is_available(), **extra)
