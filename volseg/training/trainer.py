"""``volseg train``: resolve the config, prepare the run directory, train, validate, checkpoint.

The run directory holds ``model.pt`` (the last step: weights, optimizer, scaler, EMA and RNG
state, step, resolved config), ``best.pt`` (same content at the best validation metric: Dice
for the UNet, PSNR of DDIM samples for diffusion), ``config.yml`` (resolved) and
``metrics.jsonl``. ``--resume`` restores everything in ``model.pt`` (``best.pt`` when a run
was cut before its ``model.pt``) and continues the same seeded data stream, so N steps +
resume to M steps equals M steps at once. A new run and ``--overwrite`` are built beside the
run directory and take its place with their first good checkpoint
(:mod:`volseg.training.run_stage`): a failed run never loses a good one.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from volseg.errors import VolsegError
from volseg.models import build_model, load_run, model_depth, resolve_device
from volseg.models.precision import use_amp
from volseg.progress import progress_bar
from volseg.training import distributed
from volseg.training import run_dir as rd
from volseg.training.config import parse_model_type, resolve, task_of
from volseg.training.loop import EMA, batch_stream, grad_scaler, make_optimizer, to_device, train_step
from volseg.training.run_stage import RunStage
from volseg.training.schedule import lr_at
from volseg.training.tracking import Tracker, require_tensorboard
from volseg.training.validate import validate

DEFAULT_STEPS = 500


def check_patch(patch, depth: int, *, where: str = "--patch") -> None:
    """Refuse a patch whose sides do not divide by ``2**depth``, naming a size that works."""
    factor = 2 ** depth
    bad = [int(s) for s in patch if int(s) % factor]
    if bad:
        text = "x".join(str(int(s)) for s in patch)
        fixed = "x".join(str(max(factor, round(int(s) / factor) * factor)) for s in patch)
        raise VolsegError(where, f"patch {text} is not divisible by 2^{depth} = {factor} "
                                 f"(model depth {depth}); use e.g. {fixed}")


def _stats(values: list[torch.Tensor]) -> tuple[list[float], list[float]]:
    stacked = torch.stack([v.float() for v in values])  # (n, C, D, H, W)
    dims = (0, 2, 3, 4)
    mean = stacked.mean(dim=dims)
    std = stacked.std(dim=dims).clamp_min(1e-6)
    return [float(m) for m in mean], [float(s) for s in std]


def _fill_normalisation(cfg: dict[str, Any], train_ds) -> None:
    model = cfg["model"]
    n = len(train_ds)
    picks = sorted({int(i * n / min(n, 16)) for i in range(min(n, 16))})
    items = [train_ds[i] for i in picks]
    if model["norm_mean"] is None or model["norm_std"] is None:
        mean, std = _stats([it["image"] for it in items])
        model["norm_mean"] = mean[0] if len(mean) == 1 else mean
        model["norm_std"] = std[0] if len(std) == 1 else std
    if task_of(cfg) == "translation" and (model["target_mean"] is None
                                          or model["target_std"] is None):
        mean, std = _stats([it["target"] for it in items])
        model["target_mean"], model["target_std"] = mean[0], std[0]
    if model["type"] == "diffusion" and model["target_range"] is None:
        targets = torch.stack([torch.as_tensor(it["target"]).float() for it in items])
        model["target_range"] = [float(targets.min()), float(targets.max())]


def model_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The plain-data model config stored in ``model.pt`` (what ``build_model`` takes)."""
    out = {k: v for k, v in cfg["model"].items()}
    if out["type"] == "unet":  # a segmentation UNet's config stays as it was before regression
        out.pop("target_mean", None), out.pop("target_std", None)
        if task_of(cfg) == "translation":
            out.update(output="image", target_mean=cfg["model"]["target_mean"],
                       target_std=cfg["model"]["target_std"])
    if cfg["data"].get("condition"):  # only then: configs of single-input runs stay as they were
        out["condition"] = list(cfg["data"]["condition"])
    if out["type"] == "diffusion":
        from volseg.models.ddim import timestep_sequence

        diff = cfg["diffusion"]
        out["schedule"] = {
            "beta_start": diff["beta_start"], "beta_end": diff["beta_end"],
            "num_diffusion_timesteps": diff["num_diffusion_timesteps"],
            "scheduler_type": diff["scheduler_type"], "steps": diff["timesteps"],
            "clip_x0": diff["clip_x0"], "start_t": diff["start_t"],
            "prediction": diff["prediction"],
            "timesteps": timestep_sequence(diff["scheduler_type"], diff["timesteps"],
                                           diff["num_diffusion_timesteps"])}
    return out


