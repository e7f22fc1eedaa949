"""Streamed, block-wise writing of (z, y, x) Dask arrays into Zarr arrays, and its validators.

Each write task covers a block of whole output chunks (about :data:`BLOCK_BYTES`), so no two
tasks ever touch the same Zarr chunk and memory stays bounded by a few blocks per worker.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from volseg.errors import VolsegError

BLOCK_BYTES = 64 * 2**20
TOTAL_BYTES = 384 * 2**20  # shared by all workers: more workers -> smaller blocks
DTYPES = ("uint8", "uint16", "int16", "uint32", "int32", "int8", "float32", "float64")
UNITS = {"um": "micrometer", "µm": "micrometer", "micron": "micrometer", "mm": "millimeter",
         "nm": "nanometer", "cm": "centimeter", "m": "meter", "angstrom": "angstrom"}
NGFF_SPACE_UNITS = {"angstrom", "attometer", "centimeter", "decimeter", "exameter", "femtometer",
                    "foot", "gigameter", "hectometer", "inch", "kilometer", "megameter", "meter",
                    "micrometer", "mile", "millimeter", "nanometer", "parsec", "petameter",
                    "picometer", "terameter", "yard", "yoctometer", "yottameter", "zeptometer",
                    "zettameter"}


def parse_chunks(chunks) -> tuple:
    """``--chunks``: an int (cube) or 3 positive ints (z, y, x), or text ``128`` / ``64x128x128``."""
    value = chunks
    if isinstance(value, str):
        try:
            value = [int(v) for v in value.lower().replace(",", "x").split("x")]
        except ValueError:
            raise VolsegError("--chunks", f"expected an int or ZxYxX such as 64x128x128, got {chunks!r}") from None
    if isinstance(value, (int, np.integer)):
        value = (int(value),) * 3
    value = tuple(int(v) for v in value)
    if len(value) == 1:
        value = value * 3
    if len(value) != 3 or min(value) < 1:
        raise VolsegError("--chunks", f"expected 1 or 3 positive sizes, got {chunks!r}")
    return value


def parse_levels(levels) -> int:
    """``--levels``: the number of resolution levels, 1 (no pyramid) to 16."""
    if not isinstance(levels, (int, np.integer)) or not 1 <= int(levels) <= 16:
        raise VolsegError("--levels", f"must be an integer from 1 to 16, got {levels!r}")
    return int(levels)


def parse_spacing(spacing) -> tuple:
    """Voxel spacing (z, y, x): None -> (1, 1, 1); a number -> isotropic; positive and finite."""
    if spacing is None:
        return (1.0, 1.0, 1.0)
    if isinstance(spacing, (int, float, np.number)):
        spacing = (spacing,) * 3
    try:
        value = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        raise VolsegError("--spacing", f"expected 3 numbers (z, y, x), got {spacing!r}") from None
    if len(value) != 3 or not all(math.isfinite(s) and s > 0 for s in value):
        raise VolsegError("--spacing", f"expected 3 positive numbers (z, y, x), got {spacing!r}")
    return value


def parse_unit(unit) -> str | None:
    """A spatial unit: an NGFF name (``micrometer``) or a common abbreviation (``um``, ``mm``)."""
    if unit is None or unit == "":
        return None
    name = UNITS.get(str(unit).strip().lower(), str(unit).strip().lower())
    if name not in NGFF_SPACE_UNITS:
        raise VolsegError("--unit", f"unknown unit {unit!r}; use micrometer, millimeter, nanometer, ...")
    return name


def parse_dtype(dtype, current) -> np.dtype:
    """``--dtype``: None or ``keep`` -> ``current`` (native byte order); else one of :data:`DTYPES`."""
    current = np.dtype(current).newbyteorder("=")
    if dtype is None or (isinstance(dtype, str) and dtype.strip().lower() in ("", "keep")):
        return current
    try:
        value = np.dtype(dtype).newbyteorder("=")
    except TypeError:
        raise VolsegError("--dtype", f"unknown dtype {dtype!r}; use keep or one of {', '.join(DTYPES)}") from None
    if value.name not in DTYPES:
        raise VolsegError("--dtype", f"unsupported dtype {value.name!r}; use keep or one of {', '.join(DTYPES)}")
    return value


def as_dask3d(path, data, chunks=(128, 128, 128)):
    """``data`` (numpy or dask) as a 3D Dask array; anything else, or not 3D/empty, is an error."""
    import dask.array as da

    if not isinstance(data, da.Array):
        data = np.asarray(data)
        if data.dtype.hasobject or data.dtype.fields is not None:
            raise VolsegError(path, f"cannot write data of dtype {data.dtype}; a numeric array is needed")
        if data.ndim == 3:
            data = da.from_array(data, chunks=block_shape(chunks, data.shape, data.dtype.itemsize))
    if data.ndim != 3:
        raise VolsegError(path, f"data must be 3D (z, y, x), got shape {tuple(data.shape)}")
    if min(data.shape) < 1:
        raise VolsegError(path, f"data is empty (shape {tuple(data.shape)})")
    return data


def _cast_block(block, dtype):
    if block.dtype == dtype:
        return block
    if block.size and np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        if np.issubdtype(block.dtype, np.floating):
            if not np.isfinite(block).all():
                raise VolsegError("--dtype", f"the data has NaN or infinite values, which {dtype} cannot hold; keep the dtype")
            block = np.rint(block)
        lo, hi = block.min().item(), block.max().item()
        if lo < info.min or hi > info.max:
            raise VolsegError("--dtype", f"values {lo:g}..{hi:g} do not fit {dtype} ({info.min}..{info.max}); "
                              "keep the dtype (--dtype keep) or rescale the data first")
    elif block.size and np.issubdtype(dtype, np.floating) and np.issubdtype(block.dtype, np.floating):
        finite = block[np.isfinite(block)]
        big = np.finfo(dtype).max
        if finite.size and (finite.min() < -big or finite.max() > big):
            raise VolsegError("--dtype", f"values {finite.min():g}..{finite.max():g} overflow {dtype}; keep the dtype")
    return block.astype(dtype)


def cast_checked(arr, dtype):
    """Lazily cast ``arr`` to ``dtype``, checking in every block that the values fit (VolsegError
    when they do not; floats are rounded to the nearest integer for integer targets)."""
    dtype = np.dtype(dtype)
    if arr.dtype == dtype:
        return arr
    if np.dtype(arr.dtype).newbyteorder("=") == dtype:
        return arr.astype(dtype)
    return arr.map_blocks(_cast_block, dtype, dtype=dtype)


def block_budget(workers: int | None = None) -> int:
    """Bytes per write block: :data:`BLOCK_BYTES`, less when many workers share :data:`TOTAL_BYTES`
    (``workers`` blocks at once; default one per available core)."""
    from volseg.parallel import available_cores

    workers = available_cores() if workers is None else max(1, int(workers))
    return max(8 * 2**20, min(BLOCK_BYTES, TOTAL_BYTES // workers))


def write_budget(execution) -> int:
    """:func:`block_budget` of an :class:`~volseg.parallel.Execution`: its workers share the memory
    on threads and processes; a cluster's workers each have their own (one block each)."""
    return block_budget(execution.workers if execution.scheduler in ("threads", "processes") else 1)


