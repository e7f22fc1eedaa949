"""Is the streamed patch loader fast enough to keep a UNet3D training step busy?

Measures, on a synthetic scroll written to a temporary OME-Zarr:

* loader throughput (patches/s) of ``make_datasets`` + ``make_loader`` streaming random,
  label-balanced patches straight from the volume with ``--workers`` worker processes, with and
  without the default 3D augmentation (worker start-up excluded: the first batch is a warm-up);
* the time of one UNet3D training step (forward, BCE loss, backward, Adam) on a batch of the
  same patches, and the patches/s that implies;
* the combined rate: the loader feeding the training step, vs the step alone.

The loader is not the bottleneck when its patches/s exceeds the step's patches/s. Prints a table
and one JSON object (``--json PATH`` also writes it to a file).

    .venv/bin/python benchmarks/loader.py                 # 64^3 patches, 2 workers, batch 2
    .venv/bin/python benchmarks/loader.py --patch 32 --batches 10 --json loader.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def _loader_rate(loader, batches: int, batch_size: int) -> dict:
    it = iter(loader)
    start = time.perf_counter()
    next(it)  # warm-up: worker start-up and the first prefetch
    warm = time.perf_counter() - start
    start = time.perf_counter()
    n = 0
    for _ in range(batches):
        next(it)
        n += batch_size
    seconds = time.perf_counter() - start
    return {"patches_per_s": n / seconds, "ms_per_patch": 1000 * seconds / n, "first_batch_s": warm}


def _model(torch):
    try:
        from volseg.models import build_model
    except ImportError:
        return None, "volseg.models is not available: no training-step figure"
    torch.manual_seed(0)
    return build_model({"type": "unet", "in_channels": 1, "out_ch": 1, "ch": 16, "depth": 3}), None


def _step(torch, model, opt, batch) -> None:
    image = batch["image"]
    target = (batch["label"] == 1).float()
    out = model(image)
    loss = torch.nn.functional.binary_cross_entropy(out.clamp(1e-6, 1 - 1e-6), target)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def run(args) -> dict:
    import torch

    from volseg.data.dataset import make_datasets, make_loader
    from volseg.data.synth import write_synth

    patch = (args.patch,) * 3
    with tempfile.TemporaryDirectory(prefix="volseg-bench-") as tmp:
        volume = args.volume or write_synth("scroll", Path(tmp) / "scroll.zarr", shape=args.shape, seed=0, chunks=64)
        n_items = (args.batches + 2) * args.batch_size
        rows = {}
        loaders = {}
        for name, augment in (("no_augment", False), ("augment", None)):
            train, _ = make_datasets(volume, task="segmentation", patch=patch, val_fraction=0, seed=args.seed,
                                     augment=augment, samples_per_epoch=n_items, foreground_fraction=0.5)
            loader = make_loader(train, batch_size=args.batch_size, workers=args.workers, seed=args.seed)
            rows[name] = _loader_rate(loader, args.batches, args.batch_size)
            loaders[name] = loader
        model, note = _model(torch)
        result = {"patch": list(patch), "batch_size": args.batch_size, "workers": args.workers,
                  "volume_shape": [args.shape] * 3 if not args.volume else None,
                  "torch_threads": torch.get_num_threads(), "loader": rows, "note": note}
        if model is not None:
            opt = torch.optim.Adam(model.parameters(), lr=1e-3)
            batch = next(iter(make_loader(loaders["augment"].dataset, batch_size=args.batch_size, workers=0)))
            _step(torch, model, opt, batch)  # warm-up
            start = time.perf_counter()
            for _ in range(args.steps):
                _step(torch, model, opt, batch)
            step_s = (time.perf_counter() - start) / args.steps
            result["train_step_s"] = step_s
            result["train_patches_per_s"] = args.batch_size / step_s
            it = iter(loaders["augment"])
            next(it)
            start = time.perf_counter()
            for _ in range(args.steps):
                _step(torch, model, opt, next(it))
            fed = (time.perf_counter() - start) / args.steps
            result["fed_step_s"] = fed
            step_rate = result["train_patches_per_s"]
            result["loader_over_step"] = {k: v["patches_per_s"] / step_rate for k, v in rows.items()}
            result["loader_is_bottleneck"] = rows["augment"]["patches_per_s"] < result["train_patches_per_s"]
        for loader in loaders.values():
            del loader
    return result


def _table(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"streamed loader vs UNet3D step ({'x'.join(map(str, result['patch']))}, "
                  f"batch {result['batch_size']}, {result['workers']} workers)")
    table.add_column("what")
    table.add_column("patches/s", justify="right")
    table.add_column("ms/patch", justify="right")
    for name, row in result["loader"].items():
        table.add_row(f"loader ({name.replace('_', ' ')})", f"{row['patches_per_s']:.1f}", f"{row['ms_per_patch']:.1f}")
    if "train_step_s" in result:
        table.add_row("UNet3D training step", f"{result['train_patches_per_s']:.1f}",
                      f"{1000 * result['train_step_s'] / result['batch_size']:.1f}")
        table.add_row("step fed by the loader (augment)", f"{result['batch_size'] / result['fed_step_s']:.1f}",
                      f"{1000 * result['fed_step_s'] / result['batch_size']:.1f}")
    Console(stderr=True).print(table)
    if result.get("note"):
        Console(stderr=True).print(result["note"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--volume", help="Stream from this volume (with NGFF labels) instead of a synthetic scroll.")
    parser.add_argument("--shape", type=int, default=128, help="Side of the synthetic scroll (voxels).")
    parser.add_argument("--patch", type=int, default=64, help="Patch side (voxels).")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batches", type=int, default=20, help="Timed loader batches.")
    parser.add_argument("--steps", type=int, default=5, help="Timed training steps.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="Also write the JSON object to this file.")
    args = parser.parse_args(argv)
    result = run(args)
    _table(result)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
