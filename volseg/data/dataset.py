"""Torch training datasets: patches from a patch store, or streamed from a volume on the fly.

Items are dicts of torch tensors, axis order (C, z, y, x), sizes in voxels:

* segmentation: ``{"image": (C, D, H, W) float32 raw values, "label": (1, D, H, W) uint8}``
  (labels 0 background, 1 foreground, 2 ignore);
* translation: ``{"image": (1, D, H, W) float32 raw condition, "target": (1, D, H, W) float32}``.

Reproducibility: every item draws all its randomness (position, crop, augmentation) from a
generator seeded by ``(seed, split, index)``. :func:`make_loader` feeds the datasets with an
:class:`EpochSampler` whose indices keep growing across epochs (``epoch * len + j``), so each epoch
sees new random patches even with persistent workers, the same seed gives the same patches for
any number of workers, and two workers never draw the same stream (they never get the same
index). Worker processes open the Zarr stores lazily (the datasets pickle as paths and small
index arrays) and are seeded by :func:`seed_worker` for any other randomness.

Streaming from a volume never loads it whole: each item reads one patch (plus, for label-balanced
draws, one label block located through a :class:`~volseg.data.sampling.ForegroundIndex` counted
once with Dask); ``foreground_fraction`` of the items are forced to hold label 1, the rest are
uniform (nnU-Net's oversampling). The last ``val_fraction`` of the z axis (at least one patch
deep) is held out: validation is a fixed, seeded set of patches from that slab, training draws
from the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from volseg.data.augment import AugmentConfig, augment, parse_augment
from volseg.data.condition import condition_paths, refuse_condition
from volseg.data.loader import EpochSampler, make_loader, seed_worker
from volseg.data.patchstore import PatchStore, is_patch_store
from volseg.data.sampling import ForegroundIndex, direct_array, draw_patch, item_rng, parse_fraction
from volseg.errors import VolsegError
from volseg.io.boxes import read_box
from volseg.io.finite import check_array
from volseg.geometry import parse_size3

TASKS = ("segmentation", "translation")
DEFAULT_PATCH = (64, 64, 64)
_TRAIN, _VAL = 1, 2  # split keys of the per-item generators


def _parse_task(task: str) -> str:
    if task not in TASKS:
        raise VolsegError("task", f"unknown task {task!r}; use segmentation or translation")
    return task


def _parse_val_fraction(value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise VolsegError("val_fraction", f"expected a number in [0, 1), got {value!r}") from None
    if not 0.0 <= v < 1.0:
        raise VolsegError("val_fraction", f"must be in [0, 1), got {value}")
    return v


def _parse_count(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise VolsegError(name, f"expected a positive integer, got {value!r}")
    return int(value)


def _to_item(sample: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    item = {"image": torch.from_numpy(np.ascontiguousarray(sample["image"], dtype=np.float32))}
    if "label" in sample:
        item["label"] = torch.from_numpy(np.ascontiguousarray(sample["label"], dtype=np.uint8))
    if "target" in sample:
        item["target"] = torch.from_numpy(np.ascontiguousarray(sample["target"], dtype=np.float32))
    return item


class PatchStoreDataset(Dataset):
    """Patches of a patch store (a subset of its indices), optionally randomly cropped and augmented.

    Parameters
    ----------
    path : str or os.PathLike
        The patch store.
    indices : sequence of int
        Store indices that make up this dataset.
    task : str
        ``segmentation`` (needs ``labels``) or ``translation`` (needs ``targets``).
    patch : (D, H, W), optional
        Crop size, at most the stored patch; random crops for training, centred for validation.
    augment : AugmentConfig, optional
        None: no augmentation (validation).
    seed : int
    train : bool
        Training (random crops, index-dependent randomness) or validation (fixed).
    """

    def __init__(self, path, indices: Sequence[int], *, task: str, patch=None, augment=None,
                 seed: int = 0, train: bool = True):
        self.path = str(path)
        store = PatchStore.open(path)
        self.task = _parse_task(task)
        need = "labels" if task == "segmentation" else "targets"
        if getattr(store, need) is None:
            raise VolsegError(path, f"has no `{need}` array, needed for {task}; "
                              f"patchify with {'--labels' if need == 'labels' else 'a target image'}")
        self.stored_patch = store.patch
        self.patch = self.stored_patch if patch is None else parse_size3(patch, name="--patch")
        if any(p > s for p, s in zip(self.patch, self.stored_patch)):
            raise VolsegError("--patch", f"{self.patch} is larger than the stored patches {self.stored_patch} "
                              f"of {path}; use a patch <= the stored one")
        self.indices = np.asarray(indices, dtype=np.int64)
        self.in_channels = store.channels
        self.spacing = store.spacing
        self.augment = augment
        self.seed = int(seed)
        self.train = bool(train)
        self._store: PatchStore | None = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_store"] = None
        return state

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if self._store is None:
            self._store = PatchStore.open(self.path)
        i = int(i)
        rng = item_rng(self.seed, _TRAIN if self.train else _VAL, i)
        row = int(self.indices[i % len(self.indices)])
        sample = self._store.read(row)
        origin = tuple(int(o) for o in sample.pop("origin"))
        for key in ("image", "target"):
            if key in sample:
                check_array(sample[key], self.path, offset=origin,
                            hint=f"training patch {row} ({key}) must be finite; clean the source and patchify again")
        sample.pop("label" if self.task == "translation" else "target", None)
        if self.patch != self.stored_patch:
            slack = np.subtract(self.stored_patch, self.patch)
            lo = (rng.random(3) * (slack + 1)).astype(np.int64) if self.train else slack // 2
            key = (slice(None),) + tuple(slice(int(a), int(a) + p) for a, p in zip(lo, self.patch))
            sample = {k: v[key] for k, v in sample.items()}
        if self.augment is not None:
            sample = augment(sample, self.augment, rng, spacing=self.spacing)
        return _to_item(sample)


@dataclass(frozen=True)
class VolumeSource:
    """The volumes one :class:`VolumePatchDataset` reads: ``image`` with its ``label`` volume
    (segmentation) or ``target`` (translation), same shape, further ``condition`` images as input
    channels, and the voxel ``spacing`` (z, y, x) for spacing-aware augmentation."""

    image: str
    label: str | None = None
    target: str | None = None
    condition: tuple = ()
    spacing: tuple | None = None


class VolumePatchDataset(Dataset):
    """Random patches streamed from a 3D volume (and its labels or target), label-balanced.

    Parameters
    ----------
    source : VolumeSource
        The image, its label or target volume, further condition channels and voxel spacing.
    task : str
    patch : (D, H, W)
    start, stop : (z, y, x)
        The region patches are drawn from, ``[start, stop)``.
    length : int
        Items per epoch.
    foreground_fraction : float
        Share of patches forced to contain label 1 (segmentation); needs ``index``. The other
        patches are uniform over the region.
    index : ForegroundIndex, optional
    augment : AugmentConfig, optional
    seed : int
    fixed : bool
        Validation: item ``i`` is the same patch every epoch (``i`` taken modulo ``length``).
    """

    def __init__(self, source: "VolumeSource", *, task: str, patch, start, stop, length: int,
                 foreground_fraction: float = 0.0, index: ForegroundIndex | None = None,
                 augment: AugmentConfig | None = None, seed: int = 0, fixed: bool = False):
        self.image_path = str(source.image)
        self.condition_paths = [str(p) for p in source.condition or ()]
        self.label_path = None if source.label is None else str(source.label)
        self.target_path = None if source.target is None else str(source.target)
        spacing = source.spacing
        self.task = _parse_task(task)
        self.patch = tuple(int(p) for p in patch)
        self.start = tuple(int(s) for s in start)
        self.stop = tuple(int(s) for s in stop)
        self.length = int(length)
        self.foreground_fraction = float(foreground_fraction)
        self.index = index
        self.augment = augment
        self.seed = int(seed)
        self.fixed = bool(fixed)
        self.spacing = tuple(spacing) if spacing is not None else (1.0, 1.0, 1.0)
        self.in_channels = 1 + len(self.condition_paths)
        self._arrays: dict[str, Any] | None = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_arrays"] = None
        return state

    def __len__(self) -> int:
        return self.length

    def _open(self) -> dict[str, Any]:
        if self._arrays is None:
            from volseg.io import open_volume

            arrays = {"image": open_volume(self.image_path)}
            if self.label_path is not None:
                arrays["label"] = open_volume(self.label_path)
            if self.target_path is not None:
                arrays["target"] = open_volume(self.target_path)
            for k, p in enumerate(self.condition_paths):
                arrays[f"condition{k}"] = open_volume(p)
            self._arrays = {k: direct_array(v) for k, v in arrays.items()}
        return self._arrays

    def draw(self, i: int) -> tuple[np.ndarray, dict[str, np.ndarray], np.random.Generator]:
        """Item ``i``'s patch corner (z, y, x), its raw arrays (D, H, W) and its generator."""
        arrays = self._open()
        i = int(i) % self.length if self.fixed else int(i)
        rng = item_rng(self.seed, _VAL if self.fixed else _TRAIN, i)
        want_fg = self.index is not None and rng.random() < self.foreground_fraction
        origin, lab = draw_patch(rng, patch=self.patch, start=self.start, stop=self.stop,
                                 labels=arrays.get("label"), index=self.index, foreground=want_fg,
                                 reject=False)
        stop = origin + np.asarray(self.patch)
        raw = {"image": read_box(arrays["image"], origin, stop, pad="constant")}
        if lab is not None:
            raw["label"] = lab
        if "target" in arrays:
            raw["target"] = read_box(arrays["target"], origin, stop, pad="constant")
        for k in range(len(self.condition_paths)):
            raw[f"condition{k}"] = read_box(arrays[f"condition{k}"], origin, stop, pad="constant")
        return origin, raw, rng

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        origin, raw, rng = self.draw(i)
        named = [("image", self.image_path), ("target", self.target_path)]
        named += [(f"condition{k}", p) for k, p in enumerate(self.condition_paths)]
        for key, path in named:
            if key in raw:
                check_array(raw[key], path, offset=tuple(int(o) for o in origin),
                            hint="training volumes must be finite; clean the input (e.g. np.nan_to_num)")
        channels = [raw["image"]] + [raw[f"condition{k}"] for k in range(len(self.condition_paths))]
        sample = {"image": np.stack(channels).astype(np.float32)}
        if "label" in raw:
            sample["label"] = raw["label"].astype(np.uint8)[None]
        if "target" in raw:
            sample["target"] = raw["target"].astype(np.float32)[None]
        if self.augment is not None:
            sample = augment(sample, self.augment, rng, spacing=self.spacing)
        return _to_item(sample)