def _check_item(item: dict[str, Any], cfg: dict[str, Any], source) -> None:
    kind = cfg["model"]["type"]
    need = "label" if task_of(cfg) == "segmentation" else "target"
    if need not in item:
        what = ("labels (patchify with --labels, or a scroll.zarr with labels/)" if need == "label"
                else "targets (a synth scan.zarr, or a patch store with `targets`)")
        raise VolsegError(source, f"has no {what}; --model {kind} needs them")
    channels = int(item["image"].shape[0])
    if channels != cfg["data"]["channels"]:
        raise VolsegError(source, f"has {channels} channel(s) but data.channels is "
                                  f"{cfg['data']['channels']}; set data.channels: {channels}")
    shape = tuple(int(s) for s in item["image"].shape[1:])
    where = "--patch" if cfg["data"]["patch"] is not None else str(source)
    check_patch(shape, model_depth(cfg["model"]), where=where)


def diverged(run_dir, what: str, step: int, lr: float, kept: str | None = None) -> VolsegError:
    """The error of a run whose loss or weights stopped being finite (nothing more is saved);
    ``kept`` says what the failure leaves (default: whether ``run_dir`` holds a model.pt)."""
    if kept is None:
        kept = "the last good checkpoint is kept" if (Path(run_dir) / rd.MODEL_FILE).is_file() \
            else "no checkpoint was saved"
    return VolsegError(run_dir, f"{what} at step {step}; lower --lr (now {lr:g}) or check the "
                       f"training data for NaN/Inf; {kept}")


def check_finite_model(model: nn.Module, run_dir, *, step: int, lr: float,
                       kept: str | None = None) -> None:
    """Refuse to save a model with a non-finite weight (the run diverged)."""
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise diverged(run_dir, f"weight {name} became non-finite", step, lr, kept)


def _total_steps(cfg: dict[str, Any], n_train: int, world: int = 1) -> int:
    training = cfg["training"]
    if training["n_iters"] is not None:
        return training["n_iters"]
    if training["n_epochs"] is not None:
        return training["n_epochs"] * math.ceil(n_train / (training["batch_size"] * world))
    return DEFAULT_STEPS


