"""Speed of `volseg predict --stitch` with its defaults: this tree against an older one, and the
model forward's GFLOP/s against one convolution measured in the same run.

    python benchmarks/predict_speed.py [--size 192] [--baseline eb9c819] [--repeat 3] [--json FILE]

* **predict**: the default UNet (``configs/unet3d.yml``: 16 features, depth 3, 28.6 GFLOP per
  64^3 patch; random weights, seed 0) over a ``size``^3 float32 OME-Zarr volume, ``volseg
  predict RUN VOL -o OUT --stitch`` with every other option at its default, each run in its own
  process (wall time from start to exit: imports and model loading included), this tree and
  the ``--baseline`` commit (extracted with ``git archive``) interleaved ``--repeat`` times;
  medians. The two outputs are compared voxel for voxel (``max_abs_diff``).
* **forward**: in a worker thread of a fresh process (as ``predict``'s forwards run in the
  scheduler's threads), with all cores as torch threads and the allocator as the command line
  sets it (:mod:`volseg.allocator`), the model forward at 64^3 as ``predict`` now runs it (the
  automatic batch, channels_last_3d) and as it ran before (batch 4, contiguous), against one
  32->32 3^3 convolution over 64^3 (batch 1, the faster of the two layouts) measured in the same
  process: the machine's practical limit. FLOPs from ``torch.utils.flop_counter``. The same
  again in a process whose allocator is left as it is (``VOLSEG_MALLOC=system``,
  ``allocator_untuned``): what the page faults of freed and re-allocated activations cost.
* **batches**: seconds per patch and voxels per second against the batch for 64^3 patches
  (batch 1-8) in both layouts and 128^3 (batch 1, 2; contiguous at batch 1 only), and onnxruntime at 64^3 (``--no-onnx`` skips the export it needs):
  what ``--batch-size auto`` and ``--runtime auto`` are chosen from.

The load average is recorded before and after every measurement (``load``): on a shared
machine, compare the medians only where it stayed low. Forward and convolution timings are the
best of ``--forward-repeat`` calls (the least disturbed). Prints one JSON object, then a table;
writes ``benchmarks/predict_speed.json`` (``--json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from volseg.jsonout import write_json  # noqa: E402


def load() -> float:
    return round(os.getloadavg()[0], 2)


def make_run(folder: Path) -> Path:
    """A run of the default UNet (configs/unet3d.yml) with random weights (seed 0)."""
    import torch

    from volseg.models import build_model
    from volseg.training.config import resolve
    from volseg.training.trainer import model_config

    cfg = resolve(model_type="unet")
    cfg["model"].update(norm_mean=100.0, norm_std=20.0)
    torch.manual_seed(0)
    mcfg = model_config(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"format": "volseg-run", "version": 1, "model_config": mcfg, "config": cfg,
                "state_dict": build_model(mcfg).state_dict(), "step": 0}, folder / "model.pt")
    return folder


def extract(ref: str, folder: Path) -> Path:
    """The volseg package of commit ``ref`` of this repository, in ``folder`` (git archive)."""
    folder.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "volseg"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return folder


def predict_cli(tree: Path, run: Path, volume: Path, out: Path) -> dict:
    """``volseg predict RUN VOLUME -o OUT --stitch`` with the package of ``tree``: wall time and result."""
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    report = out.with_suffix(".json")
    env = dict(os.environ, PYTHONPATH=str(tree))
    before = load()
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "volseg", "predict", str(run), str(volume), "-o", str(out),
                           "--stitch", "--quiet", "--json", str(report)], capture_output=True, text=True, env=env,
                          cwd=str(tree))  # `python -m` puts the working directory first on the path
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"predict with {tree} failed: {proc.stderr.strip()}")
    result = json.loads(report.read_text())
    keep = ("patches", "model_seconds", "runtime", "layout", "batch_size")
    return {"seconds": round(seconds, 2), **{k: result[k] for k in keep if k in result}, "load": [before, load()]}


def best_seconds(fn, repeat: int) -> tuple[float, list]:
    """Fewest seconds of ``fn()`` over ``repeat`` calls after one warm-up, and the load around them.

    The best of several calls, as ``timeit`` reports: on a machine shared with other work a
    call is only ever slowed down, so the fastest is the closest to the machine's own speed,
    and a forward and a convolution measured minutes apart stay comparable.
    """
    fn()
    before, times = load(), []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), [before, load()]


def forward_flops(model, shape) -> float:
    """FLOPs of one forward of ``model`` on a (1, 1, *shape) input (convolutions, matmuls)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(torch.zeros(1, 1, *shape))
    return float(counter.get_total_flops())


