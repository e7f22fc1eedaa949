"""Blend patch outputs back into a full volume, one task per output chunk.

``stitch`` reads a patch store of predictions (``volseg predict`` without ``--stitch``) and
writes an OME-Zarr volume of the source's shape (z, y, x). Each task owns one output chunk: it
reads only the patches that overlap the chunk, accumulates ``weight * value`` and ``weight`` in
float32 over the chunk, divides, converts (see :class:`OutputSpec`) and writes that chunk and
its completion marker, nothing else. ``--part I/N`` takes a contiguous share of the chunks.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from volseg.errors import VolsegError
from volseg.geometry import as_slices
from volseg.inference.blend import Blender, parse_blend, parse_sigma_scale
from volseg.inference.engine import normalise
from volseg.inference.plan import Plan
from volseg.inference.support import Support
from volseg.io.resume import Markers, finish_output, open_output, removed_if_empty
from volseg.io.finite import check_array
from volseg.inference.output import OUTPUT_DTYPES, OutputSpec, output_spec  # noqa: F401  (re-exported)
from volseg.parallel import Execution

def create_volume_output(path, *, plan: Plan, spec: OutputSpec, spacing, unit, settings: dict,
                         overwrite: bool, total: int = 0, prefix: str = "c",
                         record: str | None = None) -> tuple[Path, Markers, bool]:
    """Create (or resume) the OME-Zarr output volume of ``plan.shape`` with ``plan.chunks``
    (see :func:`volseg.io.resume.open_output`; ``total`` blocks marked ``<prefix>i.j.k``).
    ``record``: text of the settings file written inside the new volume
    (:data:`volseg.inference.settings.SETTINGS_FILE`)."""
    from volseg.io import create_volume

    def create(tmp: Path, attrs: dict) -> None:
        create_volume(tmp, shape=plan.shape, dtype=spec.out_dtype, chunks=plan.chunks,
                      spacing=spacing, unit=unit, attrs={**attrs, "output": spec.settings()})
        if record is not None:
            from volseg.inference.settings import SETTINGS_FILE

            (Path(tmp) / SETTINGS_FILE).write_text(record, encoding="utf-8")

    return open_output(path, settings=settings, create=create, overwrite=overwrite, total=total,
                       unit="chunks", prefix=prefix)


def write_chunk(output: str, chunk: Sequence[int], plan: Plan, block: np.ndarray) -> None:
    """Write one output chunk's block into level 0 of the output volume."""
    import zarr

    from volseg.io.remote import is_url, join, zarr_store

    start, stop = plan.bounds(chunk)
    level0 = join(output, "0") if is_url(output) else os.path.join(output, "0")
    zarr.open_array(store=zarr_store(level0, mode="r+"), mode="r+")[as_slices(start, stop)] = block


@dataclass(frozen=True)
class _StitchJob:
    store: str
    output: str
    plan: Plan
    rows: np.ndarray
    blend: dict
    spec: OutputSpec
    support: Support | None = None

    def __call__(self, chunk) -> dict:
        import zarr

        from volseg.io.checked import checked

        chunk = tuple(chunk)
        patches = checked(zarr.open_group(self.store, mode="r")["patches"], self.store)
        blender = Blender(self.plan.starts, self.plan.patch, self.blend["mode"],
                          sigma_scale=self.blend["sigma_scale"])
        start, stop = self.plan.bounds(chunk)
        size = tuple(b - a for a, b in zip(start, stop))
        wv = np.zeros((patches.shape[1], *size), np.float32)
        w = np.zeros(size, np.float32)
        idx = self.plan.touching(chunk)
        origins = self.plan.origins(idx)
        rows = self.rows[np.ix_(*idx)].ravel()
        for row, origin in zip(rows, origins):
            values = check_array(np.asarray(patches[int(row)], np.float32), self.store, offset=tuple(origin),
                                 hint=f"patch {int(row)} holds non-finite predictions; predict it again")
            add_patch(wv, w, start, stop, origin, values, blender)
        values = normalise(wv, w)
        if self.support is not None:  # a store made with --roi: 0 outside its box
            self.support.clip(values, start, stop)
        write_chunk(self.output, chunk, self.plan, self.spec.convert(values))
        Markers(self.output).mark(chunk)
        return {"chunks": 1, "patches_read": len(rows)}


def add_patch(wv: np.ndarray, w: np.ndarray, start, stop, origin, values: np.ndarray,
              blender: Blender) -> None:
    """Add one patch's weighted values (C, D, H, W) to accumulators covering [start, stop)."""
    lo = [max(int(o), int(s)) for o, s in zip(origin, start)]
    hi = [min(int(o) + p, int(e)) for o, p, e in zip(origin, blender.patch, stop)]
    if any(a >= b for a, b in zip(lo, hi)):
        return
    local = [(a - int(o), b - int(o)) for a, b, o in zip(lo, hi, origin)]
    weight = blender.weight(origin, [a for a, _ in local], [b for _, b in local])
    src = (slice(None),) + tuple(slice(a, b) for a, b in local)
    dst = tuple(slice(a - int(s), b - int(s)) for a, b, s in zip(lo, hi, start))
    wv[(slice(None),) + dst] += weight[None] * values[src]
    w[dst] += weight


