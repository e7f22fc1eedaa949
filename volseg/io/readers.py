"""Open any supported volume as a lazy, chunked Dask array in (z, y, x) order.

Supported inputs (see :func:`open_volume`):

* multi-page TIFF (``.tif``/``.tiff``) through tifffile's Zarr interface: only the pages a
  chunk needs are decoded, never the whole file;
* a folder of 2D slice TIFFs, sorted naturally (``slice_2`` before ``slice_10``);
* ``.npy`` (memory-mapped, ``allow_pickle=False``); 4D arrays are (c, z, y, x);
* NIfTI ``.nii``/``.nii.gz`` via nibabel. NIfTI stores (x, y, z[, t/c]) with x fastest; volseg
  transposes to (z, y, x) and reverses the header zooms into the (z, y, x) spacing, so
  ``open_volume(p)[z, y, x] == nibabel.load(p).dataobj[x, y, z]``;
* Zarr v2/v3 arrays and OME-Zarr image groups (level 0, spacing from the scale transforms),
  including sub-paths such as ``scroll.zarr/labels/surface``.

File-backed sources are small picklable objects that reopen their file lazily in each process,
so the arrays work on the threads, processes and distributed schedulers alike. Values and dtype
are kept exactly; big-endian data is returned in native byte order.
"""

from __future__ import annotations

import math
import os
import threading
from pathlib import Path

import numpy as np

from volseg.errors import VolsegError
from volseg.io.volmeta import VolumeMeta, native_dtype, squeeze_channel

__all__ = ["VolumeMeta", "native_dtype", "open_volume", "read_meta", "detect_format", "file_chunks"]

TIFF_SUFFIXES = (".tif", ".tiff")
SUPPORTED = ".tif/.tiff, a folder of .tif slices, .npy, .nii/.nii.gz, or a .zarr (OME-)Zarr"
_CHUNK_TARGET = 64 * 2**20  # bytes per chunk of a file-backed (non-Zarr) source


def open_volume(path: str | os.PathLike, *, channel: int | None = None, level: int | None = None,
                storage_options: dict | None = None):
    """Open a volume lazily as a 3D Dask array in (z, y, x) order (level 0 of a pyramid).

    Parameters
    ----------
    path : str or os.PathLike
        Any supported input (see the module docstring).
    channel : int, optional
        The channel to take from a 4D input (4D NIfTI, (c, z, y, x) npy/Zarr, multi-channel
        OME-Zarr or TIFF). Required when the input has more than one channel.
    level : int, optional
        Pyramid level of an OME-Zarr image (0 = full resolution), with that level's spacing.
    storage_options : dict, optional
        fsspec options for a URL (``http(s)://``, ``s3://``, ``gs://``, ``file://``); see
        :mod:`volseg.io.remote`. They are set for this process and its workers.

    Returns
    -------
    dask.array.Array
        3D, chunked, nothing read yet.

    Raises
    ------
    VolsegError
        Missing path, unsupported suffix, 2D image, empty folder, mixed slice shapes, corrupt
        file, 4D input without ``channel``, a Zarr group that is not an image.
    """
    return _open(_locate(path, level, storage_options), channel)[0]


def read_meta(path: str | os.PathLike, *, channel: int | None = None, level: int | None = None,
              storage_options: dict | None = None) -> VolumeMeta:
    """Describe a volume (shape, dtype, chunks, spacing, unit, levels, format) without reading
    voxels; ``level`` and ``storage_options`` as in :func:`open_volume`."""
    return _open(_locate(path, level, storage_options), channel)[1]


def _locate(path, level, storage_options):
    """The path (or URL) of the requested pyramid level."""
    if storage_options is not None:
        from volseg.io.remote import configure

        configure(storage_options=storage_options)
    if level is None:
        return path
    from volseg.io.levels import resolve_level

    return resolve_level(path, level)


