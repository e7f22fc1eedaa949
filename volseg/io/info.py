"""``volseg info``: what a volume is (shape, dtype, chunks, levels, spacing) and its value range.

The range is exact for volumes up to :data:`EXACT_BYTES`; for larger ones it is the range of
a fixed, evenly spread sample of chunks (``range_sampled: true``), so ``info`` stays quick on
a whole scroll.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

EXACT_BYTES = 256 * 2**20
SAMPLE_CHUNKS = 16


def volume_info(path, *, channel: int | None = None, exact_bytes: int = EXACT_BYTES,
                sample_chunks: int = SAMPLE_CHUNKS) -> dict:
    """Describe the volume at ``path`` as a JSON-ready dict.

    Returns
    -------
    dict
        ``path``, ``format``, ``shape`` (z, y, x), ``dtype``, ``chunks``, ``levels``,
        ``level_shapes`` (OME-Zarr), ``spacing`` (z, y, x), ``unit``, ``nbytes``, ``min``,
        ``max``, ``range_sampled`` (bool), ``sampled_chunks`` and ``labels`` (the first NGFF
        label image, or None); ``made_by`` for a prediction (what made it: model hash or
        provenance, patch, overlap, blend, TTA, input; :data:`MADE_BY_KEYS` for nnU-Net
        folders, :data:`RUN_MADE_BY_KEYS` and the volseg version for the others). ``min``/``max`` are None when no finite value was seen.

    Examples
    --------
    >>> import numpy as np
    >>> np.save("scan.npy", np.zeros((8, 16, 16), np.uint8))
    >>> info = volume_info("scan.npy")
    >>> info["shape"], info["dtype"]
    ([8, 16, 16], 'uint8')
    """
    import dask
    import dask.array as da

    from volseg.io.omezarr import find_labels
    from volseg.io.readers import _open

    from volseg.io.remote import is_url

    path = path if is_url(path) else Path(path)
    data, meta = _open(path, channel)
    nbytes = int(math.prod(meta.shape)) * meta.dtype.itemsize
    sampled = nbytes > exact_bytes
    if sampled:
        grid = data.numblocks
        picks = np.unique(np.linspace(0, math.prod(grid) - 1, max(1, sample_chunks)).round().astype(int))
        blocks = [data.blocks[tuple(int(i) for i in np.unravel_index(p, grid))] for p in picks]
        lows, highs = zip(*[_range(b) for b in blocks])
        low, high = dask.compute(da.stack(lows).min() if lows else None, da.stack(highs).max())
        used = len(blocks)
    else:
        low, high = dask.compute(*_range(data))
        used = int(math.prod(data.numblocks))
    labels = find_labels(path) if meta.format == "ome-zarr" and not is_url(path) else None
    return {"path": os.fspath(path), "format": meta.format, "shape": list(meta.shape),
            "dtype": meta.dtype.name, "chunks": list(meta.chunks), "levels": meta.levels,
            "level_shapes": _level_shapes(path, meta), "spacing": list(meta.spacing), "unit": meta.unit,
            "nbytes": nbytes, "min": _number(low), "max": _number(high), "range_sampled": bool(sampled),
            "sampled_chunks": used, "labels": os.fspath(labels) if labels else None,
            **_format_versions(path, meta), **_state(path), **_made_by(path, meta)}


#: The recorded settings of an nnU-Net prediction that ``info`` shows as ``made_by``.
MADE_BY_KEYS = ("model", "volume", "volume_stamp", "volume_shape", "volume_spacing", "label", "tta", "overlap",
                "blend", "patch", "crop_box", "normalization_stats", "spacing_policy", "volseg_version")
#: The same for a prediction of a volseg run, an export, a foreign ONNX file or an ensemble.
RUN_MADE_BY_KEYS = ("command", "kind", "model_sha256", "ensemble", "ensemble_mean", "volume", "volume_stamp",
                    "volume_shape", "patch", "overlap", "stride", "tta", "tta_rotate", "amp", "blend", "pad", "chunks",
                    "tile", "roi", "mask", "mask_level", "normalize", "activation", "nan_value", "samples", "output")


def _made_by(path, meta) -> dict:
    """``{"made_by": {...}}``: the provenance an nnU-Net prediction records (model, weights'
    sha256, folds, TTA, crop box, normalisation statistics, input, volseg version), else {}."""
    from volseg.errors import VolsegError
    from volseg.io.remote import open_node

    if meta.format != "ome-zarr":
        return {}
    try:
        attrs = open_node(path).attrs.asdict()
    except (VolsegError, OSError, ValueError, KeyError):  # a level array inside a group: nothing recorded
        return {}
    settings = (attrs.get("volseg") or {}).get("settings") if isinstance(attrs.get("volseg"), dict) else None
    if not isinstance(settings, dict):
        return {}
    if settings.get("kind") == "nnunet":
        return {"made_by": {k: settings[k] for k in MADE_BY_KEYS if k in settings}}
    if "model_sha256" not in settings and "ensemble" not in settings:
        return {}
    made = {k: settings[k] for k in RUN_MADE_BY_KEYS if k in settings}
    version = _recorded_version(path)
    if version:
        made["volseg_version"] = version
    return {"made_by": made}


def _recorded_version(path) -> str | None:
    """The volseg version named on the first line of the output's ``volseg-predict.yml``."""
    import re

    try:
        with open(os.path.join(os.fspath(path), "volseg-predict.yml"), encoding="utf-8") as fh:
            match = re.match(r"# volseg (\S+?):", fh.readline())
    except OSError:
        return None
    return match.group(1) if match else None


def _state(path) -> dict:
    """``{"state": "complete" | "412 of 512 chunks written"}`` for block-wise volseg outputs."""
    from volseg.io.completion import describe_completion

    state = describe_completion(path) if Path(path).is_dir() else None
    return {} if state is None else {"state": state}


def _range(arr):
    import dask.array as da

    if np.issubdtype(arr.dtype, np.floating):
        return da.nanmin(arr), da.nanmax(arr)
    return arr.min(), arr.max()


def _number(value):
    if value is None:
        return None
    value = np.asarray(value).item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _level_shapes(path, meta) -> list:
    if meta.format != "ome-zarr" or meta.levels <= 1:
        return [list(meta.shape)]
    from volseg.io.omezarr import _group_multiscales
    from volseg.io.remote import open_node

    group = open_node(path)
    if not hasattr(group, "keys"):  # one level of a pyramid (--level): its own shape
        return [list(meta.shape)]
    datasets = _group_multiscales(group.attrs.asdict())[0]["datasets"]
    return [list(group[d["path"]].shape)[-3:] for d in datasets]


def _format_versions(path, meta) -> dict:
    """``zarr_format`` (2 or 3) and ``ngff_version`` (e.g. "0.4") of a Zarr input, else None."""
    if meta.format not in ("zarr", "ome-zarr"):
        return {"zarr_format": None, "ngff_version": None}
    import zarr

    from volseg.io.omezarr import _group_multiscales
    from volseg.io.remote import open_node

    node = open_node(path)
    attrs = node.attrs.asdict() if isinstance(node, zarr.Group) else {}
    ome = attrs.get("ome") if isinstance(attrs.get("ome"), dict) else {}
    ms = _group_multiscales(attrs) or [{}]
    version = ome.get("version") or ms[0].get("version")
    return {"zarr_format": int(node.metadata.zarr_format), "ngff_version": version}