def block_shape(chunks, shape, itemsize, budget=BLOCK_BYTES) -> tuple:
    """Write-block shape: whole chunks (a multiple of ``chunks``), grown along x, then y, then z
    while the block stays under ``budget`` bytes and inside ``shape``."""
    block = [min(c, s) for c, s in zip(chunks, shape)]
    for axis in (2, 1, 0):
        while block[axis] < shape[axis]:
            grown = min(block[axis] + chunks[axis], shape[axis])
            if math.prod(block[:axis] + [grown] + block[axis + 1:]) * itemsize > budget:
                return tuple(block)
            block[axis] = grown
    return tuple(block)


def downsample(level_array, *, method="mean"):
    """Level k+1 from a written level k (a Zarr array): 2x smaller in z, y, x, ceil-sized.

    ``mean``: the mean of each 2x2x2 block (odd edges replicated), rounded to the input dtype
    for integers. ``nearest``: every second voxel (labels keep their values).
    """
    import dask.array as da

    src = da.from_zarr(level_array)
    chunks = tuple(level_array.chunks)
    if method == "nearest":
        return src[::2, ::2, ::2]
    pad = [(0, s % 2) for s in src.shape]
    if any(p for _, p in pad):
        src = da.pad(src, pad, mode="edge")
    src = src.rechunk(tuple(2 * c for c in chunks))
    mean = da.coarsen(np.mean, src, {0: 2, 1: 2, 2: 2})
    if np.issubdtype(level_array.dtype, np.integer):
        mean = da.rint(mean)
    return mean.astype(level_array.dtype)


def store_blocks(arr, target, *, executor, description="writing"):
    """Compute ``arr`` block by block into the Zarr array ``target`` (same shape) in the open
    :class:`volseg.parallel.Executor` ``executor``."""
    import dask.array as da

    if not aligned(arr.chunks, tuple(target.chunks)):
        arr = arr.rechunk(block_shape(tuple(target.chunks), tuple(target.shape),
                                      np.dtype(target.dtype).itemsize, write_budget(executor.execution)))
    stored = da.store(arr, target, lock=False, compute=False)
    compute(stored, executor=executor, description=description)


def aligned(dask_chunks, chunks) -> bool:
    """True when every Dask block boundary falls on the Zarr chunk grid (no shared chunks)."""
    for sizes, c in zip(dask_chunks, chunks):
        if any(size % c for size in sizes[:-1]):
            return False
    return True


def compute(obj, *, executor, description="computing"):
    """Compute a Dask collection in the open :class:`volseg.parallel.Executor` ``executor``
    (threads/processes/synchronous, a local cluster or ``tcp://``), with a progress bar (terminal
    only, hidden when the execution is quiet)."""
    import dask
    from dask.callbacks import Callback

    from volseg.progress import progress_bar

    quiet = executor.quiet
    if executor.local:
        total = len(obj.__dask_graph__())
        with progress_bar(description, total, quiet=quiet) as bar:
            class _Advance(Callback):
                def _start(self, dsk):  # the graph as optimised for execution: count its tasks
                    self.total = len(dsk)
                    bar.update(total=self.total)

                def _posttask(self, key, result, dsk, state, worker_id):
                    bar.advance(1)

            with _Advance() as advance:
                result = dask.compute(obj, **executor.dask_options())[0]
            bar.update(completed=getattr(advance, "total", total))
            return result
    with progress_bar(description, None, quiet=quiet):
        return executor.client.compute(obj).result()


def same_path(a, b) -> bool:
    """True when two paths name the same place (or one lies inside the other)."""
    a, b = Path(a).resolve(), Path(b).resolve()
    return a == b or a in b.parents or b in a.parents