def timed_forward(model, patch: int, batch: int, channels_last: bool, repeat: int) -> dict:
    """Seconds per patch of ``model`` at ``batch`` patches of ``patch``^3 in one layout."""
    import torch

    from volseg.inference.runtime import as_layout, prepare_module

    prepare_module(model, channels_last) if channels_last else model.to(memory_format=torch.contiguous_format)
    x = as_layout(torch.from_numpy((100 + 20 * np.random.default_rng(0).normal(
        size=(batch, 1, patch, patch, patch))).astype(np.float32)), channels_last)
    with torch.inference_mode():
        seconds, around = best_seconds(lambda: model(x), repeat)
    return {"patch": patch, "batch": batch, "layout": "channels_last_3d" if channels_last else "contiguous",
            "seconds_per_patch": round(seconds / batch, 4),
            "mvoxels_per_s": round(batch * patch ** 3 / seconds / 1e6, 3), "load": around}


def interleaved(run: Path, batch: int, repeat: int) -> tuple[dict, dict, dict]:
    """The forward now (``batch``, channels_last_3d) and before (batch 4, contiguous) and the
    convolution limit (one 32->32 3^3 convolution over (1, 32, 64, 64, 64), both layouts), timed in turns, ``repeat`` rounds, best of each:
    a burst of other work on the machine then slows all of them alike or none."""
    import torch

    from volseg.inference.runtime import as_layout, prepare_module
    from volseg.models import load_model

    def data(n, channels, fmt):
        return torch.from_numpy((100 + 20 * np.random.default_rng(0).normal(size=(n, channels, 64, 64, 64)))
                                .astype(np.float32)).contiguous(memory_format=fmt)

    last, contiguous = torch.channels_last_3d, torch.contiguous_format
    model_now = prepare_module(load_model(run / "model.pt"), True)
    model_before = load_model(run / "model.pt")
    torch.manual_seed(0)
    conv_c = torch.nn.Conv3d(32, 32, 3, padding=1, bias=False).eval()
    conv_l = torch.nn.Conv3d(32, 32, 3, padding=1, bias=False).eval()
    conv_l.load_state_dict(conv_c.state_dict())
    conv_l.to(memory_format=last)
    x_now, x_before = as_layout(data(batch, 1, contiguous), True), data(4, 1, contiguous)
    y_c, y_l = data(1, 32, contiguous), data(1, 32, last)
    cases = {"now": lambda: model_now(x_now), "before": lambda: model_before(x_before),
             "contiguous": lambda: conv_c(y_c), "channels_last_3d": lambda: conv_l(y_l)}
    best = {name: float("inf") for name in cases}
    around = [load()]
    with torch.inference_mode():
        for fn in cases.values():
            fn()
        for _ in range(repeat):
            for name, fn in cases.items():
                t0 = time.perf_counter()
                fn()
                best[name] = min(best[name], time.perf_counter() - t0)
    around.append(load())

    def row(name, n, layout):
        return {"patch": 64, "batch": n, "layout": layout, "seconds_per_patch": round(best[name] / n, 4),
                "mvoxels_per_s": round(n * 64 ** 3 / best[name] / 1e6, 3), "load": around}

    flops = 2 * 32 * 32 * 27 * 64 ** 3
    conv = {name: {"gflops_per_s": round(flops / best[name] / 1e9, 1), "load": around}
            for name in ("contiguous", "channels_last_3d")}
    conv["best_gflops_per_s"] = max(v["gflops_per_s"] for v in conv.values())
    return row("now", batch, "channels_last_3d"), row("before", 4, "contiguous"), conv


