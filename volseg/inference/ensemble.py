"""``volseg predict RUN1 RUN2 ... VOLUME --stitch``: the averaged probabilities of several models.

Design: one :class:`~volseg.inference.setup.Setup` (and so one patch plan) per member, each at
its own patch size (the run's training patch unless ``--patch`` is given), all sharing the
output chunks. The fused pass of :func:`volseg.inference.passes.predict_fused` runs over the
union of the members' patch groups: task ``group b`` computes, member after member, the
patches each member's plan gives to output chunk b and cuts their weighted contributions per
output chunk; task ``final c`` blends each member's contributions to chunk c on its own
(exactly as a single run would), then takes their mean (:mod:`volseg.inference.ensemble_mean`:
arithmetic or geometric) and writes the chunk. The members of a group read their (overlapping)
input boxes one after the other through the per-process chunk cache
(:mod:`volseg.inference.cache`), so each input chunk is decoded once for the whole ensemble,
not once per member.

An ensemble of one run is that run: single-run outputs and fingerprints are unchanged. With
several, the fingerprint (and the output's attributes) list every member under ``ensemble``
(run, model digest, patch, stride) with ``ensemble_mean``. Axis order (z, y, x); sizes in voxels.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from volseg.errors import VolsegError
from volseg.inference.engine import accumulate, normalise
from volseg.inference.ensemble_mean import combine
from volseg.inference.passes import group_outputs, predict_fused
from volseg.inference.setup import Setup, prepare
from volseg.inference.settings import OutputOptions, PredictSettings, settings_text
from volseg.inference.stitch import OutputSpec, cut_pieces, write_chunk
from volseg.io.resume import Markers
from volseg.parallel import Execution


def run_list(run) -> list[str]:
    """``run`` (one path, or a sequence of them) as a list of strings."""
    if isinstance(run, (str, os.PathLike)):
        return [str(run)]
    runs = [str(r) for r in run]
    if not runs:
        raise VolsegError("RUN", "no run given; name one run directory (or several for an ensemble)")
    return runs


class EnsemblePlan:
    """The members' plans as one pass sees them: the output grid of the first (shape, chunks,
    chunk order; every member shares it) and, for each output chunk, the groups of all members."""

    def __init__(self, plans: Sequence):
        self.plans = tuple(plans)

    def __getattr__(self, name):
        if name.startswith("__") or name == "plans":  # unpickling looks for these before __init__ state
            raise AttributeError(name)
        return getattr(self.plans[0], name)

    def groups_for(self, chunk: Sequence[int]) -> list[tuple[int, int, int]]:
        """Groups (C order) holding a patch of any member that overlaps output chunk ``chunk``."""
        return sorted({tuple(g) for plan in self.plans for g in plan.groups_for(chunk)})


@dataclass(frozen=True)
class Ensemble:
    """Resolved members of an ensemble (each a :class:`Setup` over the same volume and chunks)."""

    members: tuple[Setup, ...]
    mean: str
    plan: EnsemblePlan
    fingerprint: dict

    @property
    def tile(self):
        return self.members[0].tile

    @property
    def meta(self):
        return self.members[0].meta

    @property
    def info(self):
        return self.members[0].info

    @property
    def support(self):
        """None: an ensemble computes every patch (``--roi``/``--mask`` are refused for it)."""
        return None


def _inputs(run, settings: PredictSettings) -> tuple[int, tuple[str, ...]]:
    """(input channels, condition names) a run's model takes, from its recorded configuration."""
    from volseg.inference.setup import _load

    cfg = dict(_load(run, settings)[0]["model_config"])
    diffusion = str(cfg.get("type", "unet")).lower() in ("diffusion", "sg")
    if diffusion:
        raise VolsegError(run, "is a diffusion run; an ensemble averages segmentation (UNet) runs: "
                          "predict it on its own")
    return int(cfg.get("in_channels", 1)), tuple(str(n) for n in cfg.get("condition") or [])


def check_members(runs: Sequence[str], settings: PredictSettings) -> None:
    """Refuse an ensemble whose runs take different inputs (naming both), or that is not stitched."""
    from volseg.inference.whole import whole_shape

    for option, value in (("--roi", settings.roi), ("--mask", settings.mask)):
        if value is not None:
            raise VolsegError(option, f"{value}: applies to one run, not to an ensemble of {len(runs)}; predict "
                              "the box or mask with each run, or the ensemble over the whole volume")
    if not settings.stitch:
        raise VolsegError("RUN", f"{len(runs)} runs form an ensemble, which blends into one volume: add "
                          "--stitch (or predict each run into its own patch store)")
    first = _inputs(runs[0], settings)
    for run in runs:
        if whole_shape(run) is not None:
            raise VolsegError(run, "was trained on whole resized volumes; an ensemble averages patch-wise "
                              "runs: predict it on its own")
        mine = _inputs(run, settings)
        if mine != first:
            raise VolsegError(run, f"takes {mine[0]} input channel(s){_names(mine[1])} but {runs[0]} takes "
                              f"{first[0]}{_names(first[1])}; the runs of an ensemble must take the same inputs")


