"""What diffusion buys over a regression UNet at equal training time (CPU, time-boxed).

Translation (T1 -> T2 on ``volseg synth brain``): trains, each for the same ``--seconds`` of
training time, the regression UNet (``model.type: unet``, ``loss.type: l1``) and the conditional
diffusion model predicting eps, x0 and v, on ``--cases`` training cases, then scores on
``--held-out`` other cases, inside the head mask: the UNet's image, one diffusion sample from
pure noise in 10 DDIM steps, and the mean of ``--samples`` samples (``predict --samples``).
Denoising (``volseg synth scan``, with ``--denoising``): the same models trained on degraded ->
clean scans, scored against the degraded input itself.

PSNR (data range of the truth inside the mask) and SSIM (scikit-image's 7-voxel 3D SSIM map,
averaged over the mask) come from :mod:`volseg.metrics.intensity`. Prediction runs through
:func:`volseg.inference.predict` with the whole held-out volume as one patch.

    .venv/bin/python benchmarks/diffusion_translation.py --seconds 150
    .venv/bin/python benchmarks/diffusion_translation.py --seconds 900 --denoising   # the issue's budget

Added: the mean sample std in the tumour vs the rest of the head (T1 -> T2), SDEdit rows for
denoising (``--start-t``, eps and x0) and a learning curve (``--curve``: every model retrained
for those fractions of the budget and scored the same way).

Writes ``benchmarks/diffusion_translation.json`` (``--json`` elsewhere) and prints a table.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from volseg.inference.settings import predict_options
from volseg.jsonout import write_json

HERE = Path(__file__).resolve().parent
MODELS = ("unet", "eps", "x0", "v")


def masked_scores(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> dict:
    """PSNR and SSIM of ``pred`` against ``truth`` inside ``mask`` (data range: the truth's there)."""
    from skimage.metrics import structural_similarity

    from volseg.metrics.intensity import SSIM_WIN, psnr_from_sums, squared_error

    data_range = float(truth[mask].max() - truth[mask].min())
    sse, count = squared_error(pred[mask], truth[mask])
    _, smap = structural_similarity(truth.astype(np.float64), pred.astype(np.float64), win_size=SSIM_WIN,
                                    data_range=data_range, full=True)
    return {"psnr": round(psnr_from_sums(sse, count, data_range), 3),
            "ssim": round(float(smap[mask].mean()), 4)}


def _overrides(model: str, args) -> tuple[str, dict]:
    """``(model type, config overrides)``; ``model`` is unet, eps, x0, v, or ``sdedit-eps`` /
    ``sdedit-x0`` (denoising from the degraded input noised to ``--start-t``)."""
    budget = {"training.max_seconds" if args.clock == "wall" else "training.max_cpu_seconds": args.seconds}
    common = {**budget, "training.n_iters": 10 ** 6, "training.validation_freq": 10 ** 6,
              "training.snapshot_freq": 10 ** 6, "training.log_freq": 25, "training.device": "cpu",
              "training.seed": args.seed, "data.patch": [args.patch] * 3, "data.val_fraction": 0.0}
    if model == "unet":
        return "unet", {**common, "loss.type": "l1", "model.ch": args.unet_ch}
    start = {}
    if model.startswith("sdedit-"):
        model, start = model.split("-", 1)[1], {"diffusion.start_t": args.start_t}
    return "diffusion", {**common, **start, "diffusion.prediction": model, "model.ch": args.ch,
                         "optim.lr": args.lr, "training.batch_size": 2}


def _train(model: str, sources: list[str], run: Path, args) -> dict:
    from volseg.data.mix import Sources
    from volseg.training import train

    kind, overrides = _overrides(model, args)
    result = train(Sources(paths=sources), run, model_type=kind, overrides=overrides,
                   quiet=not sys.stderr.isatty())
    return {"steps": result["steps"], "train_seconds": round(result["seconds"], 1),
            "train_cpu_seconds": round(result["cpu_seconds"], 1), "final_loss": round(result["loss"], 5)}


def _predict(run: Path, volume: str, out: Path, shape, *, samples: int, seed: int) -> np.ndarray:
    import zarr

    from volseg.inference import predict

    predict(run, volume, out, *predict_options(patch=tuple(shape), stitch=True, samples=samples, seed=seed, device="cpu", quiet=True, chunks=max(shape)))
    return zarr.open_array(str(out / "0"), mode="r")[:]


def _task(name: str, root: Path, args) -> dict:
    """Train every model on the task's training volumes and score them on its held-out ones."""
    import zarr

    from volseg.data.brain import brain_tissues, head_mask, tumour_labels, write_brain
    from volseg.data.synth import write_synth

    shape = (args.shape,) * 3
    n = args.cases + args.held_out
    if name == "translation":
        write_brain(root / "brain.zarr", cases=n, shape=shape, seed=args.seed)
        volumes = [str(root / "brain.zarr" / f"case_{i:03d}") for i in range(n)]
        tissues = [brain_tissues(shape, seed=args.seed, case=i) for i in range(n)]
        masks = [head_mask(t) for t in tissues]
        tumours = [tumour_labels(t) > 0 for t in tissues]
    else:
        volumes, masks, tumours = [], [], None
        for i in range(n):
            path = root / f"scan_{i}.zarr"
            write_synth("scan", path, shape=shape, seed=args.seed + i)
            volumes.append(str(path))
            masks.append(zarr.open_array(str(path / "target" / "0"), mode="r")[:] > 0.05)
    train_set, held = volumes[:args.cases], list(range(args.cases, n))
    truths = {i: zarr.open_array(str(Path(volumes[i]) / "target" / "0"), mode="r")[:] for i in held}
    rows = []
    if name == "denoising":
        for i in held:
            cond = zarr.open_array(str(Path(volumes[i]) / "0"), mode="r")[:]
            rows.append({"model": "input", "output": "degraded input", "case": i,
                         **masked_scores(cond, truths[i], masks[i])})
    models = list(args.models) + (["sdedit-eps", "sdedit-x0"] if name == "denoising" and args.start_t else [])
    for model in models:
        run = root / f"{name}-{model}"
        t0 = time.perf_counter()
        info = _train(model, train_set, run, args)
        for i in held:
            out = root / f"{name}-{model}-{i}"
            if model == "unet":
                pred = _predict(run, volumes[i], out.with_suffix(".zarr"), shape, samples=1, seed=0)
                rows.append({"model": model, "output": "image", "case": i, **info,
                             **masked_scores(pred, truths[i], masks[i])})
                continue
            one = _predict(run, volumes[i], out.with_suffix(".one.zarr"), shape, samples=1, seed=i)
            rows.append({"model": model, "output": "1 sample", "case": i, **info,
                         **masked_scores(one, truths[i], masks[i])})
            mean = _predict(run, volumes[i], out.with_suffix(".mean.zarr"), shape, samples=args.samples, seed=i)
            std = zarr.open_array(str(out.with_suffix(".mean.zarr") / "uncertainty" / "0"), mode="r")[:]
            rows.append({"model": model, "output": f"mean of {args.samples}", "case": i, **info,
                         **masked_scores(mean, truths[i], masks[i]),
                         **_uncertainty(std, mean, truths[i], masks[i], None if tumours is None else tumours[i])})
        print(f"{name} {model}: {info['steps']} steps, {time.perf_counter() - t0:.0f} s with scoring",
              file=sys.stderr)
    return {"rows": rows, "summary": _summary(rows),
            "curve": _curve(name, root, models, train_set, held, volumes, truths, masks, shape, args)}


def _curve(name, root, models, train_set, held, volumes, truths, masks, shape, args) -> list[dict]:
    """Learning curve: each model retrained (same seed) for each ``--curve`` fraction of the budget,
    scored like the full run (UNet image, diffusion mean of ``--samples``); the full budget is the
    summary's row."""
    out = []
    for fraction in args.curve:
        part = argparse.Namespace(**{**vars(args), "seconds": args.seconds * fraction})
        for model in models:
            run = root / f"{name}-{model}-curve{fraction}"
            info = _train(model, train_set, run, part)
            scores = []
            for i in held:
                pred = _predict(run, volumes[i], root / f"{run.name}-{i}.zarr", shape,
                                samples=1 if model == "unet" else args.samples, seed=i)
                scores.append(masked_scores(pred, truths[i], masks[i]))
            out.append({"model": model, "fraction": fraction, "train_seconds": info["train_seconds"],
                        "train_cpu_seconds": info["train_cpu_seconds"], "steps": info["steps"],
                        "psnr": round(float(np.mean([x["psnr"] for x in scores])), 3),
                        "ssim": round(float(np.mean([x["ssim"] for x in scores])), 4)})
    return out


def _uncertainty(std, mean, truth, mask, tumour=None) -> dict:
    """Spearman rank correlation of the samples' std with the mean's absolute error (in the mask);
    with a ``tumour`` mask also the mean std in the tumour and in the rest of the head."""
    from scipy.stats import spearmanr

    out = {"std_error_rank_corr": round(float(spearmanr(std[mask], np.abs(mean - truth)[mask]).statistic), 3)}
    if tumour is not None and tumour.any() and (mask & ~tumour).any():
        out["std_tumour"] = round(float(std[tumour].mean()), 5)
        out["std_normal"] = round(float(std[mask & ~tumour].mean()), 5)
    return out


def _summary(rows: list[dict]) -> list[dict]:
    keys = []
    for r in rows:
        if (r["model"], r["output"]) not in keys:
            keys.append((r["model"], r["output"]))
    out = []
    for model, output in keys:
        sel = [r for r in rows if r["model"] == model and r["output"] == output]
        item = {"model": model, "output": output, "psnr": round(float(np.mean([r["psnr"] for r in sel])), 3),
                "ssim": round(float(np.mean([r["ssim"] for r in sel])), 4)}
        for key in ("steps", "train_seconds", "std_error_rank_corr", "std_tumour", "std_normal"):
            if all(key in r for r in sel):
                item[key] = sel[0][key] if key in ("steps", "train_seconds") else round(
                    float(np.mean([r[key] for r in sel])), 3 if key == "std_error_rank_corr" else 5)
        out.append(item)
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=150.0, help="training time per model")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="what --seconds counts: wall time, or the process's CPU time (fairer on a "
                        "shared machine)")
    parser.add_argument("--models", default=",".join(MODELS), help="comma list of unet, eps, x0, v")
    parser.add_argument("--denoising", action="store_true", help="also the denoising task (synth scan)")
    parser.add_argument("--cases", type=int, default=6, help="training cases (volumes) per task")
    parser.add_argument("--held-out", type=int, default=2, help="held-out cases scored per task")
    parser.add_argument("--shape", type=int, default=48, help="side of every case (voxels)")
    parser.add_argument("--patch", type=int, default=32, help="training patch side (voxels)")
    parser.add_argument("--curve", default="0.25,0.5",
                        help="learning curve: also train each model for these fractions of --seconds ('' : none)")
    parser.add_argument("--start-t", type=int, default=333,
                        help="denoising task: SDEdit rows starting at this t with eps and x0 (0: none)")
    parser.add_argument("--samples", type=int, default=4, help="samples averaged by predict --samples")
    parser.add_argument("--ch", type=int, default=16, help="diffusion model.ch (CPU-sized)")
    parser.add_argument("--unet-ch", type=int, default=16, help="UNet model.ch")
    parser.add_argument("--lr", type=float, default=1e-3, help="diffusion learning rate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: shared cores)")
    parser.add_argument("--json", default=str(HERE / "diffusion_translation.json"))
    args = parser.parse_args(argv)
    args.curve = [float(f) for f in args.curve.split(",") if f.strip()]
    if any(not 0 < f < 1 for f in args.curve):
        parser.error("--curve: fractions in (0, 1), e.g. 0.25,0.5")
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not args.models or set(args.models) - set(MODELS):
        parser.error(f"--models: use a comma list of {', '.join(MODELS)}")

    import torch

    torch.set_num_threads(args.threads)
    report = {"benchmark": "diffusion_translation", "device": "cpu", "threads": torch.get_num_threads(),
              "seconds_per_model": args.seconds, "clock": args.clock, "cases": args.cases,
              "held_out": args.held_out, "shape": args.shape, "patch": args.patch, "samples": args.samples,
              "sdedit_start_t": args.start_t, "diffusion": {"ch": args.ch, "lr": args.lr, "batch_size": 2, "ddim_steps": 10},
              "unet": {"ch": args.unet_ch, "loss": "l1"}, "tasks": {}}
    with tempfile.TemporaryDirectory(prefix="volseg-translate-") as tmp:
        for name in ("translation", "denoising") if args.denoising else ("translation",):
            report["tasks"][name] = _task(name, Path(tmp), args)
    for name, task in report["tasks"].items():
        print(f"\n{name} (held-out mean, inside the head mask)")
        print(f"{'model':<10} {'output':<15} {'PSNR dB':>8} {'SSIM':>7} {'steps':>6} {'rho(std,|err|)':>15} "
              f"{'std tumour/normal':>18}")
        for r in task["summary"]:
            rho = r.get("std_error_rank_corr")
            std = f"{r['std_tumour']:.4f}/{r['std_normal']:.4f}" if "std_tumour" in r else ""
            print(f"{r['model']:<10} {r['output']:<15} {r['psnr']:>8.2f} {r['ssim']:>7.4f} "
                  f"{r.get('steps', ''):>6} {'' if rho is None else f'{rho:.3f}':>15} {std:>18}")
        for c in task["curve"]:
            print(f"curve {c['model']:<10} {c['fraction']:.2f} of the budget: {c['steps']} steps, "
                  f"{c['psnr']:.2f} dB, SSIM {c['ssim']:.4f}")
    if args.json:
        write_json(report, args.json)  # '-' = stdout; strict JSON (non-finite -> null), atomic
    return report


if __name__ == "__main__":
    main()
