"""Absurd sizes refused up front, naming the option, the value, the need and the fix."""

import pytest

from volseg.errors import VolsegError
from volseg.memlimit import check_memory, check_patch_batch, format_bytes, machine_memory


def test_format_and_refusal():
    assert format_bytes(512) == "512 B" and format_bytes(1536) == "1.5 KiB"
    assert format_bytes(3 * 2**30) == "3.0 GiB"
    check_memory(1024, option="--close", value=3, what="w", fix="f")  # fits: no error
    with pytest.raises(VolsegError, match=r"^--close: 999 is too large: the closing would take .* use a smaller"):
        check_memory(machine_memory() * 2, option="--close", value=999, what="the closing", fix="use a smaller radius")
    check_patch_batch((64, 64, 64), 4)
    with pytest.raises(VolsegError, match=r"^--patch: 100000x100000x100000 is too large"):
        check_patch_batch((100000, 100000, 100000), 4)
