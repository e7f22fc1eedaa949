"""The one read path of Zarr arrays: damaged chunks become a :class:`VolsegError` naming the
array and the chunk's key.

Every command reads Zarr data through :class:`CheckedZarr` (volumes by :func:`volseg.io.open_volume`,
patch stores by :class:`volseg.data.patchstore.PatchStore`, ``stitch`` and ``postprocess``
directly), so a truncated or corrupt chunk reads the same everywhere, local or by URL::

    error: pred.zarr/patches: has a damaged chunk c/3/0/0/0/0 (Zstd decompression error);
    restore it or write it again

A fault is located only after a read failed: the chunks (shards) the selection touches are read
again one at a time, and the first that fails is the one named.
"""

from __future__ import annotations

import itertools
import os

import numpy as np

from volseg.errors import VolsegError

#: Most chunks re-read one by one to find the damaged one; beyond this only the array is named.
_MAX_PROBES = 4096


def array_name(root, array) -> str:
    """``root/<array path>``: the store (local path or URL) joined with the array's path in it."""
    root = os.fspath(root).rstrip("/")
    inner = str(getattr(array, "path", "") or "").strip("/")
    if not inner:
        return root
    return f"{root}/{inner}"


class CheckedZarr:
    """A Zarr array, read-only, whose damaged chunks raise :class:`VolsegError` naming the array
    and the chunk key instead of the codec's internal error. Picklable; sliced like the array.

    Parameters
    ----------
    array : zarr.Array
        The array to read.
    path : str or os.PathLike
        What the errors name: the array's store path or URL (see :func:`array_name`).
    """

    def __init__(self, array, path):
        self.array, self.path = array, os.fspath(path)
        self.shape, self.dtype, self.ndim = tuple(array.shape), array.dtype, array.ndim
        self.chunks = array.chunks

    def __len__(self) -> int:
        return int(self.shape[0])

    def __getitem__(self, key):
        try:
            return self.array[key]
        except (VolsegError, MemoryError):  # a remote fault already named; not the data's fault
            raise
        except Exception as exc:
            raise damaged_chunk(self.array, self.path, key, exc) from None


def checked(array, root) -> CheckedZarr:
    """``array`` (opened from the store at ``root``) behind :class:`CheckedZarr`."""
    return array if isinstance(array, CheckedZarr) else CheckedZarr(array, array_name(root, array))


def damaged_chunk(array, path, key, exc: BaseException) -> VolsegError:
    """The error for a failed read of ``array[key]``: names ``path`` and, when one chunk of the
    selection fails to read again on its own, that chunk's key (e.g. ``c/3/0/0/0/0``)."""
    text = " ".join(str(exc).split())[:200] or type(exc).__name__
    chunk = _find_damaged(array, key)
    where = f"a damaged chunk {chunk}" if chunk else "a damaged chunk"
    return VolsegError(path, f"has {where} ({text}); restore it or write it again")


def _find_damaged(array, key) -> str | None:
    """The key of the first chunk (shard) of ``array[key]`` that cannot be read, or None."""
    try:
        ranges = _chunk_ranges(array, key)
    except Exception:  # a selection we cannot map to chunks: name the array only
        return None
    if ranges is None:
        return None
    grid = tuple(int(s) for s in (getattr(array, "shards", None) or array.chunks))
    shape = tuple(int(s) for s in array.shape)
    for probes, coords in enumerate(itertools.product(*ranges)):
        if probes >= _MAX_PROBES:
            return None
        box = tuple(slice(c * g, min((c + 1) * g, s)) for c, g, s in zip(coords, grid, shape))
        try:
            array[box]
        except Exception:
            return array.metadata.encode_chunk_key(coords)
    return None


def _chunk_ranges(array, key):
    """Per axis, the range of chunk (shard) indices a basic selection touches; None when the
    selection is not a basic one (ints and slices with step 1)."""
    grid = tuple(int(s) for s in (getattr(array, "shards", None) or array.chunks))
    shape = tuple(int(s) for s in array.shape)
    key = key if isinstance(key, tuple) else (key,)
    if any(k is Ellipsis for k in key):
        i = key.index(Ellipsis)
        key = key[:i] + (slice(None),) * (len(shape) - len(key) + 1) + key[i + 1:]
    key = key + (slice(None),) * (len(shape) - len(key))
    ranges = []
    for k, g, n in zip(key, grid, shape):
        if isinstance(k, (int, np.integer)):
            i = int(k) + n if int(k) < 0 else int(k)
            lo, hi = i, i + 1
        elif isinstance(k, slice):
            lo, hi, step = k.indices(n)
            if step != 1:
                return None
        else:
            return None
        if hi <= lo:
            return None
        ranges.append(range(lo // g, (hi - 1) // g + 1))
    return ranges