def _open(path, channel, chunks=None):
    """(dask array, VolumeMeta); ``chunks(shape, dtype) -> tuple`` overrides the Dask chunks of
    file-backed sources (prepare reads whole write blocks directly, without a rechunk)."""
    from volseg.io.remote import is_url

    if is_url(path):
        from volseg.io.omezarr import open_zarr

        return _usable(path, *open_zarr(path, channel=channel))
    path = Path(path)
    if not path.exists():
        raise VolsegError(path, "does not exist; check the path")
    if not path.is_dir() and not path.is_file():
        raise VolsegError(path, "is not a regular file (a FIFO, socket or device); give a volume file "
                          "or folder")
    kind = detect_format(path)
    if kind in ("zarr", "ome-zarr"):
        from volseg.io.omezarr import open_zarr

        return _usable(path, *open_zarr(path, channel=channel))
    opener = {"tiff": _TiffSource.open, "tiff-folder": _FolderSource.open,
              "npy": _NpySource.open, "nifti": _NiftiSource.open}[kind]
    source, spacing, unit = opener(path, channel)
    default = file_chunks(source.shape, source.dtype)
    arr = _to_dask(source, tuple(chunks(source.shape, source.dtype)) if chunks else default)
    meta = VolumeMeta(shape=tuple(arr.shape), dtype=native_dtype(arr.dtype), chunks=default,
                      spacing=tuple(float(s) for s in spacing), unit=unit, levels=1, format=kind)
    return _usable(path, arr, meta)


def _usable(path, arr, meta: VolumeMeta):
    """``(arr, meta)`` of a volume every command can process: real numbers (bool, integers,
    floats) and at least one voxel along every axis; otherwise a :class:`VolsegError`."""
    if meta.dtype.kind not in "biuf":
        raise VolsegError(path, f"has dtype {meta.dtype}; volseg reads real numbers (bool, integers, "
                          "floats): convert it, e.g. to float32 of its magnitude or real part")
    if min(meta.shape) < 1:
        raise VolsegError(path, f"is empty (shape {'x'.join(map(str, meta.shape))}); a volume needs at "
                          "least one voxel along every axis (z, y, x)")
    return arr, meta


def detect_format(path: Path) -> str:
    """The input kind of an existing path, from its suffix or (for folders) its contents."""
    name = path.name.lower()
    if path.is_dir():
        if any((path / f).exists() for f in ("zarr.json", ".zarray", ".zgroup")):
            return "zarr"
        entries = [p for p in path.iterdir() if not p.name.startswith(".")]
        if not entries:
            raise VolsegError(path, "is an empty folder; expected 2D slice TIFFs or a Zarr store")
        if any(p.suffix.lower() in TIFF_SUFFIXES for p in entries):
            return "tiff-folder"
        raise VolsegError(path, f"is a folder without .tif slices or Zarr metadata; expected {SUPPORTED}")
    if name.endswith(TIFF_SUFFIXES):
        return "tiff"
    if name.endswith(".npy"):
        return "npy"
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    raise VolsegError(path, f"unsupported input {path.suffix or 'without suffix'!r}; expected {SUPPORTED}")


