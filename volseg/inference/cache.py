"""A per-process cache of input chunks, so neighbouring patch groups do not re-read storage.

Patch groups overlap (a patch reaches past its owner chunk), so reading each group's box straight
from storage would decode the shared input chunks several times. :func:`cached_region` assembles a box
from whole input chunks (the storage's own chunk grid, z, y, x) kept in a least-recently-used
cache with a byte budget (``VOLSEG_CHUNK_CACHE_MB``, default 256 MiB per process), shared by the
threads of a worker. Counters record the bytes decoded from storage. It is the ``read`` of
:func:`volseg.io.boxes.read_box` for predict's reads (:func:`volseg.inference.plan.read_box`).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from volseg.geometry import as_slices, chunk_bounds

_LOCK = threading.Lock()
_CACHE: OrderedDict = OrderedDict()
_LOADING: dict = {}
_STATE = {"bytes": 0, "read": 0}


def budget_bytes() -> int:
    """The cache budget in bytes (``VOLSEG_CHUNK_CACHE_MB``, default 256)."""
    try:
        return max(0, int(float(os.environ.get("VOLSEG_CHUNK_CACHE_MB", "256")) * 2**20))
    except ValueError:
        return 256 * 2**20


def bytes_read() -> int:
    """Bytes decoded from storage by this process so far (cache misses)."""
    return _STATE["read"]


def _chunk(volume, key: str, index: tuple, chunks: Sequence[int], shape: Sequence[int]) -> tuple[np.ndarray, int]:
    """One storage chunk, from the cache or read now (a chunk another thread is reading is
    waited for, not read twice); returns (data, bytes read by this call)."""
    ck = (key, index)
    while True:
        with _LOCK:
            if ck in _CACHE:
                _CACHE.move_to_end(ck)
                return _CACHE[ck], 0
            pending = _LOADING.get(ck)
            if pending is None:
                pending = _LOADING[ck] = threading.Event()
                break
        pending.wait()
        with _LOCK:
            if ck in _CACHE:  # evicted meanwhile otherwise: read it ourselves
                _CACHE.move_to_end(ck)
                return _CACHE[ck], 0
    try:
        lo, hi = chunk_bounds(index, chunks, shape)
        data = volume[as_slices(lo, hi)]
        if hasattr(data, "compute"):
            data = data.compute(scheduler="synchronous")
        data = np.asarray(data)
        with _LOCK:
            _STATE["read"] += data.nbytes
            _CACHE[ck] = data
            _STATE["bytes"] += data.nbytes
            budget = budget_bytes()
            while _STATE["bytes"] > budget and len(_CACHE) > 1:
                _, old = _CACHE.popitem(last=False)
                _STATE["bytes"] -= old.nbytes
    finally:
        with _LOCK:
            _LOADING.pop(ck).set()
    return data, data.nbytes


def cached_region(volume, key: str, start: Sequence[int], stop: Sequence[int],
                  chunks: Sequence[int]) -> tuple[np.ndarray, int]:
    """The box [start, stop) (inside ``volume.shape``) assembled from cached whole chunks, and the
    bytes this call decoded from storage (0 when every chunk was cached).

    Parameters
    ----------
    volume : array-like
        (z, y, x) dask/zarr/numpy array.
    key : str
        Identifies the volume in the cache (its path).
    chunks : sequence of int
        The storage chunk shape (z, y, x); reads are aligned to it.
    """
    shape = tuple(int(s) for s in volume.shape)
    chunks = tuple(min(int(c), s) for c, s in zip(chunks, shape))
    out = np.empty(tuple(int(b) - int(a) for a, b in zip(start, stop)), dtype=volume.dtype)
    missed = 0
    ranges = [range(int(a) // c, (int(b) - 1) // c + 1) for a, b, c in zip(start, stop, chunks)]
    for iz in ranges[0]:
        for iy in ranges[1]:
            for ix in ranges[2]:
                index = (iz, iy, ix)
                data, nbytes = _chunk(volume, key, index, chunks, shape)
                missed += nbytes
                lo, hi = chunk_bounds(index, chunks, shape)
                a = [max(int(s), c) for s, c in zip(start, lo)]
                b = [min(int(e), c) for e, c in zip(stop, hi)]
                out[tuple(slice(x - int(s), y - int(s)) for x, y, s in zip(a, b, start))] = \
                    data[tuple(slice(x - c, y - c) for x, y, c in zip(a, b, lo))]
    return out, missed
