"""Many labelled volumes: image/label pairs from folders or list files, and their provenance.

A *pair* is one image volume and its label volume (any input :func:`volseg.io.open_volume`
reads: TIFF, a folder of slice TIFFs, ``.npy``, NIfTI, Zarr/OME-Zarr). Pairs come from

* two folders (``--images DIR --labels DIR``), matched by file name without its suffix
  (``case7.tif`` with ``case7.tif``, ``case7.nii.gz`` with ``case7.zarr``); an image named in
  the nnU-Net way, ``case7_0000.nii.gz``, pairs with ``case7.nii.gz``. A name without a partner
  is an error that lists every unpaired name;
* a list file (``--list pairs.csv`` or ``pairs.yml``): CSV rows ``image,label`` (an optional
  header row ``image,label``) or a YAML list of ``{image: ..., label: ...}`` mappings; relative
  paths are relative to the list file.

:func:`patch_sources` reads the provenance of a patch store: a store written from several pairs
holds a ``sources`` (N,) int32 array (patch i came from pair ``sources[i]``) and the attribute
``volseg.sources`` listing each pair's image, label, shape and patch count.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from volseg.errors import VolsegError

_SUFFIXES = (".ome.zarr", ".nii.gz", ".zarr", ".tiff", ".tif", ".npy", ".nii")
_NNUNET_CHANNEL = re.compile(r"_\d{4}$")


@dataclass(frozen=True)
class Pair:
    """One labelled volume: ``name`` (the shared file stem), ``image`` and ``label`` paths."""

    name: str
    image: Path
    label: Path | None


def volume_stem(path: str | os.PathLike) -> str:
    """A volume's name without its format suffix (``a.nii.gz`` -> ``a``, ``b.ome.zarr`` -> ``b``)."""
    name = Path(path).name
    lower = name.lower()
    for suffix in _SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[:-len(suffix)]
    return name


def _entries(folder: Path, option: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise VolsegError(option, f"{folder} is not a folder of volumes")
    out: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        stem = volume_stem(path)
        if stem in out:
            raise VolsegError(path, f"has the same name as {out[stem].name}; keep one volume per name")
        out[stem] = path
    if not out:
        raise VolsegError(option, f"{folder} holds no volumes")
    return out


def pairs_from_dirs(images: str | os.PathLike, labels: str | os.PathLike) -> list[Pair]:
    """Pair the volumes of two folders by name (sorted by name).

    Raises
    ------
    VolsegError
        A folder is missing or empty, or some names have no partner (all of them are listed).
    """
    imgs, labs = _entries(Path(images), "--images"), _entries(Path(labels), "--labels")
    pairs, used = [], set()
    for stem, image in imgs.items():
        key = stem if stem in labs else _NNUNET_CHANNEL.sub("", stem)
        if key in labs and key not in used:
            used.add(key)
            pairs.append(Pair(key, image, labs[key]))
    only_images = [p.name for s, p in imgs.items() if all(q.image != p for q in pairs)]
    only_labels = [p.name for s, p in labs.items() if s not in used]
    if only_images or only_labels:
        parts = []
        if only_images:
            parts.append(f"images without labels: {', '.join(only_images)}")
        if only_labels:
            parts.append(f"labels without images: {', '.join(only_labels)}")
        raise VolsegError(f"{images} / {labels}", "names do not pair up (" + "; ".join(parts)
                          + "); pairs are matched by file name without its suffix")
    return pairs


def pairs_from_list(path: str | os.PathLike) -> list[Pair]:
    """Pairs listed in a CSV (``image,label`` rows) or YAML (list of mappings) file.

    Raises
    ------
    VolsegError
        Missing file, a malformed row, or a listed volume that does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise VolsegError(path, "does not exist; give a CSV or YAML list of image,label pairs")
    rows = _yaml_rows(path) if path.suffix.lower() in (".yml", ".yaml") else _csv_rows(path)
    if not rows:
        raise VolsegError(path, "lists no pairs")
    pairs = []
    for where, image, label in rows:
        image = _listed(path, image, where)
        label = None if label in (None, "") else _listed(path, label, where)
        pairs.append(Pair(volume_stem(image), image, label))
    names = [p.name for p in pairs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        pairs = [Pair(f"{i:04d}_{p.name}", p.image, p.label) for i, p in enumerate(pairs)]
    return pairs


def _csv_rows(path: Path) -> list[tuple[str, str, str | None]]:
    rows = []
    with open(path, newline="") as fh:
        for number, row in enumerate(csv.reader(fh), start=1):
            cells = [c.strip() for c in row]
            if not cells or not any(cells) or cells[0].startswith("#"):
                continue
            if number == 1 and cells[0].lower() == "image":
                continue
            if len(cells) > 2:
                raise VolsegError(path, f"line {number}: expected `image,label`, got {len(cells)} "
                                  "columns")
            rows.append((f"line {number}", cells[0], cells[1] if len(cells) > 1 else None))
    return rows


def _yaml_rows(path: Path) -> list[tuple[str, str, str | None]]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise VolsegError(path, f"is not valid YAML ({' '.join(str(exc).split())[:120]})") from None
    if isinstance(data, dict) and "pairs" in data:
        data = data["pairs"]
    if not isinstance(data, list):
        raise VolsegError(path, "expected a list of {image: ..., label: ...} entries")
    rows = []
    for i, entry in enumerate(data, start=1):
        if not isinstance(entry, dict) or "image" not in entry or set(entry) - {"image", "label"}:
            raise VolsegError(path, f"entry {i}: expected {{image: PATH, label: PATH}}, got {entry!r}")
        rows.append((f"entry {i}", str(entry["image"]), entry.get("label")))
    return rows


def _listed(list_file: Path, value, where: str) -> Path:
    path = Path(str(value)).expanduser()
    if not path.is_absolute():
        path = list_file.parent / path
    if not path.exists():
        raise VolsegError(list_file, f"{where}: {value} does not exist")
    return path


def source_key(path: str | os.PathLike) -> str:
    """Where a source lives, so that one volume given twice is recognised however it is written
    (``./``, ``..``, ``~``, symlinks, ``file://``, ``s3://b//k/``, default ports): the text of its
    :func:`volseg.io.identity.identity`, the same identity the output guards compare."""
    from volseg.io.identity import identity

    return str(identity(path))


def gather_pairs(*, images=None, labels=None, list_file=None) -> list[Pair]:
    """Pairs from ``--images``/``--labels`` folders or from ``--list`` (exactly one of the two)."""
    if list_file is not None:
        if images is not None or labels is not None:
            raise VolsegError("--list", "give either --list or --images/--labels, not both")
        return pairs_from_list(list_file)
    if (images is None) != (labels is None):
        raise VolsegError("--images" if images is None else "--labels",
                          "is missing; --images and --labels go together")
    if images is None:
        return []
    return pairs_from_dirs(images, labels)


def patch_sources(store) -> tuple[np.ndarray, list[dict]] | None:
    """``(sources (N,) int array, per-source records)`` of a patch store written from several
    pairs, or None for a store of one volume."""
    if "sources" not in store.group:
        return None
    records = list(store.attrs.get("sources") or [])
    index = np.asarray(store.group["sources"][:], dtype=np.int64)
    if index.shape != (len(store),) or (len(index) and (index.min() < 0 or index.max() >= len(records))):
        raise VolsegError(store.path, "has a `sources` array that does not match its patches or "
                          "its `sources` attribute; recreate it with `volseg patchify`")
    return index, records


__all__ = ["Pair", "volume_stem", "pairs_from_dirs", "pairs_from_list", "gather_pairs",
           "patch_sources", "source_key"]
