"""Validation Dice curve of the default UNet3D trained on `volseg synth scroll` (CPU, time-boxed).

Synthesises a scroll (default 160^3, seed 0), trains the default UNet config on patches streamed
from it for at most ``--minutes`` of CPU time in training steps (process CPU time, so the
budget means the same on a busy shared machine; validation excluded), and records the
validation Dice on the held-out slab (the last 10% of z) every ``--val-every`` steps.

    .venv/bin/python benchmarks/unet_learning_curve.py            # 5 CPU minutes
    .venv/bin/python benchmarks/unet_learning_curve.py --minutes 1 --json -

Writes ``benchmarks/unet_learning_curve.json`` (``--json`` elsewhere) and prints a table.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from volseg.jsonout import write_json

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="training time budget")
    parser.add_argument("--shape", default="160", help="synth scroll shape (N or DxHxW)")
    parser.add_argument("--patch", default="32",
                        help="patch size streamed from the scroll (CPU-sized; the default 64 costs 8x)")
    parser.add_argument("--val-every", type=int, default=25, help="steps between validations")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: this benchmark shares 2 busy cores)")
    parser.add_argument("--config", default=None, help="YAML config (default: the defaults)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra config override, e.g. optim.lr=0.001 (YAML value)")
    parser.add_argument("--json", default=str(HERE / "unet_learning_curve.json"))
    args = parser.parse_args(argv)

    import torch
    import yaml

    from volseg.data.synth import write_synth
    from volseg.training import train
    from volseg.training.config import parse_patch
    from volseg.training.run_dir import read_metrics

    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = {"training.max_cpu_seconds": args.minutes * 60.0, "training.n_iters": 100000,
                 "training.validation_freq": args.val_every, "training.log_freq": args.val_every,
                 "training.snapshot_freq": 100000, "training.device": "cpu",
                 "training.seed": args.seed, "data.patch": parse_patch(args.patch)}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = yaml.safe_load(value)
    with tempfile.TemporaryDirectory(prefix="volseg-curve-") as tmp:
        started = time.perf_counter()
        scroll = write_synth("scroll", Path(tmp) / "scroll.zarr", shape=args.shape,
                             seed=args.seed)
        synth_s = time.perf_counter() - started
        result = train(scroll, Path(tmp) / "run", model_type="unet", config_path=args.config,
                       overrides=overrides, quiet=not sys.stderr.isatty())
        records = read_metrics(Path(tmp) / "run")
        config = yaml.safe_load((Path(tmp) / "run" / "config.yml").read_text())
    curve = [{"step": r["step"], "seconds": r["seconds"], "cpu_seconds": r["cpu_seconds"],
              "loss": round(r["loss"], 5),
              "val_dice": r["val_dice"]} for r in records if "val_dice" in r]
    report = {
        "benchmark": "unet_learning_curve", "device": "cpu", "threads": torch.get_num_threads(),
        "minutes": args.minutes, "scroll_shape": args.shape, "synth_seconds": round(synth_s, 2),
        "patch": config["data"]["patch"], "batch_size": config["training"]["batch_size"],
        "lr": config["optim"]["lr"], "model": config["model"], "steps": result["steps"],
        "train_seconds": round(result["seconds"], 2),
        "train_cpu_seconds": round(result["cpu_seconds"], 2),
        "best_val_dice": result["best_metric"],
        "final_val_dice": curve[-1]["val_dice"] if curve else None, "curve": curve,
    }
    print(f"{'step':>6} {'cpu s':>8} {'wall s':>8} {'loss':>8} {'val_dice':>9}")
    for row in curve:
        print(f"{row['step']:>6} {row['cpu_seconds']:>8.1f} {row['seconds']:>8.1f} "
              f"{row['loss']:>8.4f} {row['val_dice']:>9.4f}")
    print(f"best val Dice {report['best_val_dice']} after {report['steps']} steps "
          f"({report['train_cpu_seconds']} CPU s / {report['train_seconds']} wall s of training, patch {report['patch']}, "
          f"batch {report['batch_size']}, lr {report['lr']})")
    if args.json:
        write_json(report, args.json)  # '-' = stdout; strict JSON (non-finite -> null), atomic
    return report


if __name__ == "__main__":
    main()