def onnx_rows(run: Path, repeat: int, batches=(1, 4)) -> list:
    """onnxruntime at 64^3 through ``--runtime onnx``'s cached export (VOLSEG_MODEL_CACHE)."""
    import torch

    from volseg.inference.runner import cached_model
    from volseg.inference.runtime import onnx_model

    t0 = time.perf_counter()
    model = cached_model(str(onnx_model(str(run / "model.pt"))), "cpu", torch.get_num_threads())
    export = round(time.perf_counter() - t0, 1)
    rows = []
    for batch in batches:
        x = torch.from_numpy((100 + 20 * np.random.default_rng(0).normal(size=(batch, 1, 64, 64, 64))).astype(np.float32))
        seconds, around = best_seconds(lambda: model(x), repeat)
        rows.append({"patch": 64, "batch": batch, "layout": "onnxruntime", "seconds_per_patch": round(seconds / batch, 4),
                     "mvoxels_per_s": round(batch * 64 ** 3 / seconds / 1e6, 3), "load": around,
                     "export_and_load_seconds": export})
    return rows


def measure(args, tmp: Path) -> dict:
    import torch

    from volseg.io import write_volume

    run = make_run(tmp / "run")
    volume = tmp / "vol.zarr"
    rng = np.random.default_rng(0)
    write_volume(volume, (100 + 20 * rng.normal(size=(args.size,) * 3)).astype(np.float32))
    trees = {"baseline": extract(args.baseline, tmp / "baseline"), "this": ROOT}
    runs: dict = {name: [] for name in trees}
    for _ in range(args.repeat):  # interleaved, so a change of load hits both alike
        for name, tree in trees.items():
            runs[name].append(predict_cli(tree, run, volume, tmp / f"{name}.zarr"))
            print(f"predict {name}: {runs[name][-1]}", flush=True)
    import zarr

    a, b = (zarr.open_array(str(tmp / f"{n}.zarr" / "0"), mode="r")[:] for n in trees)
    med = {n: statistics.median(r["seconds"] for r in rs) for n, rs in runs.items()}

    forward = forward_in_subprocess(args, run, tmp)
    untuned = forward_in_subprocess(args, run, tmp, untuned=True)
    return {
        "benchmark": "predict_speed", "volume": [args.size] * 3, "baseline": args.baseline,
        "model": "unet (configs/unet3d.yml: ch 16, depth 3), random weights",
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "torch": torch.__version__, "torch_threads": os.cpu_count()},
        "predict": {"runs": runs, "median_seconds": med, "speedup": round(med["baseline"] / med["this"], 3),
                    "max_abs_diff": float(np.abs(a.astype(np.float64) - b).max())},
        "forward": forward["forward"], "batches": forward["batches"],
        "allocator_untuned": {"forward": untuned["forward"], "batches": untuned["batches"]},
    }