def file_chunks(shape, dtype) -> tuple:
    """Chunks for a file-backed volume: whole slices, a power-of-two number of them per chunk
    (at most 128, about 64 MiB), or bands of rows when one slice alone is larger than that."""
    z, y, x = shape
    itemsize = np.dtype(dtype).itemsize
    slice_bytes = max(1, y * x * itemsize)
    if slice_bytes >= _CHUNK_TARGET:
        rows = max(1, _CHUNK_TARGET // max(1, x * itemsize))
        return (1, min(y, rows), x)
    depth = 2 ** int(math.log2(max(1, _CHUNK_TARGET // slice_bytes)))
    return (min(z, depth, 128) or 1, y, x)


def _to_dask(source, chunks):
    import dask.array as da
    from dask.base import tokenize

    name = "volseg-" + tokenize(type(source).__name__, source.token(), chunks)
    return da.from_array(source, chunks=chunks, name=name, lock=False, asarray=False,
                         fancy=False, meta=np.empty((0, 0, 0), dtype=source.dtype))


class _Source:
    """A picklable, lazily (re)opened 3D view of a file: ``shape``, ``dtype``, ``source[key]``."""

    ndim = 3

    def __init__(self, path, shape, dtype, **opts):
        self.path = str(path)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype).newbyteorder("=")
        self.opts = opts
        self._handle = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_handle"] = None
        return state

    def token(self):
        st = os.stat(self.path)
        return (self.path, st.st_mtime_ns, st.st_size, self.shape, str(self.dtype), sorted(self.opts.items()))

    def __getitem__(self, key):
        key = tuple(key) + (slice(None),) * (3 - len(tuple(key)))
        try:
            out = self._read(key)
        except VolsegError:
            raise
        except Exception as exc:  # corrupt or truncated data found while reading
            raise VolsegError(self.path, f"cannot be read ({type(exc).__name__}: {exc})") from None
        return np.ascontiguousarray(out, dtype=self.dtype)


class _TiffSource(_Source):
    """A multi-page TIFF read through tifffile's Zarr store (chunks = pages or strips/tiles)."""

    @classmethod
    def open(cls, path, channel):
        import tifffile

        try:
            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                unshaped = len(tif.series) > 1 and len(tif.pages) > 1
            if unshaped:  # pages written one by one: treat all uniform pages as one stack
                with tifffile.TiffFile(path, is_shaped=False, is_ome=False, is_imagej=False) as tif:
                    series = tif.series[0]
            shape, axes, dtype = tuple(series.shape), series.axes, series.dtype
        except Exception as exc:
            raise VolsegError(path, f"is not a readable TIFF ({type(exc).__name__}: {exc})") from None
        keep = [i for i, s in enumerate(shape) if s != 1]
        axes_kept = "".join(axes[i] for i in keep)
        shape_kept = tuple(shape[i] for i in keep)
        spatial = [a for a in axes_kept if a not in "CS"]
        if len(spatial) < 3:
            raise VolsegError(path, f"is a 2D image (shape {shape}, axes {axes}); a 3D stack of pages is needed")
        ch_axis = next((k for k, a in enumerate(axes_kept) if a in "CS"), 0)
        shape3, index = squeeze_channel(path, shape_kept, channel, ch_axis, "a channel axis")
        return cls(path, shape3, dtype, full_shape=shape, keep=tuple(keep), ch_axis=ch_axis,
                   channel=index, unshaped=unshaped), (1.0, 1.0, 1.0), None

    def _array(self):
        if self._handle is None:
            import tifffile
            import zarr

            flags = {"is_shaped": False, "is_ome": False, "is_imagej": False} if self.opts["unshaped"] else {}
            tif = tifffile.TiffFile(self.path, **flags)
            self._handle = zarr.open(tif.series[0].aszarr(level=0), mode="r")
        return self._handle

    def _read(self, key):
        # One z plane at a time: only one decoded page (or its strips/tiles) is held at once.
        keep, ch_axis, channel = self.opts["keep"], self.opts["ch_axis"], self.opts["channel"]
        zs, ys, xs = key
        size = [len(range(*k.indices(n))) for k, n in zip(key, self.shape)]
        out = np.empty(size, dtype=self.dtype)
        for i, z in enumerate(range(*zs.indices(self.shape[0]))):
            kept_key = [z, ys, xs]
            if channel is not None and len(keep) == 4:
                kept_key.insert(ch_axis, channel)
            full = [0] * len(self.opts["full_shape"])
            for axis, k in zip(keep, kept_key):
                full[axis] = k
            out[i] = self._array()[tuple(full)]
        return out


class _FolderSource(_Source):
    """A folder of 2D TIFF slices in natural order; one file per z index."""

    @classmethod
    def open(cls, path, channel):
        import tifffile
        from natsort import natsorted

        files = natsorted((p for p in path.iterdir() if p.suffix.lower() in TIFF_SUFFIXES
                           and not p.name.startswith(".")), key=lambda p: p.name)
        first = None
        for f in files:
            try:
                with tifffile.TiffFile(f) as tif:
                    s = tif.series[0]
                    shape, dtype = tuple(d for d in s.shape if d != 1) or (1,), s.dtype
            except Exception as exc:
                raise VolsegError(f, f"is not a readable TIFF ({type(exc).__name__}: {exc})") from None
            if len(shape) != 2:
                raise VolsegError(f, f"is not a 2D slice (shape {shape}); a folder must hold one 2D TIFF per z")
            if first is None:
                first = (shape, np.dtype(dtype), f)
            elif (shape, np.dtype(dtype)) != first[:2]:
                raise VolsegError(f, f"has shape {shape} {np.dtype(dtype)} but {first[2].name} has "
                                  f"{first[0]} {first[1]}; all slices must match")
        if channel not in (None, 0):
            raise VolsegError("--channel", f"{path} has no channel axis; drop --channel")
        return cls(path, (len(files),) + first[0], first[1],
                   files=tuple(str(f) for f in files)), (1.0, 1.0, 1.0), None

    def token(self):
        files = self.opts["files"]
        return (self.path, len(files), files[0], files[-1], os.stat(files[-1]).st_mtime_ns, self.shape)

    def _read(self, key):
        import tifffile

        zs, ys, xs = key
        files = self.opts["files"][zs]
        rows, cols = (len(range(*k.indices(n))) for k, n in zip((ys, xs), self.shape[1:]))
        out = np.empty((len(files), rows, cols), dtype=self.dtype)
        for i, f in enumerate(files):
            try:
                page = tifffile.imread(f).reshape(self.shape[1:])
            except Exception as exc:
                raise VolsegError(f, f"cannot be read ({type(exc).__name__}: {exc})") from None
            out[i] = page[ys, xs]
        return out


#: np.load parses a .npy header with ast.literal_eval, and CPython before 3.11.8 / 3.12.1 keeps
#: the AST constructor's recursion depth in one counter for all threads (gh-106905): two worker
#: threads opening a .npy at once could fail with "AST constructor recursion depth mismatch".
_NPY_HEADER_LOCK = threading.Lock()


def _load_npy(path):
    with _NPY_HEADER_LOCK:
        return np.load(path, mmap_mode="r", allow_pickle=False)


class _NpySource(_Source):
    """A ``.npy`` file, memory-mapped (never unpickled); 4D arrays are (c, z, y, x)."""

    @classmethod
    def open(cls, path, channel):
        try:
            arr = _load_npy(path)
        except Exception as exc:
            raise VolsegError(path, f"is not a readable .npy array ({type(exc).__name__}: {exc})") from None
        if arr.dtype.hasobject or arr.dtype.fields is not None:
            raise VolsegError(path, f"has dtype {arr.dtype}; a plain numeric array is needed")
        shape3, index = squeeze_channel(path, arr.shape, channel, 0, "(c, z, y, x)")
        return cls(path, shape3, arr.dtype, channel=index), (1.0, 1.0, 1.0), None

    def _read(self, key):
        if self._handle is None:
            self._handle = _load_npy(self.path)
        arr = self._handle
        if self.opts["channel"] is not None:
            arr = arr[self.opts["channel"]]
        return arr[key]


_NIFTI_UNITS = {"meter": "meter", "mm": "millimeter", "micron": "micrometer"}


class _NiftiSource(_Source):
    """A NIfTI image: stored (x, y, z[, c]); served as (z, y, x) with reversed zooms."""

    @classmethod
    def open(cls, path, channel):
        import nibabel as nib

        try:
            img = nib.load(str(path))
            shape = tuple(int(s) for s in img.shape)
            probe = np.asarray(img.dataobj[(slice(0, 1),) * len(shape)])
            zooms = tuple(float(f"{float(z):.7g}") for z in img.header.get_zooms()[:3])
            unit = _NIFTI_UNITS.get(img.header.get_xyzt_units()[0])
        except VolsegError:
            raise
        except Exception as exc:
            raise VolsegError(path, f"is not a readable NIfTI file ({type(exc).__name__}: {exc})") from None
        shape_xyz, index = squeeze_channel(path, shape, channel, -1, "x, y, z, channel")
        spacing = tuple(z if z > 0 else 1.0 for z in zooms[::-1]) if len(zooms) == 3 else (1.0, 1.0, 1.0)
        return cls(path, shape_xyz[::-1], probe.dtype, channel=index, ndim_file=len(shape)), spacing, unit

    def _read(self, key):
        if self._handle is None:
            import nibabel as nib

            self._handle = nib.load(self.path).dataobj
        zs, ys, xs = key
        file_key = (xs, ys, zs) + ((self.opts["channel"],) if self.opts["ndim_file"] == 4 else ())
        return np.asarray(self._handle[file_key]).transpose(2, 1, 0)
