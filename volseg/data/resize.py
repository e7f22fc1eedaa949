"""The whole-volume path of the original code: small volumes resized to one fixed shape.

For datasets of many small scans (BraTS style) every volume is resized to
``(depth, image_size, image_size)`` (z, y, x, voxels) instead of being cut into patches.
Images are interpolated (linear by default, anti-aliased when shrinking); labels use
nearest-neighbour (``order=0``) so their values stay valid.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from volseg.data.augment import augment as apply_augment
from volseg.data.augment import parse_augment
from volseg.data.sampling import item_rng
from volseg.errors import VolsegError
from volseg.geometry import parse_size3

VOLUME_SUFFIXES = (".npy", ".nii", ".nii.gz", ".tif", ".tiff")


def resize_3d(volume: np.ndarray, shape: Sequence[int], *, order: int = 1) -> np.ndarray:
    """Resize a 3D (z, y, x) array to ``shape`` with spline interpolation of ``order``.

    Parameters
    ----------
    volume : numpy.ndarray
        3D array.
    shape : sequence of 3 int
        Output (z, y, x) in voxels.
    order : int
        0 (nearest: labels, dtype kept) to 5; above 0 the result is float32 and shrinking is
        anti-aliased.

    Returns
    -------
    numpy.ndarray
    """
    from skimage.transform import resize

    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise VolsegError("volume", f"expected a 3D (z, y, x) array, got shape {volume.shape}")
    shape = parse_size3(shape, name="shape")
    if not isinstance(order, (int, np.integer)) or not 0 <= order <= 5:
        raise VolsegError("order", f"expected an interpolation order 0..5, got {order!r}")
    if tuple(volume.shape) == shape:
        return volume.copy() if order == 0 else volume.astype(np.float32)
    if order == 0:
        return resize(volume, shape, order=0, preserve_range=True, anti_aliasing=False).astype(volume.dtype)
    shrink = any(o < i for o, i in zip(shape, volume.shape))
    out = resize(volume.astype(np.float32), shape, order=int(order), preserve_range=True, anti_aliasing=shrink,
                 mode="edge")
    return out.astype(np.float32)


def _volume_files(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise VolsegError(folder, "is not a folder of volumes")
    files = {}
    for p in sorted(folder.iterdir()):
        name = p.name.lower()
        for suffix in VOLUME_SUFFIXES:
            if name.endswith(suffix):
                files[p.name[: -len(suffix)]] = p
                break
    return files


class VolumeFolderDataset(Dataset):
    """Small volumes in a folder, each resized to ``(depth, image_size, image_size)``.

    Parameters
    ----------
    images : str or os.PathLike
        Folder of volumes (``.npy``, ``.nii(.gz)``, ``.tif``), read with :func:`volseg.io.open_volume`.
    labels, targets : str or os.PathLike, optional
        Folders with a volume of the same name (without suffix) for each image: segmentation
        labels (resized nearest-neighbour) or translation targets.
    shape : (depth, image_size, image_size)
    augment : dict, optional
        Augmentation config (:func:`volseg.data.augment.parse_augment`); None: no augmentation.
    seed : int

    Items follow the dataset contract of :mod:`volseg.data.dataset`.
    """

    def __init__(self, images: str | os.PathLike, *, shape, labels=None, targets=None, augment=None, seed: int = 0):
        self.shape = parse_size3(shape, name="shape")
        self.images = _volume_files(Path(images))
        if not self.images:
            raise VolsegError(images, f"holds no volumes ({', '.join(VOLUME_SUFFIXES)})")
        self.names = sorted(self.images)
        self.extra: dict[str, dict[str, Path]] = {}
        for key, folder in (("label", labels), ("target", targets)):
            if folder is None:
                continue
            found = _volume_files(Path(folder))
            missing = [n for n in self.names if n not in found]
            if missing:
                raise VolsegError(folder, f"has no {key} for {missing[:3]}; every image needs one of the same name")
            self.extra[key] = found
        self.augment = None if augment is None else parse_augment(augment)
        self.seed = int(seed)
        self.in_channels = 1

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        from volseg.io import open_volume

        i = int(i)
        name = self.names[i % len(self.names)]
        sample = {"image": resize_3d(open_volume(self.images[name]).compute(), self.shape, order=1)[None]}
        if "label" in self.extra:
            lab = open_volume(self.extra["label"][name]).compute()
            sample["label"] = resize_3d(lab.astype(np.uint8), self.shape, order=0)[None]
        if "target" in self.extra:
            sample["target"] = resize_3d(open_volume(self.extra["target"][name]).compute(), self.shape, order=1)[None]
        if self.augment is not None and self.augment.enabled:
            sample = apply_augment(sample, self.augment, item_rng(self.seed, 4, i))
        out = {"image": torch.from_numpy(np.ascontiguousarray(sample["image"], dtype=np.float32))}
        if "label" in sample:
            out["label"] = torch.from_numpy(np.ascontiguousarray(sample["label"], dtype=np.uint8))
        if "target" in sample:
            out["target"] = torch.from_numpy(np.ascontiguousarray(sample["target"], dtype=np.float32))
        return out