def make_datasets(source, *, task: str, patch=None, val_fraction: float = 0.1, seed: int = 0,
                  augment: dict | None = None, samples_per_epoch: int = 1000,
                  foreground_fraction: float = 0.5, labels=None, target=None,
                  condition=None) -> tuple[Dataset, Dataset | None]:
    """Training and validation datasets from a patch store or a volume.

    Parameters
    ----------
    source : str or os.PathLike
        A patch store (``volseg patchify``), or a volume: an OME-Zarr with an NGFF label image
        (``synth scroll``), a group with a ``target`` image (``synth scan``), or any volume
        :func:`volseg.io.open_volume` reads (translation needs ``<source>/target``).
    task : {"segmentation", "translation"}
    patch : (D, H, W), optional
        Patch store: crop size (default the stored patch). Volume: patch size (default 64^3).
    val_fraction : float
        In [0, 1). Patch store: share of patches held out (seeded split, at least one). Volume:
        the held-out slab of the last ``val_fraction`` of z, at least one patch deep. 0: no
        validation dataset (None).
    seed : int
    augment : dict, optional
        Augmentation config for training (see :func:`volseg.data.augment.parse_augment`).
    samples_per_epoch : int
        Volume: training items per epoch (validation holds ``samples_per_epoch * val_fraction``,
        at least 1).
    foreground_fraction : float
        Volume, segmentation: share of patches forced to contain label 1 (nnU-Net style
        oversampling); the others are drawn uniformly (and may contain foreground too).
    labels, target : str or os.PathLike, optional
        Volume: an explicit label volume (segmentation) or target volume (translation), same
        shape as ``source``, instead of the ones found in the group (e.g. for a raw ``.tif``).
    condition : sequence of str, optional
        Volume: names of further images inside ``source`` (e.g. ``["flair"]`` of a ``synth
        brain`` case) stacked after its root image as input channels (``data.condition``).

    Returns
    -------
    (train_ds, val_ds or None)
    """
    task = _parse_task(task)
    val_fraction = _parse_val_fraction(val_fraction)
    samples_per_epoch = _parse_count(samples_per_epoch, "samples_per_epoch")
    foreground_fraction = parse_fraction(foreground_fraction, name="foreground_fraction")
    cfg = parse_augment(augment)
    path = Path(source)
    if not path.exists():
        raise VolsegError(path, "does not exist; give a patch store or a volume")
    if is_patch_store(path):
        refuse_condition(path, condition)
        return _store_datasets(path, task=task, patch=patch, val_fraction=val_fraction, seed=seed, cfg=cfg)
    return _volume_datasets(path, task=task, patch=patch, val_fraction=val_fraction, seed=seed, cfg=cfg,
                            samples=samples_per_epoch, foreground_fraction=foreground_fraction or 0.0,
                            label=labels, target=target, condition=condition)



