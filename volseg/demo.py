"""``volseg demo``: the main job on the embedded default, end to end on synthetic data.

Synthesise a scroll, cut label-balanced patches, train the residual UNet3D with gradient
checkpointing (and mixed precision where it pays off; BCE + Dice with the ignore band as
background, see ``DemoPlan``; ``DemoPlan.skeleton_recall`` and ``DemoPlan.cldice`` add the
skeleton recall and soft clDice terms),
predict and stitch the whole volume, post-process it (``volseg postprocess`` defaults),
score both the raw and the post-processed prediction against the truth and write a preview.
Every stage is the library function behind the matching command, so the demo is also the
reference for a user's own pipeline (the README shows the same steps as commands).
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from volseg.errors import VolsegError


@dataclass(frozen=True)
class DemoPlan:
    """Sizes of one demo run (voxels, steps)."""

    shape: int
    patch: int
    samples: int
    steps: int
    batch_size: int
    predict_patch: int
    chunks: int
    skeleton_recall: float = 0.0
    #: Weight of the soft clDice term, off: on the 160^3 demo (seeds 0, 1, 2) it left the mean
    #: post-processed score at 0.681, raised the mean Dice 0.916 -> 0.924 and lowered the mean
    #: topology 0.180 -> 0.172, for 9 % more time per step (README, "Topology-aware training").
    cldice: float = 0.0
    postprocess: bool = True
    #: Train the ignore label (the truth's one-voxel band on every sheet boundary) as background
    #: (``loss.ignore_label: null``) rather than leaving it out of the loss: the model learns the
    #: sheet's core, so its boundary errors fall in the band, which the metrics ignore, instead of
    #: beyond it, where the band cuts them off the sheet as loose shells (README, "Why the demo's
    #: topology stays low": tunnels 8253 -> 3312, topology 0.075 -> 0.121, Dice 0.913 -> 0.903).
    ignore_as_background: bool = True


#: The default demo: several output chunks to stitch, a few CPU minutes of training.
DEFAULT = DemoPlan(shape=160, patch=32, samples=384, steps=200, batch_size=4, predict_patch=64, chunks=64)
#: ``--fast``: the same journey in well under a minute (tests, smoke checks); scores are lower.
FAST = DemoPlan(shape=64, patch=32, samples=48, steps=30, batch_size=2, predict_patch=32, chunks=32)


def _parse_shape(shape: int | None, plan: DemoPlan) -> DemoPlan:
    if shape is None:
        return plan
    if shape < 2 * plan.patch:
        raise VolsegError("--shape", f"{shape} is too small: the demo needs at least {2 * plan.patch} "
                                     "voxels a side so there is something to stitch")
    return DemoPlan(**{**plan.__dict__, "shape": int(shape)})


def _metrics(plan: DemoPlan, *, final: bool) -> str:
    """The demo's metrics: the streamed ones, and for the final prediction the exact Betti
    matching (``betti_matching``, ~10 s at 160^3) where the volume and the optional extra allow."""
    from volseg.metrics.betti_matching import MAX_VOXELS, available

    names = "dice,surface_dice,voi,topology,score"
    # cripser is the optional extra volseg[topology] (GPL-3); make demo installs it
    if final and plan.shape ** 3 <= MAX_VOXELS and available():
        names += ",betti_matching"
    return names


def run_demo(out: str | os.PathLike = "volseg-demo", *, shape: int | None = None, fast: bool = False,
             seed: int = 0, steps: int | None = None, workers: int | None = None, overwrite: bool = True,
             quiet: bool = False, on_stage: Callable[[str, float], None] | None = None) -> dict[str, Any]:
    """Run the whole journey on a synthetic scroll and return the scores, timings and paths.

    Parameters
    ----------
    out : path
        Folder for everything the demo writes (``scroll.zarr``, ``patches.zarr``, ``run/``,
        ``prediction.zarr``, ``preview.png``, ``scores.json``); replaced when it exists.
    shape : int, optional
        Side of the cubic synthetic scroll in voxels (default 160, ``fast``: 64).
    fast : bool
        A tiny, quick version of the same journey (lower scores).
    seed : int
        Seed of the synthetic data, sampling, initialisation and augmentation.
    steps : int, optional
        Training steps (default 200, ``fast``: 30).
    workers : int, optional
        Dask workers for the block-wise stages (default: all cores).
    overwrite : bool
        Replace the outputs of an earlier demo in ``out``.
    quiet : bool
        No progress bars.
    on_stage : callable, optional
        Called as ``on_stage(name, seconds)`` after each stage (the CLI prints a line).

    Returns
    -------
    dict
        ``{"scores": {...} (of the post-processed prediction), "raw_scores": {...} (before
        post-processing), "seconds": {stage: s, "total": s}, "paths": {...}, "plan": {...},
        "train": {...}}``.
    """
    from volseg.io.outputs import guard_output

    out = guard_output(out, kind="demo", overwrite=overwrite)  # before anything is imported or created
    from volseg.data.patchify import patchify
    from volseg.data.synth import write_synth
    from volseg.inference import predict
    from volseg.metrics import evaluate
    from volseg.training import train

    plan = _parse_shape(shape, FAST if fast else DEFAULT)
    if steps is not None:
        if steps < 1:
            raise VolsegError("--steps", f"must be >= 1, got {steps}")
        plan = DemoPlan(**{**plan.__dict__, "steps": int(steps)})
    from volseg.parallel import Execution

    execution = Execution.parse(workers=workers, overwrite=overwrite, quiet=quiet)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"scroll": out / "scroll.zarr", "labels": out / "scroll.zarr" / "labels" / "surface",
             "patches": out / "patches.zarr", "run": out / "run", "prediction": out / "prediction.zarr",
             "postprocessed": out / "postprocessed.zarr",
             "preview": out / "preview.png", "scores": out / "scores.json"}
    seconds: dict[str, float] = {}
    t_all = time.perf_counter()

    def stage(name: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        result = fn()
        seconds[name] = round(time.perf_counter() - t0, 2)
        if on_stage is not None:
            on_stage(name, seconds[name])
        return result

    stage("synth", lambda: write_synth("scroll", paths["scroll"], shape=(plan.shape,) * 3, seed=seed,
                                       chunks=plan.chunks, overwrite=overwrite, quiet=quiet))
    stage("patchify", lambda: patchify(paths["scroll"], out=paths["patches"], patch=plan.patch,
                                       samples=plan.samples, foreground_fraction=0.5, seed=seed,
                                       execution=execution))
    from volseg.training.loop import amp_pays_off

    amp = amp_pays_off("cpu")  # bf16 only where the CPU has it natively (else ~100x slower)
    overrides = {"training.n_iters": plan.steps, "training.batch_size": plan.batch_size,
                 "training.amp": amp, "training.checkpoint": True, "training.seed": seed,
                 "training.device": "cpu", "training.validation_freq": max(1, plan.steps // 4),
                 "training.snapshot_freq": max(1, plan.steps // 4),
                 "loss.skeleton_recall_weight": plan.skeleton_recall, "loss.cldice_weight": plan.cldice}
    with tempfile.TemporaryDirectory(prefix="volseg-demo-") as tmp:
        config = None
        if plan.ignore_as_background:    # a null can only come from a config file, not a flag
            config = Path(tmp) / "demo.yml"
            config.write_text("loss:\n  ignore_label: null\n")
        trained = stage("train", lambda: train(paths["patches"], paths["run"], model_type="unet",
                                               config_path=config, overrides=overrides,
                                               overwrite=overwrite, quiet=quiet))
    from volseg.inference.settings import predict_options

    stage("predict", lambda: predict(paths["run"], paths["scroll"], paths["prediction"], *predict_options(
        patch=plan.predict_patch, overlap=0.5, stitch=True, amp=amp, device="cpu", chunks=plan.chunks,
        workers=workers, overwrite=overwrite, quiet=quiet)))
    metrics = _metrics(plan, final=not plan.postprocess)
    raw = stage("evaluate", lambda: evaluate(paths["prediction"], paths["labels"], metrics=metrics,
                                             image=paths["scroll"], preview=None if plan.postprocess
                                             else paths["preview"], execution=execution))
    scores = raw
    if plan.postprocess:
        from volseg.postprocess import postprocess

        stage("postprocess", lambda: postprocess(paths["prediction"], paths["postprocessed"],
                                                 chunks=plan.chunks, execution=execution))
        scores = stage("evaluate_post", lambda: evaluate(paths["postprocessed"], paths["labels"],
                                                         metrics=_metrics(plan, final=True),
                                                         image=paths["scroll"],
                                                         preview=paths["preview"], execution=execution))
    seconds["total"] = round(time.perf_counter() - t_all, 2)
    summary = {"scores": scores, "raw_scores": raw, "seconds": seconds, "plan": dict(plan.__dict__),
               "train": {k: trained.get(k) for k in ("steps", "best_metric", "metric", "loss")},
               "paths": {k: str(v) for k, v in paths.items()}}
    from volseg.jsonout import write_json

    write_json(summary, paths["scores"])
    return summary
