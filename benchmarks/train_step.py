"""Seconds per training step and peak memory: fp32 / amp / checkpoint / both, both models.

Runs the trainer's own step (:func:`volseg.training.loop.train_step`: forward under autocast,
backward, clip, AdamW, EMA for diffusion) with the default model configs on random batches.
Each combination runs in a fresh subprocess so peak memory is its own: on CUDA
``torch.cuda.max_memory_allocated``; on CPU the growth of the peak resident set size
(``ru_maxrss``) over the process after the model and optimizer were built (activations +
gradients + optimizer state + allocator slack; coarse). ``activation_bytes`` counts exactly the
tensors autograd saves for the backward pass of one training forward (what checkpointing cuts).

    .venv/bin/python benchmarks/train_step.py                       # 32^3 and 64^3, CPU
    .venv/bin/python benchmarks/train_step.py --patch 32 --model unet --json -

Writes ``benchmarks/train_step.json`` (``--json`` elsewhere) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from volseg.jsonout import write_json

HERE = Path(__file__).resolve().parent
MODES = {"fp32": (False, False), "amp": (True, False), "checkpoint": (False, True),
         "amp+checkpoint": (True, True)}


def run_one(model: str, patch: int, amp: bool, checkpoint: bool, steps: int, device: str,
            batch_size: int) -> dict:
    """Time ``steps`` training steps (after one warm-up step) in this process."""
    import resource
    import time

    import torch

    from volseg.models import build_model, resolve_device
    from volseg.training.config import resolve
    from volseg.training.loop import EMA, grad_scaler, make_optimizer, train_step
    from volseg.training.trainer import model_config

    dev = resolve_device(device)
    cfg = resolve(model_type=model, overrides={"training.batch_size": batch_size})
    cfg["model"].update(norm_mean=0.0, norm_std=1.0)
    if model == "diffusion":
        cfg["model"].update(target_mean=0.0, target_std=1.0)
    torch.manual_seed(0)
    net = build_model(dict(model_config(cfg), checkpoint=checkpoint)).to(dev).train()
    optimizer = make_optimizer(net.parameters(), cfg["optim"])
    scaler = grad_scaler(dev, amp)
    ema = EMA(net, 0.999) if model == "diffusion" else None
    generator = torch.Generator().manual_seed(0)
    shape = (batch_size, 1, patch, patch, patch)
    batch = {"image": torch.rand(shape, device=dev)}
    if model == "unet":
        batch["label"] = (torch.rand(shape, device=dev) > 0.7).to(torch.uint8)
    else:
        batch["target"] = torch.rand(shape, device=dev)
    activation = saved_activation_bytes(net, batch, cfg, amp, dev, generator)
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    times, cpu_times = [], []
    for i in range(steps + 1):
        start, cpu_start = time.perf_counter(), time.process_time()
        train_step(net, batch, cfg=cfg, optimizer=optimizer, scaler=scaler, device=dev, amp=amp,
                   generator=generator, ema=ema)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
    if dev.type == "cuda":
        peak = int(torch.cuda.max_memory_allocated())
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base_rss
    times.sort()
    cpu_times.sort()
    return {"model": model, "patch": patch, "amp": amp, "checkpoint": checkpoint,
            "batch_size": batch_size, "device": str(dev), "threads": torch.get_num_threads(),
            "seconds_per_step": round(times[len(times) // 2], 4),
            "cpu_seconds_per_step": round(cpu_times[len(cpu_times) // 2], 4),
            "peak_bytes": peak, "activation_bytes": activation, "params": sum(p.numel() for p in net.parameters())}


def saved_activation_bytes(net, batch, cfg, amp, dev, generator) -> int:
    """Bytes autograd keeps for the backward pass of one training forward (each tensor once)."""
    import torch

    from volseg.training.loop import autocast, step_loss

    seen: set = set()
    total = 0

    def pack(t):
        nonlocal total
        key = (t.data_ptr(), t.numel(), t.dtype)
        if key not in seen:
            seen.add(key)
            total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast(dev, amp):
        loss = step_loss(net, batch, cfg, torch.Generator().manual_seed(0))
    del loss
    return int(total)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["unet", "diffusion", "both"], default="both")
    parser.add_argument("--patch", type=int, action="append", help="cube side (repeatable)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps (median reported)")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--json", default=str(HERE / "train_step.json"))
    parser.add_argument("--one", nargs=4, metavar=("MODEL", "PATCH", "AMP", "CKPT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        import torch

        torch.set_num_threads(args.threads)
        model, patch, amp, ckpt = args.one
        row = run_one(model, int(patch), amp == "1", ckpt == "1", args.steps, args.device,
                      args.batch_size)
        print(json.dumps(row))
        return row
    models = ["unet", "diffusion"] if args.model == "both" else [args.model]
    rows = []
    for model in models:
        for patch in args.patch or [32, 64]:
            for mode, (amp, ckpt) in MODES.items():
                cmd = [sys.executable, __file__, "--one", model, str(patch), str(int(amp)),
                       str(int(ckpt)), "--steps", str(args.steps), "--device", args.device,
                       "--threads", str(args.threads), "--batch-size", str(args.batch_size)]
                out = subprocess.run(cmd, capture_output=True, text=True, check=False)
                if out.returncode:
                    row = {"model": model, "patch": patch, "amp": amp, "checkpoint": ckpt,
                           "error": out.stderr.strip().splitlines()[-1]}
                else:
                    row = json.loads(out.stdout.strip().splitlines()[-1])
                row["mode"] = mode
                rows.append(row)
                _print_row(row)
    _add_ratios(rows)
    report = {"benchmark": "train_step", "device": args.device, "threads": args.threads,
              "batch_size": args.batch_size, "rows": rows}
    print()
    print(table(rows))
    if args.json:
        write_json(report, args.json)  # '-' = stdout; strict JSON (non-finite -> null), atomic
    return report


def _add_ratios(rows: list[dict]) -> None:
    base = {(r["model"], r["patch"]): r for r in rows if r.get("mode") == "fp32" and "error" not in r}
    for row in rows:
        ref = base.get((row["model"], row["patch"]))
        if ref and "error" not in row:
            row["speedup_vs_fp32"] = round(ref["seconds_per_step"] / row["seconds_per_step"], 3)
            row["cpu_speedup_vs_fp32"] = round(ref["cpu_seconds_per_step"]
                                               / row["cpu_seconds_per_step"], 3)
            row["memory_vs_fp32"] = round(row["peak_bytes"] / max(ref["peak_bytes"], 1), 3)


def _print_row(row: dict) -> None:
    if "error" in row:
        print(f"{row['model']:<10} {row['patch']:>3}^3 {row['mode']:<15} error: {row['error']}",
              flush=True)
    else:
        print(f"{row['model']:<10} {row['patch']:>3}^3 {row['mode']:<15} "
              f"{row['seconds_per_step']:>8.3f} s/step ({row['cpu_seconds_per_step']:.3f} CPU s) "
              f"{row['peak_bytes'] / 2**20:>9.1f} MiB peak, "
              f"{row['activation_bytes'] / 2**20:.1f} MiB activations",
              flush=True)


def table(rows: list[dict]) -> str:
    """A Markdown table of the rows."""
    header = ("| model | patch | mode | s/step (wall) | CPU s/step | peak MiB (RSS growth) | "
              "activations MiB | speed vs fp32 (wall / CPU) | peak vs fp32 |")
    lines = [header, "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['patch']}^3 | {r['mode']} | error | | | | | |")
            continue
        lines.append(f"| {r['model']} | {r['patch']}^3 | {r['mode']} | "
                     f"{r['seconds_per_step']:.3f} | {r['cpu_seconds_per_step']:.3f} | "
                     f"{r['peak_bytes'] / 2**20:.1f} | {r['activation_bytes'] / 2**20:.1f} | "
                     f"{r.get('speedup_vs_fp32', 1.0):.2f}x / "
                     f"{r.get('cpu_speedup_vs_fp32', 1.0):.2f}x | {r.get('memory_vs_fp32', 1.0):.2f}x |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