def _store_datasets(path: Path, *, task, patch, val_fraction, seed, cfg):
    n = len(PatchStore.open(path))
    if n == 0:
        raise VolsegError(path, "holds no patches")
    n_val = int(round(n * val_fraction))
    if val_fraction > 0 and n_val == 0 and n >= 2:
        n_val = 1
    if n_val >= n:
        raise VolsegError("val_fraction", f"{val_fraction} leaves no training patches of the {n} in {path}")
    order = np.random.default_rng(int(seed)).permutation(n)
    train_idx, val_idx = np.sort(order[n_val:]), np.sort(order[:n_val])
    train = PatchStoreDataset(path, train_idx, task=task, patch=patch, augment=cfg if cfg.enabled else None,
                              seed=seed, train=True)
    val = (PatchStoreDataset(path, val_idx, task=task, patch=patch, seed=seed, train=False)
           if n_val else None)
    return train, val


def _volume_datasets(path: Path, *, task, patch, val_fraction, seed, cfg, samples, foreground_fraction,
                     label=None, target=None, condition=None):
    from volseg.io import find_labels, open_volume, read_meta

    meta = read_meta(path)
    shape = tuple(int(s) for s in meta.shape)
    patch = DEFAULT_PATCH if patch is None else parse_size3(patch, name="--patch")
    if any(p > s for p, s in zip(patch, shape)):
        raise VolsegError("--patch", f"{'x'.join(map(str, patch))} is larger than the volume {path} of shape "
                          f"{'x'.join(map(str, shape))}; use a smaller patch")
    if task == "segmentation":
        target = None
        label = find_labels(path) if label is None else Path(label)
        if label is None:
            raise VolsegError(path, "has no label image (expected an NGFF label group such as "
                              "labels/surface); segmentation needs labels, or patchify with --labels first")
        _check_same_shape(label, shape, read_meta)
    else:
        label = None
        target = path / "target" if target is None else Path(target)
        if not target.exists():
            raise VolsegError(path, "has no target image (expected <volume>/target, as `volseg synth scan` "
                              "writes); translation needs a target")
        _check_same_shape(target, shape, read_meta)
    z_val = max(int(round(shape[0] * val_fraction)), patch[0]) if val_fraction > 0 else 0
    z_split = shape[0] - z_val
    if z_split < patch[0]:
        raise VolsegError("val_fraction", f"{val_fraction} holds out {z_val} of the {shape[0]} slices of {path} "
                          f"(at least the patch depth {patch[0]}), leaving fewer than {patch[0]} for training; "
                          "lower val_fraction or the patch depth, or use 0")
    source = VolumeSource(str(path), label=label, target=target, spacing=meta.spacing,
                          condition=tuple(condition_paths(path, condition, shape, read_meta)))
    common = dict(task=task, patch=patch, seed=seed)
    train_index = val_index = None
    if label is not None and foreground_fraction > 0:
        labels = open_volume(label)
        train_index = ForegroundIndex.build(labels, start=(0, 0, 0), stop=(z_split,) + shape[1:])
        if train_index.total == 0:
            raise VolsegError(label, "has no foreground (label 1) voxels in the training region; "
                              "use foreground_fraction 0")
        if z_val:
            val_index = ForegroundIndex.build(labels, start=(z_split, 0, 0), stop=shape)
            val_index = val_index if val_index.total else None
    train = VolumePatchDataset(source, start=(0, 0, 0), stop=(z_split,) + shape[1:], length=samples,
                               foreground_fraction=foreground_fraction, index=train_index,
                               augment=cfg if cfg.enabled else None, **common)
    if not z_val:
        return train, None
    val = VolumePatchDataset(source, start=(z_split, 0, 0), stop=shape, length=max(1, int(round(samples * val_fraction))),
                             foreground_fraction=foreground_fraction, index=val_index, fixed=True, **common)
    return train, val


def _check_same_shape(other: Path, shape, read_meta) -> None:
    other_shape = tuple(int(s) for s in read_meta(other).shape)
    if other_shape != tuple(shape):
        raise VolsegError(other, f"has shape {other_shape} but the image has {tuple(shape)}; they must match")


__all__ = ["make_datasets", "make_loader", "PatchStoreDataset", "VolumePatchDataset", "VolumeSource", "EpochSampler",
           "seed_worker", "TASKS"]
