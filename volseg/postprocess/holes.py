"""The hole pass of ``volseg postprocess --fill-holes N``: the cavities of the kept, closed mask.

Runs after the labelling pass has decided which foreground components survive ``--min-size``
(tables saved next to the output): every chunk rebuilds its kept mask, closes it
(:func:`volseg.postprocess.blocks.closed_kept`), labels its 6-connected background, and
:class:`~volseg.metrics.components.FaceMerger` merges those labels across chunk faces layer by
layer. A background component is a cavity to fill when it does not touch the volume border and
has at most N voxels. So holes are those of the previous step's result: a removed speck's
cavity is no cavity any more (it opens onto the background the speck has become).

With ``--fill-cavities M`` a second such pass (``volseg_cavities/``) labels the background of
the mask with its holes filled (:func:`filled_chunk`, the result of ``--fill-holes``): filling
2D slice holes can enclose new cavities, which this pass fills up to M voxels.
"""

from __future__ import annotations

import functools

import numpy as np

from volseg.geometry import as_slices, chunk_bounds, chunk_counts
from volseg.metrics import components as cc
from volseg.postprocess.blocks import cached_tables, closed_kept, concat, kept_cached, offsets
from volseg.postprocess.kernels import chunk_holes, component_table, filled_block, summarise_background

HOLES = "volseg_holes"
CAVITIES = "volseg_cavities"


def holes_pass(path: str, output: str, token: int, shape, chunks, opts, *, per_batch: int, executor,
               holes_token: int | None = None) -> dict:
    """The cavity table: ``fill_bg`` (per provisional background id), ``bg_offsets`` (per chunk)
    and ``stats`` ([cavities]), from the kept masks of the tables of ``output`` (``token``), on
    the open :class:`volseg.parallel.Executor` ``executor``.

    With ``holes_token`` (the ``--fill-cavities`` pass): from the masks with their holes filled
    (:func:`filled_chunk`), cavities of at most ``opts.fill_cavities`` voxels.
    """

    counts = chunk_counts(shape, chunks)
    merger = cc.FaceMerger(counts, connectivity=1)
    sizes: list = []
    task = functools.partial(_holes_task, path=path, output=output, token=token, chunks=tuple(chunks),
                             shape=tuple(shape), binarise=opts.binarise, close=opts.repairs,
                             holes=opts.fill_holes if holes_token is not None else None,
                             holes_token=holes_token)
    limit = opts.fill_holes if holes_token is None else opts.fill_cavities
    layers = executor.layers(task, counts, per_batch=max(1, per_batch // (counts[1] * counts[2])),
                             description="finding holes")
    for iz, layer in layers:                                   # layer: (iy, ix) order
        merger.add_layer(iz, {r["index"][1:]: r["bg"] for r in layer})
        sizes.extend(r["bg_size"] for r in layer)
    final, m, touches = merger.finish()
    size, _ = component_table(final, m, concat(sizes))
    cavity = (~touches) & (size <= limit)
    cavity[0] = False
    return {"fill_bg": cavity[final], "bg_offsets": offsets(merger, counts),
            "stats": np.array([int(np.count_nonzero(cavity))], dtype=np.int64)}


def filled_chunk(path, output, token, holes_token, index, chunks, shape, binarise, *, close,
                 holes: int) -> np.ndarray:
    """Chunk ``index`` of the mask after ``--fill-holes``: kept, repaired (``close``, a
    :class:`~volseg.postprocess.repairs.Repairs`), its slice holes and cavities filled."""
    start, stop = chunk_bounds(index, chunks, shape)
    if not (close.active or holes):
        return kept_cached(path, output, token, tuple(index), chunks, shape, binarise)[1]
    # The repairs and the slice holes need the kept mask R + N + 1 voxels around the chunk:
    # neighbouring chunks are relabelled exactly as pass 1 did and mapped through its table.
    box, lo, _ = closed_kept(path, output, token, index, chunks, shape, binarise, close=close,
                             halo=holes + 1 if holes else 0)
    out = box[as_slices([s - a for s, a in zip(start, lo)], [t - a for t, a in zip(stop, lo)])]
    if holes:
        h = cached_tables(output, holes_token, HOLES)
        out = chunk_holes(box, lo, start, stop, holes=holes) | \
            filled_block(out, h["fill_bg"], int(h["bg_offsets"][tuple(index)]))
    return out


def _holes_task(index, *, path, output, token, chunks, shape, binarise, close, holes, holes_token) -> dict:
    index = tuple(index)
    start, stop = chunk_bounds(index, chunks, shape)
    if holes is None:
        mask = closed_kept(path, output, token, index, chunks, shape, binarise, close=close, halo=0)[0]
    else:
        mask = filled_chunk(path, output, token, holes_token, index, chunks, shape, binarise, close=close,
                            holes=holes)
    out = summarise_background(mask, start=start, stop=stop, shape=shape)
    out["index"] = index
    return out