def train(source: str | os.PathLike | None, run_dir: str | os.PathLike, *,
          model_type: str | None = None, config_path: str | os.PathLike | None = None,
          overrides: Mapping[str, Any] | None = None, resume: bool = False,
          overwrite: bool = False, quiet: bool = False, datasets: tuple | None = None
          ) -> dict[str, Any]:
    """Train a model and write the run directory.

    Parameters
    ----------
    source : path, volseg.data.mix.Sources or None
        A patch store or a volume streamed in patches, or several of them and image/label
        pairs (:func:`volseg.data.mix.make_training_datasets`: validation split by volume);
        None with ``datasets``.
    run_dir : path
        Output directory (``-o``).
    model_type : {"unet", "diffusion"}, optional
        ``--model``; default: the config file's ``model.type``, else unet.
    config_path : path, optional
        ``--config`` YAML.
    overrides : mapping, optional
        Dotted config keys from CLI flags (None values ignored).
    resume, overwrite : bool
        Continue the run in ``run_dir`` / replace it.
    quiet : bool
        No progress bar.
    datasets : (train_ds, val_ds or None), optional
        In-memory datasets (tests, notebooks) instead of ``source``.

    Returns
    -------
    dict
        ``{"run_dir", "model", "steps", "seconds", "loss", "best_metric", "metric", ...}``.

    Examples
    --------
    One epoch of a tiny UNet on the 8 patches of a synthetic scroll:

    >>> from volseg.data.patchify import patchify
    >>> from volseg.data.synth import write_synth
    >>> patches = patchify(write_synth("scroll", "scroll.zarr", shape=32), out="patches.zarr", patch=16)
    >>> result = train(patches, "run", model_type="unet", quiet=True, overrides={
    ...     "training.n_epochs": 1, "training.batch_size": 4, "training.device": "cpu",
    ...     "model.ch": 4, "model.depth": 2})
    >>> result["model"], result["steps"], result["model_file"]
    ('unet', 2, 'run/model.pt')
    """
    import contextlib

    from volseg.io.locks import output_lock
    from volseg.io.outputs import guard_output, guard_reader, input_paths

    sources = list(input_paths([source]))
    run_dir = guard_output(run_dir, inputs=[*sources, config_path], kind="run", overwrite=overwrite)
    guard_reader(sources)  # an unfinished patch store (one --part of several) is refused
    run_dir = rd.check_run_dir(run_dir, resume=resume, overwrite=overwrite)
    main_rank = os.environ.get("RANK", "0").strip() in ("", "0")  # torchrun: rank 0 holds the lock
    made = _missing_folders(run_dir.parent)  # the lock creates them; a failed start removes them
    try:
        with output_lock(run_dir) if main_rank else contextlib.nullcontext():  # one trainer per run dir
            return _train(source, run_dir, model_type=model_type, config_path=config_path,
                          overrides=overrides, resume=resume, overwrite=overwrite, quiet=quiet,
                          datasets=datasets)
    except BaseException:
        if main_rank and not run_dir.exists():
            for folder in made:  # deepest first; a folder someone filled meanwhile stays
                try:
                    folder.rmdir()
                except OSError:
                    break
        raise


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and its ancestors that do not exist yet, deepest first."""
    missing = []
    folder = Path(os.path.abspath(folder))
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _train(source, run_dir: Path, *, model_type, config_path, overrides, resume, overwrite, quiet,
           datasets) -> dict[str, Any]:
    payload = None
    main_rank = os.environ.get("RANK", "0").strip() in ("", "0")
    if resume:
        checkpoint = rd.resume_file(run_dir)
        payload = load_run(checkpoint)
        if checkpoint.name != rd.MODEL_FILE and main_rank:
            print(f"warning: {run_dir}: has no {rd.MODEL_FILE} (the run stopped before saving it); "
                  f"resuming from {checkpoint.name} at step {int(payload['step'])}", file=sys.stderr)
        saved = payload.get("model_type", payload["model_config"].get("type"))
        if model_type is not None and parse_model_type(model_type) != saved:
            raise VolsegError("--model", f"{run_dir} was trained with --model {saved}; resume "
                                         f"it with --model {saved} or start a new run")
        cfg = resolve(model_type=saved, config_path=config_path, overrides=overrides,
                      base=payload["config"])
        if cfg["model"] != payload["config"]["model"]:
            raise VolsegError(config_path or "--resume", "changes the model section of the run "
                              "being resumed; keep the model as it was or start a new run")
    else:
        cfg = resolve(model_type=model_type, config_path=config_path, overrides=overrides)
    device = resolve_device(cfg["training"]["device"])
    cfg["training"]["amp"] = use_amp(device, cfg["training"]["amp"], warn=main_rank)
    cfg["training"]["batch_size"] = distributed.per_rank_batch(
        cfg["training"]["batch_size"], cfg["training"].get("global_batch_size"),
        distributed.launch_env().world)
    if cfg["data"]["patch"] is not None:
        check_patch(cfg["data"]["patch"], model_depth(cfg["model"]))
    if cfg["data"].get("whole"):
        check_patch([cfg["data"]["depth"]] + [cfg["data"]["image_size"]] * 2, model_depth(cfg["model"]),
                    where="data.image_size")
    if datasets is None:
        datasets = _make_datasets(source, cfg)
    train_ds, val_ds = datasets
    if len(train_ds) == 0:
        raise VolsegError(source, "gives no training patches; patchify more or lower "
                                  "--val-fraction")
    if cfg["training"]["batch_size"] > len(train_ds):
        raise VolsegError("--batch-size", f"{cfg['training']['batch_size']} is larger than the "
                          f"{len(train_ds)} training patches of {source}; use at most {len(train_ds)}")
    _check_item(train_ds[0], cfg, source)
    if cfg["training"]["tensorboard"]:
        require_tensorboard()
    if payload is None:
        _fill_normalisation(cfg, train_ds)
    # every rank has checked the same inputs; joining the group waits for all of them, so no
    # rank writes into the run directory before the others have checked it
    dist, device = distributed.setup(device)
    stage = RunStage(run_dir, resume=resume)
    try:
        if dist.is_main:
            stage.start()
        return _fit(cfg, train_ds, val_ds, stage, device=device, payload=payload,
                    quiet=quiet, dist=dist)
    except BaseException:
        if dist.is_main:
            stage.abandon()  # a run that failed before its first good checkpoint leaves nothing
        raise
    finally:
        dist.close()


def _make_datasets(source, cfg: dict[str, Any]):
    from volseg.data.mix import make_training_datasets

    data = cfg["data"]
    if data.get("whole"):
        from volseg.data.whole import make_whole_datasets

        return make_whole_datasets(source, task=task_of(cfg), shape=(data["depth"], data["image_size"],
                                   data["image_size"]), val_fraction=data["val_fraction"],
                                   seed=cfg["training"]["seed"], samples_per_epoch=data["samples_per_epoch"],
                                   condition=data.get("condition"))
    return make_training_datasets(
        source, task=task_of(cfg),
        patch=tuple(data["patch"]) if data["patch"] is not None else None,
        val_fraction=data["val_fraction"], seed=cfg["training"]["seed"], augment=cfg["augment"],
        samples_per_epoch=data["samples_per_epoch"],
        foreground_fraction=data["foreground_fraction"], weights=data["weights"],
        condition=data.get("condition"))


def _fit(cfg: dict[str, Any], train_ds, val_ds, stage: RunStage, *, device: torch.device,
         payload: dict[str, Any] | None, quiet: bool,
         dist: distributed.Dist | None = None) -> dict[str, Any]:
    """The training loop; writes into ``stage.dir`` and hands the run over with its first
    good checkpoint (``stage.checkpoint_saved``, main rank only)."""
    dist = dist if dist is not None else distributed.Dist(distributed.LaunchEnv())
    run_dir = stage.final  # named in messages; files go to stage.dir
    main = dist.is_main
    training, kind = cfg["training"], cfg["model"]["type"]
    seed, amp = training["seed"], training["amp"]
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed + 1)
    mcfg = payload["model_config"] if payload is not None else model_config(cfg)
    model: nn.Module = build_model(dict(mcfg, checkpoint=training["checkpoint"])).to(device)
    optimizer = make_optimizer(model.parameters(), cfg["optim"])
    scaler = grad_scaler(device, amp)
    ema = EMA(model, cfg["model"]["ema_rate"]) if kind == "diffusion" and cfg["model"]["ema"] \
        else None
    step, seconds, cpu_seconds, best = 0, 0.0, 0.0, None
    if payload is not None:
        model.load_state_dict(payload["state_dict"])
        optimizer.load_state_dict(payload["optimizer"])
        if payload.get("scaler"):
            scaler.load_state_dict(payload["scaler"])
        if ema is not None and payload.get("ema_state_dict") is not None:
            ema.load_state_dict(payload["ema_state_dict"], int(payload.get("ema_updates", 0)))
        rd.set_rng_state(payload.get("rng", {}), generator)
        step, seconds = int(payload["step"]), float(payload.get("seconds", 0.0))
        cpu_seconds = float(payload.get("cpu_seconds", 0.0))
        best = payload.get("best_metric")
        if main:
            rd.truncate_metrics(stage.dir, step)
    total = _total_steps(cfg, len(train_ds), dist.world)
    forward = distributed.wrap(model, cfg, dist, device)
    horizon = total  # the schedule's horizon: a time limit ends the run, not the schedule
    metric = "val_dice" if task_of(cfg) == "segmentation" else "val_psnr"
    state = {"cfg": cfg, "model": model, "ema": ema, "kind": kind}

    def save(name: str, at: int, spent: float, best_value) -> None:
        check_finite_model(model, run_dir, step=at, lr=lr_at(max(at - 1, 0), cfg["optim"], total=horizon),
                           kept=stage.state())
        rd.save_checkpoint(stage.dir / name, {
            "model_type": kind, "model_config": mcfg, "config": cfg,
            "state_dict": model.state_dict(),
            "ema_state_dict": ema.state_dict() if ema is not None else None,
            "ema_updates": ema.updates if ema is not None else 0,
            "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
            "rng": rd.rng_state(generator), "step": at, "seconds": spent,
            "cpu_seconds": cpu_seconds,
            "best_metric": best_value, "metric": metric})

    stream = batch_stream(train_ds, batch_size=training["batch_size"], seed=seed,
                          start_step=step, workers=cfg["data"]["workers"],
                          pin_memory=device.type == "cuda", shard=dist.shard)
    has_val = val_ds is not None and len(val_ds) > 0
    losses: list[float] = []
    last_loss = float("nan")
    limit, cpu_limit = training["max_seconds"], training["max_cpu_seconds"]
    tracker = Tracker(stage.dir, metric=metric, tensorboard=training["tensorboard"],
                      start_step=step, enabled=main, title=run_dir.name)
    model.train()
    with progress_bar(f"train {kind}", total, quiet=quiet or not main) as bar:
        bar.advance(step)
        while step < total:
            lr = lr_at(step, cfg["optim"], total=horizon)
            for group in optimizer.param_groups:
                group["lr"] = lr
            started, cpu_started = time.perf_counter(), time.process_time()
            batch = to_device(next(stream), device)
            last_loss = distributed.run_step(
                dist, train_step, model, batch, cfg=cfg, optimizer=optimizer, scaler=scaler,
                device=device, amp=amp, generator=generator, ema=ema, forward=forward)
            if not math.isfinite(last_loss):
                raise diverged(run_dir, "loss became " + ("NaN" if math.isnan(last_loss) else "Inf"),
                               step + 1, lr, stage.state())
            seconds += time.perf_counter() - started
            cpu_seconds += time.process_time() - cpu_started
            losses.append(last_loss)
            step += 1
            bar.advance(1)
            bar.update(status=f"loss {last_loss:.4f} · {step / max(seconds, 1e-9):.2f} step/s")
            if (limit is not None or cpu_limit is not None) and dist.any(
                    (limit is not None and seconds >= limit)
                    or (cpu_limit is not None and cpu_seconds >= cpu_limit)):
                total = step  # the time budget is spent (on some rank): this step is the last
            validating = has_val and (step % training["validation_freq"] == 0 or step == total)
            saved = False
            if main and (step % training["log_freq"] == 0 or step == total or validating):
                record = {"step": step, "loss": sum(losses) / len(losses), "lr": lr,
                          "seconds": round(seconds, 4), "cpu_seconds": round(cpu_seconds, 4)}
                losses = []
                if validating:
                    record.update(validate(state, val_ds, device=device))
                    model.train()
                    value = record.get(metric)
                    if value is not None and (best is None or value > best):
                        best = value
                        save(rd.BEST_FILE, step, seconds, best)
                        saved = True
                rd.append_metrics(stage.dir, record)
                tracker.log(record, validated=validating)
            if main and (step % training["snapshot_freq"] == 0 or step == total):
                save(rd.MODEL_FILE, step, seconds, best)
                saved = True
            if saved:
                _hand_over(stage, cfg, tracker)
    if main and not (stage.dir / rd.MODEL_FILE).is_file():
        save(rd.MODEL_FILE, step, seconds, best)
        _hand_over(stage, cfg, tracker)
    tracker.close()
    dist.barrier()  # the other ranks return once rank 0 has written the run
    return {"run_dir": str(run_dir), "model": kind, "steps": step, "seconds": seconds,
            "cpu_seconds": cpu_seconds,
            "loss": last_loss, "metric": metric, "best_metric": best,
            "model_file": str(run_dir / rd.MODEL_FILE),
            "best_file": str(run_dir / rd.BEST_FILE) if best is not None else None,
            "device": str(device), "amp": bool(amp)}


def _hand_over(stage: RunStage, cfg: dict[str, Any], tracker: Tracker) -> None:
    """A good checkpoint was saved: ``config.yml`` with the first one, and a new run moves
    from its work folder into the run directory (the tracker follows it)."""
    if stage.promoted:
        stage.checkpoint_saved(cfg)
        return

    def move() -> Path:
        stage.checkpoint_saved(cfg)
        return stage.dir

    tracker.relocate(move)
