"""Seed-style whole-volume training items (``data.patch: null``).

Fast-DDPM's dataset loads each case whole and resizes it to ``(data.depth, data.image_size,
data.image_size)``; training flips it along each of the three axes with probability 1/2. Here
each training volume (a ``volseg synth brain`` case, a ``synth scan`` volume, any volume with a
``target`` image) is one item: its root image and the ``data.condition`` images as channels, its
``target`` as the target, each resized trilinearly (:func:`volseg.data.resize.resize_3d`,
order 1) on first use and kept in memory (cases are small by construction). Validation takes
whole cases, never flipped. Items are ``{"image": (C, D, H, W) float32, "target": (1, D, H, W)
float32}``, axis order (z, y, x), units voxels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from volseg.errors import VolsegError


class WholeVolumeDataset(Dataset):
    """Whole cases resized to one training shape, optionally flipped on each axis.

    Parameters
    ----------
    cases : sequence of path
        Volumes, each with a ``target`` image and the ``condition`` images inside it.
    shape : (D, H, W)
        Training shape in voxels (``data.depth, data.image_size, data.image_size``).
    length : int
        Items per epoch; item ``i`` is case ``i % len(cases)``.
    flip : bool
        Random flips along z, y and x (training), seeded by ``seed`` and the item index.
    seed : int
        Seed of the flips.
    condition : sequence of str
        Images inside every case stacked after its root image as channels.
    """

    def __init__(self, cases, *, shape, length: int, flip: bool, seed: int = 0, condition=()):
        self.cases = [Path(c) for c in cases]
        self.shape = tuple(int(s) for s in shape)
        self.length = int(length)
        self.flip = bool(flip)
        self.seed = int(seed)
        self.condition = [str(c) for c in condition or ()]
        self.in_channels = 1 + len(self.condition)
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return self.length

    def _case(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        if k not in self._cache:
            from volseg.data.resize import resize_3d
            from volseg.io import open_volume

            case = self.cases[k]
            paths = [case] + [case / name for name in self.condition]
            image = np.stack([resize_3d(np.asarray(open_volume(p)[...]), self.shape, order=1)
                              for p in paths])
            target = resize_3d(np.asarray(open_volume(case / "target")[...]), self.shape, order=1)[None]
            self._cache[k] = (image, target)
        return self._cache[k]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        image, target = self._case(int(i) % len(self.cases))
        if self.flip:
            rng = np.random.default_rng((self.seed, int(i)))
            axes = tuple(1 + a for a in range(3) if rng.random() < 0.5)
            if axes:
                image, target = np.flip(image, axes), np.flip(target, axes)
        return {"image": torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)),
                "target": torch.from_numpy(np.ascontiguousarray(target, dtype=np.float32))}


def _check_case(unit, condition) -> None:
    from volseg.data.condition import condition_paths
    from volseg.io import read_meta

    path = unit.path
    if unit.is_store:
        raise VolsegError(unit.given or path, "is a patch store; data.patch: null trains on whole "
                          "volumes (cases), resized to data.depth x data.image_size^2: give the volumes "
                          "(e.g. brain.zarr/case_000 ...) or set data.patch to train on patches")
    if unit.label is not None:
        raise VolsegError(unit.given or path, "is an image/label pair; data.patch: null (whole-volume "
                          "training) translates volumes with a `target` image: drop data.patch: null")
    shape = tuple(int(s) for s in read_meta(path).shape)
    if len(shape) != 3:
        raise VolsegError(path, f"has shape {shape}; whole-volume training needs 3D (z, y, x) cases")
    if not (path / "target").exists():
        raise VolsegError(path, "has no target image (expected <volume>/target, as `volseg synth brain` "
                          "and `synth scan` write); whole-volume training (data.patch: null) translates")
    condition_paths(path, condition, shape, read_meta)


def make_whole_datasets(sources, *, task: str, shape, val_fraction: float = 0.1, seed: int = 0,
                        samples_per_epoch: int = 256, condition=None):
    """``(train_ds, val_ds or None)`` of whole resized cases, validation split by case.

    Parameters
    ----------
    sources : volseg.data.mix.Sources or path
        Training volumes and explicit validation volumes (``--val``).
    task : str
        Must be ``translation`` (whole-volume training is the seed's image translation).
    shape : (D, H, W)
        Training shape in voxels.
    val_fraction, seed
        Without ``--val``: this fraction of the cases (at least one, when there are two or more)
        is held out, picked by ``seed`` as for many patch volumes.
    samples_per_epoch : int
        Training items per epoch (at least one per case).
    condition : sequence of str, optional
        ``data.condition``.
    """
    from volseg.data.mix import Sources, _units

    if task != "translation":
        raise VolsegError("data.patch", "null (whole-volume training) applies to image translation "
                          "(--model diffusion, or a UNet with loss.type l1|l2); segmentation trains on patches")
    if not isinstance(sources, Sources):
        sources = Sources(paths=[str(sources)])
    if sources.pairs:
        raise VolsegError("--images", "image/label pairs are segmentation data; data.patch: null "
                          "(whole-volume training) translates volumes with a `target` image")
    units = [u for p in sources.paths for u in _units(Path(p))]
    val_units = [u for p in sources.val for u in _units(Path(p))]
    if not units:
        raise VolsegError("DATA", "missing; give the training volumes (cases)")
    for unit in units + val_units:
        _check_case(unit, condition)
    if not val_units and val_fraction > 0 and len(units) > 1:
        n_val = min(max(1, int(round(val_fraction * len(units)))), len(units) - 1)
        picked = set(np.random.default_rng(int(seed)).permutation(len(units))[:n_val].tolist())
        val_units = [u for i, u in enumerate(units) if i in picked]
        units = [u for i, u in enumerate(units) if i not in picked]
    train = WholeVolumeDataset([u.path for u in units], shape=shape, flip=True, seed=seed,
                               length=max(len(units), int(samples_per_epoch)), condition=condition)
    train.sources = [u.name for u in units]
    if not val_units:
        return train, None
    val = WholeVolumeDataset([u.path for u in val_units], shape=shape, flip=False, seed=seed,
                             length=len(val_units), condition=condition)
    val.sources = [u.name for u in val_units]
    return train, val
