"""Refuse sizes that cannot fit in memory before any work, naming the option and the limit.

An absurd ``--close``, ``--patch`` or ``--shape`` would otherwise end in a ``MemoryError`` (exit
1) after minutes, or in the kernel's out-of-memory killer. Each command estimates the bytes the
option's value makes it hold at once and compares them with the machine's physical memory
(:func:`machine_memory`): a value that needs more can never run here.
"""

from __future__ import annotations

from volseg.errors import VolsegError


def machine_memory() -> int:
    """Physical memory of this machine in bytes."""
    import psutil

    return int(psutil.virtual_memory().total)


def format_bytes(n: float) -> str:
    """``n`` bytes as a short text with a binary unit (``61.8 GiB``)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} PiB"  # unreachable


def check_memory(need: float, *, option: str, value, what: str, fix: str) -> None:
    """Raise :class:`VolsegError` naming ``option`` when ``need`` bytes exceed the machine's memory.

    Parameters
    ----------
    need : float
        Estimated bytes the command holds at once with this ``value``.
    option, value
        The option (``"--close"``) and the value given, for the message.
    what : str
        What takes the memory (``"the closing of one chunk"``).
    fix : str
        How to get under the limit (``"use a smaller radius"``).
    """
    total = machine_memory()
    if need > total:
        raise VolsegError(option, f"{value} is too large: {what} would take {format_bytes(need)}, more than "
                          f"the {format_bytes(total)} of memory of this machine; {fix}")


def check_patch_batch(patch, batch_size: int, *, option: str = "--patch") -> None:
    """Refuse a patch whose batch of ``batch_size`` float32 patches (input, output and blending
    weights alone, a lower bound of what inference holds) cannot fit in memory."""
    import math

    check_memory(4 * (2 * int(batch_size) + 1) * math.prod(int(p) for p in patch), option=option,
                 value="x".join(map(str, patch)), what=f"a batch of {batch_size} patches (float32 input, "
                 "output and blending weights alone, before the model's activations)",
                 fix="use tens to a few hundred voxels per side (the default is the training patch)")
