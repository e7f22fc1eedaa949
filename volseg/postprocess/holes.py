"""The hole pass of ``volseg postprocess --fill-holes N``: the cavities of the kept, closed mask.

Runs after the labelling pass has decided which foreground components survive ``--min-size``
(tables saved next to the output): every chunk rebuilds its kept mask, closes it
(:func:`volseg.postprocess.blocks.closed_kept`), labels its 6-connected background, and
:class:`~volseg.metrics.components.FaceMerger` merges those labels across chunk faces layer by
layer. A background component is a cavity to fill when it does not touch the volume border and
has at most N voxels. So holes are those of the previous step's result: a removed speck's
cavity is no cavity any more (it opens onto the background the speck has become).
"""

from __future__ import annotations

import functools

import numpy as np

from volseg.geometry import chunk_bounds, chunk_counts
from volseg.metrics import components as cc
from volseg.postprocess.blocks import closed_kept, concat, offsets
from volseg.postprocess.kernels import component_table, summarise_background

HOLES = "volseg_holes"


def holes_pass(path: str, output: str, token: int, shape, chunks, opts, *, per_batch: int, scheduler,
               workers, quiet) -> dict:
    """The cavity table: ``fill_bg`` (per provisional background id), ``bg_offsets`` (per chunk)
    and ``stats`` ([cavities]), from the kept masks of the tables of ``output`` (``token``)."""
    from volseg.parallel import run_layers

    counts = chunk_counts(shape, chunks)
    merger = cc.FaceMerger(counts, connectivity=1)
    sizes: list = []
    task = functools.partial(_holes_task, path=path, output=output, token=token, chunks=tuple(chunks),
                             shape=tuple(shape), binarise=opts.binarise, close=opts.repairs)
    layers = run_layers(task, counts, per_batch=max(1, per_batch // (counts[1] * counts[2])),
                        scheduler=scheduler, workers=workers, description="finding holes", quiet=quiet)
    for iz, layer in layers:                                   # layer: (iy, ix) order
        merger.add_layer(iz, {r["index"][1:]: r["bg"] for r in layer})
        sizes.extend(r["bg_size"] for r in layer)
    final, m, touches = merger.finish()
    size, _ = component_table(final, m, concat(sizes))
    cavity = (~touches) & (size <= opts.fill_holes)
    cavity[0] = False
    return {"fill_bg": cavity[final], "bg_offsets": offsets(merger, counts),
            "stats": np.array([int(np.count_nonzero(cavity))], dtype=np.int64)}


def _holes_task(index, *, path, output, token, chunks, shape, binarise, close) -> dict:
    index = tuple(index)
    start, stop = chunk_bounds(index, chunks, shape)
    mask = closed_kept(path, output, token, index, chunks, shape, binarise, close=close, halo=0)[0]
    out = summarise_background(mask, start=start, stop=stop, shape=shape)
    out["index"] = index
    return out
