"""Local topology check of a post-processed mask: the blocks that still hold tunnels or cavities.

``volseg postprocess --topology-report PATH`` reads the finished output chunk by chunk and
takes every chunk (a *block*) on its own, as the leaderboard takes its tiles: b0 is its
26-connected foreground components, b2 its cavities (6-connected background components that
do not touch the block's border), chi its Euler characteristic
(:func:`skimage.measure.euler_number`, ``connectivity=3``) and b1 = b0 + b2 - chi its tunnels
(:func:`volseg.metrics.topology.betti_numbers`). The report lists the blocks where b1 or b2 is
not zero, so a user can look at them. Axis order (z, y, x); coordinates in voxels.
"""

from __future__ import annotations

import functools
import itertools
import os

import numpy as np

from volseg.geometry import as_slices, chunk_bounds, chunk_counts


def block_topology(mask: np.ndarray, start) -> dict | None:
    """The block's entry of the report, or None when it has no tunnel and no cavity.

    Parameters
    ----------
    mask : ndarray of bool, shape (z, y, x)
        The block.
    start : 3 ints
        Its first voxel in the volume.

    Returns
    -------
    dict or None
        ``{"start": [z, y, x], "stop": [z, y, x], "euler": chi, "b0": ..., "b1": ..., "b2": ...}``.
    """
    from skimage.measure import euler_number

    from volseg.metrics.topology import betti_numbers

    mask = np.asarray(mask, dtype=bool)
    b0, b1, b2 = betti_numbers(mask)
    if not (b1 or b2):
        return None
    return {"start": [int(s) for s in start], "stop": [int(s) + n for s, n in zip(start, mask.shape)],
            "euler": int(euler_number(mask, connectivity=3)), "b0": int(b0), "b1": int(b1), "b2": int(b2)}


def _task(index, *, output, chunks, shape) -> dict | None:
    import zarr

    start, stop = chunk_bounds(index, chunks, shape)
    block = zarr.open_array(os.path.join(os.fspath(output), "0"), mode="r")[as_slices(start, stop)]
    return block_topology(block > 0, start)


def topology_report(output, report, *, chunks, executor) -> dict:
    """Write the report of the finished mask ``output`` (OME-Zarr, level ``0``) to ``report``.

    Parameters
    ----------
    output : path
        The post-processed uint8 mask.
    report : path
        JSON file (written atomically): ``{"volume", "block": [z, y, x], "blocks_checked",
        "blocks": [entries of :func:`block_topology`], "b1": total, "b2": total}``.
    chunks : 3 ints
        The block size (the output's chunks).
    executor : volseg.parallel.Executor
        The open executor of the command (one task per chunk).

    Returns
    -------
    dict
        ``{"blocks_with_tunnels", "blocks_with_cavities", "tunnels", "cavities"}`` (sums over the
        blocks, each taken alone).
    """
    import zarr

    from volseg.jsonout import write_json

    shape = tuple(zarr.open_array(os.path.join(os.fspath(output), "0"), mode="r").shape)
    grid = list(itertools.product(*(range(c) for c in chunk_counts(shape, chunks))))
    task = functools.partial(_task, output=os.fspath(output), chunks=tuple(chunks), shape=shape)
    blocks = [b for b in executor.map(task, grid, description="topology check") if b is not None]
    summary = {"blocks_with_tunnels": sum(1 for b in blocks if b["b1"]),
               "blocks_with_cavities": sum(1 for b in blocks if b["b2"]),
               "tunnels": sum(b["b1"] for b in blocks), "cavities": sum(b["b2"] for b in blocks)}
    write_json({"volume": os.fspath(output), "block": list(chunks), "blocks_checked": len(grid),
                **summary, "blocks": blocks}, report)
    return summary
