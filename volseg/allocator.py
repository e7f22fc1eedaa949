"""Keep freed tensor memory in the process: glibc ``malloc`` tuned for large repeated allocations.

A CPU forward pass of a 3D network allocates activations of tens to hundreds of MB and frees
them again, batch after batch. glibc serves every allocation above its mmap threshold (at most
32 MB) with a fresh ``mmap`` and gives it back with ``munmap``, and a thread other than the main
one allocates in an arena whose heaps it trims: so each batch page-faults its activations in
again and the kernel zeroes every page. On the 2-core machine volseg is developed on this cost
a third of a predict run's time (36 s of system time in a 60 s run over 192^3) and 27 % of a
training step (``benchmarks/predict_speed.py`` measures it).

:func:`tune` makes freed memory stay with the process for reuse: one arena for all threads
(``M_ARENA_MAX = 1``), no mmap for large blocks (``M_MMAP_MAX = 0``) and no trimming of the heap
top below 2 GiB (``M_TRIM_THRESHOLD``). Peak memory is unchanged (a batch's activations are
reused by the next batch instead of being returned and faulted in again); memory freed after
the peak stays in the process until it exits, up to 2 GiB above the heap's live part. The
command line calls :func:`tune` at start-up (before any worker thread exists: glibc fixes the
arena limit when a second thread first allocates), and so does every worker process of
``--scheduler processes``. Library users call it themselves, first thing.

It does nothing where the C library has no ``mallopt`` (macOS, Windows, musl), and nothing when
``VOLSEG_MALLOC=system`` is set or the user already tunes glibc through the ``MALLOC_ARENA_MAX``,
``MALLOC_MMAP_MAX_``, ``MALLOC_TRIM_THRESHOLD_`` or ``GLIBC_TUNABLES`` environment variables.
"""

from __future__ import annotations

import os

#: mallopt parameters (glibc <malloc.h>).
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8
#: Freed memory above the heap's live part that stays in the process (the largest glibc accepts).
TRIM_THRESHOLD = 2 ** 31 - 1
#: Environment variable: ``system`` leaves the C library's allocator as it is.
ENV = "VOLSEG_MALLOC"
_USER_TUNING = ("MALLOC_ARENA_MAX", "MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_",
                "GLIBC_TUNABLES")
_DONE: list = []


def tune() -> bool:
    """Tune glibc malloc for large repeated allocations, once per process (see the module docstring).

    Returns True when this process's allocator is now tuned (by this call or an earlier one),
    False where it is left as it is.
    """
    if _DONE:
        return _DONE[0]
    _DONE.append(_apply())
    return _DONE[0]


def _apply() -> bool:
    if os.environ.get(ENV, "").strip().lower() == "system" or any(name in os.environ for name in _USER_TUNING):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018  glibc only: other C libraries' mallopt differ
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return all(mallopt(param, value) == 1 for param, value in
               ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, TRIM_THRESHOLD)))


__all__ = ["tune"]
