"""Training on many volumes: one dataset per source volume, mixed, validation held out by volume.

A *source* is one labelled volume: a plain patch store, one source of a patch store written
from many pairs (its ``sources`` provenance array, :mod:`volseg.data.sources`), a volume
streamed in patches (an OME-Zarr with NGFF labels, or an image/label pair).

* Validation takes whole sources, never patches of a training source: the sources named by
  ``val`` (``--val``), else ``round(val_fraction * K)`` of the K sources (at least one when
  ``val_fraction > 0``, seeded choice). One single source (without ``val``) keeps the
  single-volume split of :func:`volseg.data.dataset.make_datasets` (held-out patches of a
  store, or the last z slab of a volume).
* :class:`SourceMix` samples across the training sources, each in proportion to its size
  (patches in a store, patch-sized boxes in a volume; ``weights="size"``) or equally
  (``weights="equal"``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from volseg.data.sources import Pair, patch_sources
from volseg.errors import VolsegError

WEIGHTS = ("size", "equal")


def parse_weights(value) -> str:
    """``size`` or ``equal`` (``--weights``)."""
    text = str(value).strip().lower()
    if text not in WEIGHTS:
        raise VolsegError("--weights", f"unknown weighting {value!r}; use size or equal")
    return text


@dataclass
class Sources:
    """What ``volseg train`` trains on: paths (stores or volumes), image/label pairs, and
    the sources held out for validation (``val``: paths, or pairs)."""

    paths: list[str] = field(default_factory=list)
    pairs: list[Pair] = field(default_factory=list)
    val: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        names = [str(p) for p in self.paths] + [str(p.image) for p in self.pairs]
        return names[0] if len(names) == 1 else f"{len(names)} training sources"


def training_sources(paths, *, val=None, images=None, labels=None, list_file=None) -> Sources:
    """The :class:`Sources` of ``volseg train DATA... [--val P] [--images D --labels D | --list F]``.

    A ``--val`` source that is also listed in DATA (a glob) is taken out of the training sources.
    """
    from volseg.data.sources import gather_pairs, source_key

    pairs = gather_pairs(images=images, labels=labels, list_file=list_file)
    paths = [str(p) for p in (paths or [])]
    if not paths and not pairs:
        raise VolsegError("DATA", "missing; give patch stores or volumes, or --images DIR "
                          "--labels DIR, or --list FILE")
    val = [str(v) for v in (val or [])]
    held = {source_key(v) for v in val}
    paths = [p for p in paths if source_key(p) not in held]  # `stores/*.zarr --val s/7.zarr`
    pairs = [p for p in pairs if source_key(p.image) not in held]
    if not paths and not pairs:
        raise VolsegError("--val", "leaves no training source; validation volumes are never "
                          "trained on")
    return Sources(paths=paths, pairs=pairs, val=val)


@dataclass(frozen=True)
class _Unit:
    path: Path                      # store or image volume
    label: Path | None = None       # explicit label volume (pairs)
    indices: np.ndarray | None = None  # store rows of this source (None: the whole store)
    name: str = ""
    part: int | None = None         # the source number inside a store of many pairs
    given: str = ""                 # as the user wrote it (DATA, --val or the --list row)

    def key(self) -> tuple:
        from volseg.data.sources import source_key

        return (source_key(self.path), source_key(self.label) if self.label is not None else None,
                self.part)

    @property
    def is_store(self) -> bool:
        from volseg.data.patchstore import is_patch_store

        return is_patch_store(self.path)


class SourceMix(Dataset):
    """Several datasets sampled as one: epoch of ``sum(len)`` items, shared out by weight.

    Item ``i`` (indices grow across epochs, as :class:`volseg.training.loop.StreamSampler`
    hands them out) is epoch ``e = i // L``, slot ``j = i % L``; slot j belongs to source s as
    its n-th slot of the epoch, and becomes that dataset's item ``e * c_s + n`` (``c_s`` slots
    per epoch), so every source also sees growing indices (new random patches, crops and
    augmentations every epoch).
    """

    def __init__(self, datasets: list[Dataset], *, sizes: list[float] | None = None,
                 weights: str = "size"):
        if not datasets:
            raise VolsegError("sources", "no training sources")
        self.datasets = list(datasets)
        self.length = int(sum(len(d) for d in datasets))
        if sizes is None:  # each item once per epoch (validation)
            sizes = [len(d) for d in datasets]
        share = np.asarray(sizes, dtype=float) if parse_weights(weights) == "size" \
            else np.ones(len(datasets))
        self.counts = _allocate(self.length, share / share.sum())
        source = np.repeat(np.arange(len(datasets)), self.counts)
        rank = np.concatenate([np.arange(c) for c in self.counts])
        # sources spread evenly over the epoch, so that the first items (validation takes
        # up to val_batches batches) cover every source
        order = np.argsort((rank + 0.5) / self.counts[source], kind="stable")
        self.slot_source, self.slot_rank = source[order], rank[order]

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int):
        epoch, j = divmod(int(i), self.length)
        s = int(self.slot_source[j])
        return self.datasets[s][epoch * int(self.counts[s]) + int(self.slot_rank[j])]

    @property
    def in_channels(self) -> int:
        return getattr(self.datasets[0], "in_channels", 1)


def _allocate(total: int, share: np.ndarray) -> np.ndarray:
    """``total`` slots split by ``share`` (largest remainder), at least one per source."""
    raw = share * total
    counts = np.maximum(np.floor(raw).astype(int), 1)
    while counts.sum() > total:  # the minimum of one slot each took slots from the largest
        counts[int(np.argmax(counts))] -= 1
    rest = int(total - counts.sum())
    for idx in np.argsort(-(raw - counts), kind="stable")[:rest]:
        counts[idx] += 1
    return counts


def _units(path: Path) -> list[_Unit]:
    from volseg.data.patchstore import PatchStore, is_patch_store

    if not path.exists():
        raise VolsegError(path, "does not exist; give patch stores or volumes")
    if not is_patch_store(path):
        return [_Unit(path, name=path.name, given=str(path))]
    prov = patch_sources(PatchStore.open(path))
    if prov is None:
        return [_Unit(path, name=path.name, given=str(path))]
    index, records = prov
    return [_Unit(path, indices=np.flatnonzero(index == s), name=f"{path.name}:{r.get('name', s)}",
                  part=s, given=str(path))
            for s, r in enumerate(records) if np.any(index == s)]


def _check_distinct(units: list[_Unit], val_units: list[_Unit]) -> None:
    """Refuse a source given twice (the same resolved path, symlinks and ``file://`` included):
    split by volume, its copies would land in validation and training at once."""
    seen: dict[tuple, tuple[_Unit, str]] = {}
    for unit, role in [(u, "training") for u in units] + [(u, "--val") for u in val_units]:
        first = seen.setdefault(unit.key(), (unit, role))
        if first[0] is unit:
            continue
        other, other_role = first
        what = "a training source" if role == other_role == "training" else \
            ("a --val source" if role == other_role else "both a training and a --val source")
        shown = f"{other.given}" + (f" ({other.name})" if other.part is not None else "")
        raise VolsegError(unit.given, f"is the same source as {shown}, given twice as {what}; "
                          "give each source once (its copies would be split into validation and "
                          "training at once, so the held-out score would not be held out)")


def _check_channels(units: list[_Unit], condition=None) -> None:
    from volseg.data.condition import refuse_condition
    from volseg.data.patchstore import PatchStore

    seen: tuple[Path, int] | None = None
    for unit in units:
        if unit.is_store:
            refuse_condition(unit.path, condition)
        channels = PatchStore.open(unit.path).channels if unit.is_store else 1 + len(condition or ())
        if seen is None:
            seen = (unit.path, channels)
        elif channels != seen[1]:
            raise VolsegError(unit.path, f"has {channels} channel(s) but {seen[0]} has {seen[1]}; "
                              "every training source needs the same channels")


def _size(unit: _Unit, patch) -> float:
    from volseg.data.patchstore import PatchStore
    from volseg.io import read_meta

    if unit.is_store:
        return float(len(unit.indices) if unit.indices is not None
                     else len(PatchStore.open(unit.path)))
    shape = read_meta(unit.path).shape
    box = patch if patch is not None else (64, 64, 64)
    return float(max(1, int(np.prod([max(1, s // b) for s, b in zip(shape, box)]))))


def _dataset(unit: _Unit, *, train: bool, common: dict, val_items: int):
    from volseg.data.augment import AugmentConfig
    from volseg.data.dataset import PatchStoreDataset, _volume_datasets
    from volseg.data.patchstore import PatchStore

    cfg = common["cfg"] if train else AugmentConfig(enabled=False)
    if unit.is_store:
        indices = unit.indices if unit.indices is not None \
            else np.arange(len(PatchStore.open(unit.path)))
        return PatchStoreDataset(unit.path, indices, task=common["task"], patch=common["patch"],
                                 augment=cfg if cfg.enabled else None, seed=common["seed"],
                                 train=train)
    ds, _ = _volume_datasets(unit.path, task=common["task"], patch=common["patch"],
                             val_fraction=0.0, seed=common["seed"], cfg=cfg,
                             samples=common["samples"], condition=common["condition"],
                             foreground_fraction=common["foreground_fraction"], label=unit.label)
    if not train:
        ds.fixed, ds.length = True, val_items
    return ds


def _pair_text(pair: Pair) -> str:
    return f"{pair.image},{pair.label}" if pair.label is not None else str(pair.image)


def make_training_datasets(sources: Sources | str | os.PathLike, *, task: str, patch=None,
                           val_fraction: float = 0.1, seed: int = 0, augment=None,
                           samples_per_epoch: int = 256, foreground_fraction: float = 0.5,
                           weights: str = "size", condition=None):
    """``(train_ds, val_ds or None)`` over one or many sources, validation split by volume.

    Parameters
    ----------
    sources : Sources or path
        Patch stores / volumes, image/label pairs, and explicit validation sources.
    task, patch, val_fraction, seed, augment, samples_per_epoch, foreground_fraction
        As :func:`volseg.data.dataset.make_datasets`; ``samples_per_epoch`` is per volume.
    weights : {"size", "equal"}
        How often each training source is drawn.
    condition : sequence of str, optional
        Images inside every volume stacked after its root image as channels (``data.condition``).
    """
    from volseg.data.augment import parse_augment
    from volseg.data.dataset import _parse_val_fraction, make_datasets

    if not isinstance(sources, Sources):
        sources = Sources(paths=[str(sources)])
    weights = parse_weights(weights)
    val_fraction = _parse_val_fraction(val_fraction)
    units = [u for p in sources.paths for u in _units(Path(p))]
    units += [_Unit(Path(p.image), label=p.label, name=p.name, given=_pair_text(p))
              for p in sources.pairs]
    val_units = [u for p in sources.val for u in _units(Path(p))]
    if not units:
        raise VolsegError("DATA", "missing; give patch stores or volumes, or --images/--labels, "
                          "or --list")
    _check_distinct(units, val_units)
    _check_channels(units + val_units, condition)
    if not val_units and len(units) == 1:  # one volume: the single-volume split
        return make_datasets(units[0].path, task=task, patch=patch, val_fraction=val_fraction,
                             seed=seed, augment=augment, samples_per_epoch=samples_per_epoch,
                             foreground_fraction=foreground_fraction, labels=units[0].label,
                             condition=condition)
    train_units = units
    if not val_units and val_fraction > 0:
        n_val = min(max(1, int(round(val_fraction * len(units)))), len(units) - 1)
        picked = set(np.random.default_rng(int(seed)).permutation(len(units))[:n_val].tolist())
        val_units = [u for i, u in enumerate(units) if i in picked]
        train_units = [u for i, u in enumerate(units) if i not in picked]
    common = dict(task=task, patch=patch, seed=seed, cfg=parse_augment(augment),
                  samples=samples_per_epoch, foreground_fraction=foreground_fraction or 0.0,
                  condition=condition)
    val_items = max(1, int(round(samples_per_epoch * max(val_fraction, 0.1))))
    train = SourceMix([_dataset(u, train=True, common=common, val_items=val_items)
                       for u in train_units], sizes=[_size(u, patch) for u in train_units],
                      weights=weights)
    train.sources = [u.name for u in train_units]
    if not val_units:
        return train, None
    val = SourceMix([_dataset(u, train=False, common=common, val_items=val_items)
                     for u in val_units], sizes=None)
    val.sources = [u.name for u in val_units]
    return train, val


__all__ = ["Sources", "SourceMix", "training_sources", "make_training_datasets", "parse_weights", "WEIGHTS"]
