"""OME-Zarr (NGFF 0.5, Zarr v3) image groups: read level 0, write images, pyramids and labels.

Layout written by :func:`write_volume`::

    OUT.zarr/            zarr.json: attributes {"ome": {"version": "0.5", "multiscales": [...]}}
      0/                 level 0, (z, y, x), chunks (128, 128, 128) by default
      1/ ...             level k: 2x smaller than level k-1 in every axis (ceil), optional
      labels/<name>/     NGFF label images (uint8), see :func:`write_label_image`

Axes are ``z, y, x`` of type ``space`` (with the unit when known); dataset ``k`` carries a
``scale`` transform ``spacing * 2**k`` (z, y, x). Pyramid levels are computed from the level
written before: intensities by the **mean** of each 2x2x2 block (rounded back to integers for
integer dtypes; the odd edge replicated) plus the half-voxel ``translation`` this implies, label
images by **nearest** (every 2nd voxel, ``[::2, ::2, ::2]``), so label values stay valid.
Plain Zarr v2/v3 arrays and NGFF 0.4 (Zarr v2) groups are read as well.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from volseg.errors import VolsegError
from volseg.io.checked import checked
from volseg.parallel import Execution
from volseg.io.atomic import atomic_dir, check_output, is_empty_dir, remove_path
from volseg.io.volmeta import VolumeMeta, native_dtype, squeeze_channel
from volseg.io.streaming import (as_dask3d, cast_checked, downsample, parse_chunks,
                                parse_dtype, parse_levels, parse_spacing, parse_unit, store_blocks)

NGFF_VERSION = "0.5"
LABEL_COLORS = {1: [255, 200, 0, 255], 2: [128, 128, 128, 255]}


# ----------------------------------------------------------------------------------------- read
def _group_multiscales(attrs) -> list | None:
    ome = attrs.get("ome")
    if isinstance(ome, dict) and ome.get("multiscales"):
        return ome["multiscales"]
    return attrs.get("multiscales") or None


def open_zarr(path: str | os.PathLike, *, channel: int | None = None):
    """Open a Zarr array or OME-Zarr image group (level 0) as ``(dask array (z, y, x), VolumeMeta)``."""
    import dask.array as da
    import zarr

    from volseg.io.levels import dataset_context
    from volseg.io.remote import is_url, open_node

    path = path if is_url(path) else Path(path)
    node = open_node(path)
    spacing, unit, levels, fmt, axes = (1.0, 1.0, 1.0), None, 1, "zarr", None
    if isinstance(node, zarr.Group):
        multiscales = _group_multiscales(node.attrs.asdict())
        if not multiscales:
            members = [] if is_url(path) else sorted(node.keys())[:6]
            hint = f" (it holds {', '.join(members)}; pass one of those, e.g. {path / members[0]})" if members else ""
            raise VolsegError(path, f"is a Zarr group, not an image (no OME 'multiscales' metadata){hint}")
        ms = multiscales[0]
        datasets = ms.get("datasets") or []
        if not datasets:
            raise VolsegError(path, "has OME 'multiscales' metadata without datasets")
        try:
            arr = node[datasets[0]["path"]]
        except KeyError:
            raise VolsegError(path, f"names level {datasets[0]['path']!r}, which is missing") from None
        except VolsegError:  # a remote fault already named its URL (retries spent, 403, ...)
            raise
        except Exception as exc:  # damaged array metadata: truncated JSON, negative shape, bad dtype
            raise VolsegError(f"{os.fspath(path).rstrip('/')}/{datasets[0]['path']}", f"has damaged array metadata "
                              f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]}); restore it "
                              "or write the volume again") from None
        axes = [a if isinstance(a, dict) else {"name": a} for a in ms.get("axes") or []]
        spacing, unit = _spacing_unit(ms, datasets[0], axes)
        levels, fmt = len(datasets), "ome-zarr"
    else:
        arr = node
        context = dataset_context(path)  # a pyramid level (--level): the group's spacing
        if context is not None:
            ms, ds, levels, _ = context
            axes = [a if isinstance(a, dict) else {"name": a} for a in ms.get("axes") or []]
            spacing, unit = _spacing_unit(ms, ds, axes)
            fmt = "ome-zarr"
    data = _checked_dask(arr, path)
    index = _axis_index(path, arr.shape, axes, channel)
    data = data[index]
    if data.dtype.byteorder not in ("=", "|"):
        data = data.astype(data.dtype.newbyteorder("="))
    chunks = tuple(int(c[0]) if len(c) else 0 for c in data.chunks)
    meta = VolumeMeta(shape=tuple(int(s) for s in data.shape), dtype=native_dtype(data.dtype), chunks=chunks,
                      spacing=spacing, unit=unit, levels=levels, format=fmt)
    return data, meta


def _checked_dask(arr, path):
    import dask.array as da
    from dask.base import tokenize

    meta_file = next((Path(path, n) for n in ("zarr.json", ".zarray") if Path(path, n).exists()), None)
    stamp = os.stat(meta_file).st_mtime_ns if meta_file is not None else None
    name = "volseg-zarr-" + tokenize(os.path.abspath(path), str(arr.path), arr.shape, str(arr.dtype),
                                     arr.chunks, stamp)
    return da.from_array(checked(arr, path), chunks=arr.chunks, name=name, lock=False,
                         asarray=False, fancy=False, meta=np.empty((0,) * arr.ndim, dtype=arr.dtype))


def _axis_index(path, shape, axes, channel):
    """The index that selects the (z, y, x) volume from an array with optional c/t axes."""
    if axes is None or len(axes) != len(shape):
        shape3, index = squeeze_channel(path, shape, channel, 0, "(c, z, y, x)")
        return (index,) if index is not None else (slice(None),) * 3
    space = [i for i, a in enumerate(axes) if a.get("type") == "space" or a.get("name") in ("z", "y", "x")]
    if len(space) != 3:
        raise VolsegError(path, f"has {len(space)} spatial axes; a 3D (z, y, x) image is needed")
    index = []
    for i, a in enumerate(axes):
        n = int(shape[i])
        if i in space:
            index.append(slice(None))
        elif a.get("type") == "channel" or a.get("name") == "c":
            if channel is None and n > 1:
                raise VolsegError(path, f"has {n} channels; choose one with --channel 0..{n - 1}")
            if channel is not None and not 0 <= channel < n:
                raise VolsegError("--channel", f"{channel} is out of range for {path}: use 0..{n - 1}")
            index.append(channel or 0)
        elif n == 1:
            index.append(0)
        else:
            raise VolsegError(path, f"has a non-spatial axis {a.get('name')!r} of size {n}; only 3D images are supported")
    return tuple(index)


def _spacing_unit(ms, dataset, axes):
    scale = None
    for transforms in (dataset.get("coordinateTransformations"), ms.get("coordinateTransformations")):
        for t in transforms or []:
            if t.get("type") == "scale" and t.get("scale"):
                s = [float(v) for v in t["scale"]]
                scale = s if scale is None else [a * b for a, b in zip(scale, s)]
    space = [i for i, a in enumerate(axes) if a.get("type") == "space" or a.get("name") in ("z", "y", "x")]
    spacing = (1.0, 1.0, 1.0)
    if scale is not None and len(space) == 3 and len(scale) == len(axes):
        spacing = tuple(scale[i] for i in space)
    units = [axes[i].get("unit") for i in space] if len(space) == 3 else []
    return spacing, (units[0] if units and units[0] else None)


# ---------------------------------------------------------------------------------------- write
def quiet_default(execution: Execution | None) -> Execution:
    """``execution``, or for None the writers' defaults: threads on every core, no overwrite and
    no progress bar."""
    return execution if execution is not None else Execution.parse(quiet=True)


def multiscales_metadata(levels: int, spacing, unit, *, name: str = "image", method: str = "mean") -> dict:
    """The NGFF 0.5 ``multiscales`` entry for ``levels`` datasets ``0..levels-1`` (z, y, x)."""
    axes = [dict(name=a, type="space", **({"unit": unit} if unit else {})) for a in "zyx"]
    datasets = []
    for k in range(levels):
        transforms = [{"type": "scale", "scale": [float(s) * 2**k for s in spacing]}]
        if method == "mean" and k:
            transforms.append({"type": "translation", "translation": [float(s) * (2**k - 1) / 2 for s in spacing]})
        datasets.append({"path": str(k), "coordinateTransformations": transforms})
    how = "mean of 2x2x2 blocks" if method == "mean" else "nearest (every 2nd voxel)"
    return {"name": name, "axes": axes, "datasets": datasets, "type": method,
            "metadata": {"method": f"volseg: {how}"}}


def write_volume(path, data, *, chunks=128, levels=1, spacing=None, unit=None, dtype=None,
                 execution: Execution | None = None) -> Path:
    """Write a 3D (z, y, x) array as an OME-Zarr image group at ``path``, atomically, streamed.

    Parameters
    ----------
    path : str or os.PathLike
        Output group (e.g. ``out.zarr``, or ``scan.zarr/target`` inside a group being built).
    data : numpy.ndarray or dask.array.Array
        3D (z, y, x). Dask arrays are computed block by block: memory stays bounded by a few
        blocks of whole output chunks, never the volume.
    chunks : int or tuple of 3 int
        Chunk shape (z, y, x) in voxels; an int means a cube. Clipped to the shape.
    levels : int
        Resolution levels (1 = no pyramid). Level k is the 2x2x2 mean of level k-1.
    spacing : tuple of 3 float, optional
        Voxel size (z, y, x) in ``unit``; default 1.0.
    unit : str, optional
        NGFF space unit (``micrometer``, ``millimeter``, ``nanometer``, ...; ``um``/``mm`` accepted).
    dtype : str or numpy.dtype, optional
        Output dtype (None or ``"keep"``: the input's). Values are checked to fit while writing.
    execution : volseg.parallel.Execution, optional
        Dask scheduler (threads, processes, synchronous, distributed, tcp://...), worker count,
        ``overwrite`` (replace an existing ``path``; otherwise it is an error and ``path`` is left
        untouched) and ``quiet`` (hide the progress bar). None: threads on every core, no
        overwrite, quiet.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    return write_image(path, data, chunks=chunks, levels=levels, spacing=spacing, unit=unit,
                       dtype=dtype, execution=execution)


def write_image(path, data, *, chunks=128, levels=1, spacing=None, unit=None, dtype=None,
                execution: Execution | None = None, method="mean", ome=None, attrs=None,
                description="writing") -> Path:
    """:func:`write_volume` with the pyramid ``method`` ('mean' or 'nearest'), extra ``ome``
    metadata (e.g. ``image-label``; its ``name`` names the multiscale, default the path's stem)
    and ``volseg`` group attributes. Every level is written in one executor of ``execution``
    (one process pool or cluster for all levels)."""
    import zarr

    execution = quiet_default(execution)
    overwrite = execution.overwrite
    extra = dict(ome or {})
    name = extra.pop("name", None)
    path = Path(path)
    chunks, levels = parse_chunks(chunks), parse_levels(levels)
    spacing, unit = parse_spacing(spacing), parse_unit(unit)
    arr = as_dask3d(path, data, chunks)
    target = parse_dtype(dtype, arr.dtype)
    arr = cast_checked(arr, target)
    check_output(path, overwrite=overwrite)
    with atomic_dir(path, overwrite=overwrite) as tmp, execution.executor() as executor:
        root = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        src = arr
        for level in range(levels):
            if level:
                src = downsample(root[str(level - 1)], method=method)
            level_chunks = tuple(max(1, min(c, s)) for c, s in zip(chunks, src.shape))
            out = root.create_array(str(level), shape=src.shape, chunks=level_chunks, dtype=src.dtype,
                                    fill_value=0, dimension_names=("z", "y", "x"))
            label = description if levels == 1 else f"{description} level {level}"
            store_blocks(src, out, executor=executor, description=label)
        meta = {"version": NGFF_VERSION,
                "multiscales": [multiscales_metadata(levels, spacing, unit, name=name or path.stem, method=method)]}
        meta.update(extra)
        root.attrs.update({"ome": meta, **({"volseg": attrs} if attrs else {})})
    return path


def create_volume(path, *, shape, dtype, chunks=128, spacing=None, unit=None, attrs=None,
                  fill_value=0, overwrite=False, exist_ok=False):
    """Create an OME-Zarr image group with an empty level-0 array and return that array.

    Not atomic: for block-wise writers (predict, stitch) that keep their own completion markers
    and fill the array chunk by chunk. ``attrs`` go into the group attributes under ``"volseg"``.

    Parameters
    ----------
    shape : tuple of 3 int
        (z, y, x) in voxels.
    exist_ok : bool
        Reopen an existing group whose level 0 has the same shape and dtype (to resume) and
        return its array; ``attrs`` then update the ``volseg`` attributes.
    overwrite : bool
        Remove an existing ``path`` first. Without ``overwrite``/``exist_ok`` it is an error.

    Returns
    -------
    zarr.Array
        Level 0, (z, y, x), filled with ``fill_value`` until written.
    """
    import zarr

    path = Path(path)
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise VolsegError(path, f"shape must be 3 positive sizes (z, y, x), got {shape}")
    dtype = np.dtype(dtype).newbyteorder("=")
    chunks, spacing, unit = parse_chunks(chunks), parse_spacing(spacing), parse_unit(unit)
    if path.exists() and not is_empty_dir(path):
        if exist_ok:
            return _reopen(path, shape, dtype, attrs)
        check_output(path, overwrite=overwrite)
        remove_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    root = zarr.open_group(str(path), mode="w", zarr_format=3)
    arr = root.create_array("0", shape=shape, dtype=dtype, fill_value=fill_value,
                            chunks=tuple(min(c, s) for c, s in zip(chunks, shape)),
                            dimension_names=("z", "y", "x"))
    ome = {"version": NGFF_VERSION, "multiscales": [multiscales_metadata(1, spacing, unit, name=path.stem)]}
    root.attrs.update({"ome": ome, **({"volseg": dict(attrs)} if attrs else {})})
    return arr


def _reopen(path, shape, dtype, attrs):
    import zarr

    try:
        root = zarr.open_group(str(path), mode="r+")
        arr = root["0"]
    except Exception:
        raise VolsegError(path, "exists but is not a volseg image group; pass --overwrite to replace it") from None
    if tuple(arr.shape) != shape or np.dtype(arr.dtype) != dtype:
        raise VolsegError(path, f"exists with shape {tuple(arr.shape)} {arr.dtype}, not {shape} {dtype}; "
                          "pass --overwrite to replace it")
    if attrs:
        merged = dict(root.attrs.get("volseg") or {})
        merged.update(attrs)
        root.attrs["volseg"] = merged
    return arr


def write_label_image(image_group, name, data, *, chunks=128, levels=None, colors=None,
                      execution: Execution | None = None) -> Path:
    """Write an NGFF label image (uint8) at ``<image_group>/labels/<name>`` and register it.

    The label image gets the image's spacing/unit and (by default) as many levels, downsampled
    by nearest so values stay valid; ``colors`` maps label value -> RGBA (default 1 = surface
    yellow, 2 = ignore grey). ``<image_group>/labels`` lists it under ``ome.labels``.
    Values outside 0..255 are an error. ``execution`` as for :func:`write_volume`.
    """
    import zarr

    group = Path(image_group)
    spacing, unit, n_levels = None, None, 1
    if (group / "zarr.json").exists() or (group / ".zattrs").exists():
        meta = open_zarr(group)[1]
        if tuple(meta.shape) != tuple(int(s) for s in data.shape):
            raise VolsegError(group / "labels" / name, f"label shape {tuple(data.shape)} differs from the "
                              f"image shape {meta.shape}")
        spacing, unit, n_levels = meta.spacing, meta.unit, meta.levels
    labels_dir = group / "labels"
    if not (labels_dir / "zarr.json").exists():
        zarr.open_group(str(labels_dir), mode="a", zarr_format=3)
    colors = colors or LABEL_COLORS
    image_label = {"colors": [{"label-value": int(k), "rgba": list(v)} for k, v in sorted(colors.items())],
                   "source": {"image": "../../"}}
    out = write_image(labels_dir / name, data, chunks=chunks, levels=levels or n_levels, spacing=spacing,
                      unit=unit, dtype=np.uint8, execution=execution, method="nearest",
                      ome={"name": name, "image-label": image_label}, description=f"writing labels/{name}")
    lab = zarr.open_group(str(labels_dir), mode="r+")
    ome = dict(lab.attrs.get("ome") or {})
    names = [n for n in ome.get("labels", []) if n != name] + [name]
    lab.attrs["ome"] = {"version": NGFF_VERSION, "labels": names}
    return out


def find_labels(path) -> Path | None:
    """The first registered NGFF label image of an image group (``X.zarr/labels/<name>``), or None."""
    import zarr

    labels_dir = Path(path) / "labels"
    if not labels_dir.is_dir():
        return None
    try:
        attrs = zarr.open_group(str(labels_dir), mode="r").attrs.asdict()
    except Exception:
        return None
    names = (attrs.get("ome") or {}).get("labels") or attrs.get("labels") or []
    for n in names:
        if (labels_dir / n).is_dir():
            return labels_dir / n
    return None