def forward_in_subprocess(args, run: Path, tmp: Path, *, untuned: bool = False) -> dict:
    """:func:`forward_report` in a fresh process (``--forward-only``), allocator tuned or not."""
    env = dict(os.environ, VOLSEG_MODEL_CACHE=str(tmp / "model-cache"))
    if untuned:
        env["VOLSEG_MALLOC"] = "system"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--forward-only", str(run),
           "--forward-repeat", str(args.forward_repeat)] + ([] if args.onnx and not untuned else ["--no-onnx"]) \
        + (["--no-sweep"] if untuned else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def forward_report(run: Path, args) -> dict:
    """The forward, conv-limit and batch rows, measured in a worker thread of this process."""
    import threading

    import torch

    from volseg.allocator import tune
    from volseg.inference.runtime import auto_batch_size
    from volseg.models import load_model

    tuned = tune()
    torch.set_num_threads(os.cpu_count() or 1)
    result: dict = {}

    def work() -> None:
        torch.set_num_threads(os.cpu_count() or 1)  # OpenMP thread counts are per calling thread
        model = load_model(run / "model.pt")
        flops = forward_flops(model, (64, 64, 64))
        now, before, conv = interleaved(run, auto_batch_size((64, 64, 64)), args.forward_repeat)
        gflops = {"now": round(flops / now["seconds_per_patch"] / 1e9, 1),
                  "before": round(flops / before["seconds_per_patch"] / 1e9, 1)}
        sweep = [timed_forward(model, p, b, cl, args.forward_repeat)
                 for p, b, cl in [(64, b, cl) for b in (1, 2, 4, 8) for cl in (False, True)]
                 + [(128, 1, False), (128, 1, True), (128, 2, True)]] if args.sweep else []
        if args.onnx:
            sweep += onnx_rows(run, args.forward_repeat)
        result.update(forward={"gflop_per_patch_64": round(flops / 1e9, 2), "allocator_tuned": tuned,
                               "now": now, "before": before, "gflops_per_s": gflops, "conv_32_32_3_64": conv,
                               "fraction_of_conv": round(gflops["now"] / conv["best_gflops_per_s"], 3)},
                      batches=sweep)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    return result


def table(report: dict) -> str:
    p, f = report["predict"], report["forward"]
    lines = [f"volseg predict --stitch, defaults, {'x'.join(map(str, report['volume']))} float32, "
             f"{report['machine']['cores']} cores (median of {len(p['runs']['this'])}):",
             "| tree | seconds | patches | model seconds | runtime | batch |", "|---|---|---|---|---|---|"]
    for name, rows in p["runs"].items():
        last = rows[-1]
        lines.append(f"| {name} | {p['median_seconds'][name]:.1f} | {last.get('patches', '')} | "
                     f"{statistics.median(r.get('model_seconds', float('nan')) for r in rows):.1f} | "
                     f"{last.get('runtime', 'torch')} {last.get('layout', 'contiguous')} | {last.get('batch_size', 4)} |")
    lines += [f"speedup {p['speedup']:.2f}x, max |difference| {p['max_abs_diff']:.2e}", "",
              f"forward at 64^3 ({f['gflop_per_patch_64']} GFLOP per patch): now {f['gflops_per_s']['now']} GFLOP/s "
              f"(batch {f['now']['batch']}, {f['now']['layout']}), before {f['gflops_per_s']['before']} GFLOP/s; "
              f"one 32->32 3^3 convolution {f['conv_32_32_3_64']['best_gflops_per_s']} GFLOP/s: "
              f"{100 * f['fraction_of_conv']:.0f}%"]
    u = report.get("allocator_untuned", {}).get("forward")
    if u:
        lines.append(f"allocator left as it is (VOLSEG_MALLOC=system): now {u['gflops_per_s']['now']} GFLOP/s, "
                     f"before {u['gflops_per_s']['before']} GFLOP/s, convolution "
                     f"{u['conv_32_32_3_64']['best_gflops_per_s']} GFLOP/s: {100 * u['fraction_of_conv']:.0f}%")
    lines += ["",
              "| patch | batch | layout | s / patch | Mvoxel/s | load |", "|---|---|---|---|---|---|"]
    for r in report["batches"]:
        lines.append(f"| {r['patch']} | {r['batch']} | {r['layout']} | {r['seconds_per_patch']:.3f} | "
                     f"{r['mvoxels_per_s']:.3f} | {r['load'][0]}-{r['load'][1]} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--baseline", default="eb9c819", help="git commit of the tree to compare with")
    parser.add_argument("--repeat", type=int, default=3, help="predict runs per tree (median)")
    parser.add_argument("--forward-repeat", type=int, default=5, help="timed calls per forward measurement (best of)")
    parser.add_argument("--no-onnx", dest="onnx", action="store_false", help="skip the onnxruntime rows")
    parser.add_argument("--json", default=str(HERE / "predict_speed.json"))
    parser.add_argument("--forward-only", metavar="RUN", help=argparse.SUPPRESS)
    parser.add_argument("--no-sweep", dest="sweep", action="store_false", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.forward_only:
        report = forward_report(Path(args.forward_only), args)
        print(json.dumps(report))
        return report
    with tempfile.TemporaryDirectory(prefix="volseg-speed-") as tmp:
        t0 = time.perf_counter()
        report = measure(args, Path(tmp))
        report["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(report, indent=1))
    write_json(report, args.json)
    print(table(report))
    return report


if __name__ == "__main__":
    main()
