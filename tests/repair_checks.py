"""Shared checks of the post-processing repairs: a box repaired with its halo equals the whole
volume's repair, and a streamed ``postprocess`` equals ``postprocess_array`` (bit for bit)."""

from __future__ import annotations

import numpy as np
import zarr

from volseg.io import write_volume
from volseg.parallel import Execution
from volseg.postprocess import postprocess, postprocess_array


def assert_box_equals_whole(repairs, vol: np.ndarray, corner) -> None:
    """``repairs.box`` over a 5^3 box at ``corner`` (read with ``repairs.reach`` of halo) equals
    the same box of ``repairs.whole(vol)``."""
    whole = repairs.whole(vol)
    start = [min(c, s - 4) for c, s in zip(corner, vol.shape)]
    stop = [a + 5 for a in start]
    lo = [max(0, a - r) for a, r in zip(start, repairs.reach)]
    hi = [min(s, b + r) for b, r, s in zip(stop, repairs.reach, vol.shape)]
    box = repairs.box(vol[tuple(slice(a, b) for a, b in zip(lo, hi))], lo, hi, vol.shape)
    inner = tuple(slice(a - b, c - b) for a, c, b in zip(start, stop, lo))
    np.testing.assert_array_equal(box[inner], whole[tuple(slice(a, b) for a, b in zip(start, stop))])


def streamed_equals_whole(tmp_path, vol: np.ndarray, chunks, options: dict) -> tuple[dict, np.ndarray]:
    """``postprocess`` of ``vol`` (stored in 8^3 chunks) with output ``chunks`` equals
    ``postprocess_array`` with the same ``options``; returns the result and that array."""
    write_volume(tmp_path / "v.zarr", vol, chunks=8)
    r = postprocess(tmp_path / "v.zarr", tmp_path / "o.zarr", chunks=chunks,
                    execution=Execution.parse(scheduler="synchronous", quiet=True), **options)
    ref = postprocess_array(vol, **options)
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "o.zarr" / "0"), mode="r")[:], ref)
    return r, ref


def refused_by_postprocess(tmp_path, vol: np.ndarray, args: list, needles) -> None:
    """``volseg postprocess IN -o OUT ARGS`` exits 2 with one ``error:`` line holding ``needles``,
    writes nothing and leaves the input as it was."""
    from typer.testing import CliRunner

    from cli_checks import one_error_line, tree
    from volseg.cli import app

    write_volume(tmp_path / "in.zarr", vol, chunks=8)
    before = tree(tmp_path / "in.zarr")
    out = tmp_path / "out.zarr"
    one_error_line(CliRunner().invoke(app, ["postprocess", str(tmp_path / "in.zarr"), "-o", str(out),
                                            "--quiet"] + args), *needles)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["in.zarr"]
    assert tree(tmp_path / "in.zarr") == before