def _names(conditions: tuple[str, ...]) -> str:
    return f" (conditions {', '.join(conditions)})" if conditions else ""


def prepare_ensemble(runs: Sequence[str], volume, settings: PredictSettings, *,
                     workers: int | None = None, scheduler: str = "threads") -> Ensemble:
    """Validate and resolve every member (:func:`~volseg.inference.setup.prepare`) before any output exists."""
    check_members(runs, settings)
    members = tuple(prepare(run, volume, settings, workers=workers, scheduler=scheduler) for run in runs)
    first = members[0]
    for m in members[1:]:
        if m.info.out_channels != first.info.out_channels or m.info.image != first.info.image:
            raise VolsegError(m.run, f"gives {m.info.out_channels} {m.info.output} channel(s) but {first.run} gives "
                              f"{first.info.out_channels} {first.info.output}; the runs of an ensemble must "
                              "predict the same classes")
    if settings.ensemble_mean == "geometric" and first.info.image:
        raise VolsegError("--ensemble-mean", "geometric averages probabilities; these runs predict images: "
                          "use --ensemble-mean arithmetic")
    fingerprint = {**first.fingerprint, "ensemble": [
        {"run": m.run, "model_sha256": m.fingerprint["model_sha256"], "patch": m.fingerprint["patch"],
         "stride": m.fingerprint["stride"]} for m in members], "ensemble_mean": settings.ensemble_mean}
    return Ensemble(members, settings.ensemble_mean, EnsemblePlan([m.plan for m in members]), fingerprint)


def _group_pieces(ens: Ensemble, group, wanted) -> dict:
    """Task ``group b``: per wanted chunk, the list of each member's contribution (None: none)."""
    from volseg.inference.engine import merge_stats

    group = tuple(int(v) for v in group)
    pieces: dict = {tuple(int(v) for v in c): [None] * len(ens.members) for c in wanted}
    stats = []
    for i, m in enumerate(ens.members):
        mine = [c for c in pieces if group in m.plan.groups_for(c)]
        if not mine:
            continue
        origins, out, s = group_outputs(m, group, mine)
        stats.append(s)
        if len(origins):
            for c, piece in cut_pieces(m.plan, m.blender(), origins, out, mine).items():
                pieces[c][i] = piece
    return {"stats": {**merge_stats(stats), "groups": 1}, **pieces}


def _final_chunk(ens: Ensemble, output: str, spec: OutputSpec, chunk, pieces) -> dict:
    """Task ``final c``: blend each member's contributions, average the members, write chunk c."""
    plan = ens.plan
    start, stop = plan.bounds(chunk)
    size = tuple(b - a for a, b in zip(start, stop))
    blended = []
    for i in range(len(ens.members)):
        wv = np.zeros((ens.info.out_channels, *size), np.float32)
        w = np.zeros(size, np.float32)
        accumulate(wv, w, start, [p[i] for p in pieces if p is not None])
        blended.append(normalise(wv, w, where=f"chunk {tuple(chunk)} of {ens.members[i].run}"))
    write_chunk(output, chunk, plan, spec.convert(combine(blended, ens.mean)))
    Markers(output).mark(chunk)
    return {"chunks": 1}


def predict_ensemble(runs: Sequence[str], volume, output, settings: PredictSettings,
                     output_options: OutputOptions, execution: Execution) -> dict:
    """The ensemble of ``runs`` over ``volume`` into the stitched volume ``output`` (module docstring).

    Returns the summary of :func:`volseg.inference.predict.predict`, with ``members``.
    """
    from volseg.io.outputs import guard_output

    t0 = time.perf_counter()
    guard_output(output, inputs=[*runs, volume], kind="volume", overwrite=execution.overwrite)
    ens = prepare_ensemble(runs, volume, settings, workers=execution.workers, scheduler=execution.scheduler)
    spec = output_options.spec(ens.info.out_channels, image=ens.info.image)
    resolved = ens.members[0].settings  # the patch stays as given: each member's own unless --patch
    record = settings_text(settings.replace(amp=resolved.amp, chunks=resolved.chunks), output_options,
                           run=" ".join(runs), volume=str(volume))
    result = predict_fused(ens, output, spec, execution, record=record,
                           tasks=(functools.partial(_group_pieces, ens), functools.partial(_final_chunk, ens)))
    result["members"] = len(runs)
    result["seconds"] = round(time.perf_counter() - t0, 3)
    nbytes = int(np.prod(ens.meta.shape)) * ens.meta.dtype.itemsize
    result["input_bytes_read_per_byte"] = round(result.get("input_bytes_read", 0) / max(1, nbytes), 4)
    return result


__all__ = ["Ensemble", "EnsemblePlan", "check_members", "predict_ensemble", "prepare_ensemble", "run_list"]