def cut_pieces(plan: Plan, blender: Blender, origins: np.ndarray, outputs: np.ndarray,
               wanted: Sequence[Sequence[int]]) -> dict:
    """Weighted contributions of patches (outputs (n, C, D, H, W) at ``origins``) per wanted chunk.

    Returns ``{chunk: (corner, sum_wv, sum_w)}`` over the box of each chunk the patches cover
    (see :mod:`volseg.inference.engine`).
    """
    pieces = {}
    for chunk in wanted:
        start, stop = plan.bounds(chunk)
        lo = np.maximum(origins.min(0), start)
        hi = np.minimum(origins.max(0) + np.asarray(plan.patch), stop)
        size = tuple(int(v) for v in hi - lo)
        wv = np.zeros((outputs.shape[1], *size), np.float32)
        w = np.zeros(size, np.float32)
        for origin, values in zip(origins, outputs):
            add_patch(wv, w, lo, hi, origin, values, blender)
        pieces[tuple(int(c) for c in chunk)] = (tuple(int(v) for v in lo), wv, w)
    return pieces


def stitch(store: str | os.PathLike, output: str | os.PathLike, *, blend: str | None = None,
           sigma_scale: float | None = None, chunks=128, output_options=None,
           execution: Execution | None = None) -> dict:
    """Blend a patch store of predictions into an OME-Zarr volume (see the module docstring).

    Parameters
    ----------
    store : path
        Patch store written by ``volseg predict`` (or any grid patch store).
    output : path
        The output volume (z, y, x) of the store's ``source_shape``.
    blend : str, optional
        gaussian, hann, constant or crop; default: the store's recorded blend (else gaussian).
    sigma_scale : float, optional
        Gaussian sigma as a fraction of the patch side (default the store's, else 1/8).
    chunks : int or (z, y, x)
        Output chunk size; one task per chunk.
    output_options : volseg.inference.settings.OutputOptions, optional
        ``dtype``, ``threshold``, ``channel`` of the output (see :func:`output_spec`); None:
        float32 probabilities (argmax labels for several classes).
    execution : volseg.parallel.Execution, optional
        Scheduler, workers, ``--part``, ``overwrite`` (replace an output made with other
        settings; one with the same settings is resumed) and ``quiet``; None: the defaults.

    Returns
    -------
    dict
        ``{"output", "chunks_total", "chunks_done_before", "chunks_written", "seconds"}``.

    Examples
    --------
    A grid patch store of the scroll (no overlap) blends back into the scroll:

    >>> import numpy as np, zarr
    >>> from volseg.data.patchify import patchify
    >>> from volseg.data.synth import write_synth
    >>> scroll = write_synth("scroll", "scroll.zarr", shape=32, chunks=16)
    >>> patches = patchify(scroll, out="patches.zarr", patch=16)
    >>> from volseg.parallel import Execution
    >>> stitch(patches, "restored.zarr", execution=Execution.parse(quiet=True))["complete"]
    True
    >>> restored = zarr.open_group("restored.zarr")["0"][:]
    >>> np.allclose(restored, zarr.open_group(str(scroll))["0"][:], atol=1e-3)
    True
    """
    import time

    from volseg.data.patchstore import open_store
    from volseg.geometry import select_part
    from volseg.io.completion import check_complete
    from volseg.io.identity import local_path
    from volseg.io.outputs import guard_output, input_stamp
    from volseg.io.streaming import parse_chunks

    t0 = time.perf_counter()
    execution = Execution.of(execution)
    part, overwrite = execution.part, execution.overwrite
    chunks = parse_chunks(chunks)
    store, output = local_path(store), local_path(output)  # file://: local paths (guards, renames)
    guard_output(output, inputs=[store], kind="volume", overwrite=overwrite)
    check_complete(store)
    ps = open_store(store)
    attrs = ps.attrs
    recorded = attrs.get("blend") or {}
    mode = parse_blend(blend or recorded.get("mode", "gaussian"))
    sigma = parse_sigma_scale(sigma_scale if sigma_scale is not None else recorded.get("sigma_scale", 0.125))
    markers = Markers(store)
    if attrs.get("n_groups") is not None and len(markers.done("g")) < int(attrs["n_groups"]):
        raise VolsegError(store, f"{len(markers.done('g'))} of {attrs['n_groups']} patch groups written; "
                          "finish it with the same `volseg predict` command")
    shape = tuple(int(s) for s in attrs["source_shape"])
    plan, rows = Plan.from_origins(np.asarray(ps.origins[:]), shape=shape, patch=ps.patch, chunks=chunks,
                                   where=str(store))
    model = attrs.get("model") or {}
    image = model.get("kind") == "diffusion" or model.get("output") == "image"
    from volseg.inference.output import OutputOptions

    spec = (output_options or OutputOptions()).spec(ps.channels, image=image)
    settings = {"command": "stitch", "store": os.path.abspath(store),
                "store_fingerprint": attrs.get("fingerprint"), "store_stamp": input_stamp(store), "blend": {"mode": mode, "sigma_scale": sigma},
                "chunks": list(plan.chunks), "output": spec.settings()}
    support = Support.recorded(attrs.get("settings"))  # predict --roi: that box only, as predict --stitch
    grid = plan.chunk_list() if support is None else support.chunks(plan)
    total = len(grid)
    out, out_markers, resumed = create_volume_output(output, plan=plan, spec=spec, spacing=attrs.get("spacing"),
                                                     unit=attrs.get("unit"), settings=settings,
                                                     overwrite=overwrite, total=total)
    mine = select_part(grid, part)
    todo = out_markers.todo(mine)
    job = _StitchJob(str(store), str(out), plan, rows, {"mode": mode, "sigma_scale": sigma}, spec, support)
    with removed_if_empty(out, resumed or part is not None), execution.executor() as executor:
        executor.map(functools.partial(_run_job, job), todo, description="stitching")
    complete = finish_output(output, out, total=total)
    return {"output": str(output), "complete": complete, "chunks_total": len(mine), "chunks_done_before": len(mine) - len(todo),
            "chunks_written": len(todo), "seconds": round(time.perf_counter() - t0, 3)}


def _run_job(job, item):
    return job(item)
