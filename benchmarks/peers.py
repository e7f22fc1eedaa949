"""volseg against its peers on the same network and volume: wall time, patches per second, peak RSS.

    python benchmarks/peers.py [--sizes 128] [--repeat 3] [--contestants volseg monai raw] [--json FILE]

Every contestant is one function ``name(args) -> dict`` in :data:`CONTESTANTS`, run in its own
process (``--child NAME``), so its peak RSS is its own; it returns ``compute_seconds`` (the
inference alone, the model already loaded) and ``patches``. ``seconds`` is the process's wall
time from start to exit (imports and model loading included: what a user waits for).

* ``volseg``: ``volseg.inference.predict`` with ``--stitch`` and every other setting at its
  default (exactly ``volseg predict RUN VOL -o OUT --stitch``), volume read from and written to
  OME-Zarr on disk.
* ``monai``: MONAI's ``sliding_window_inference`` on the volume in memory with the same patch
  (64^3), overlap (0.5), gaussian blending (sigma 0.125 of the patch) and batch 4, calling the
  torch module as loaded. Skipped with a note where MONAI is not installed.
* ``monai_tuned``: the same with the C allocator tuned as volseg's command line tunes it
  (:mod:`volseg.allocator`): what MONAI gains from that alone.
* ``raw``: the model forward alone over the same patches, in the layout and batch volseg runs
  (``volseg.inference.runtime``) and with the allocator tuned: the floor of any sliding-window
  tool on this network.

The network is volseg's default UNet (``configs/unet3d.yml``, random weights, seed 0). An
nnU-Net contestant (``nnUNetPredictor`` on a model folder, against ``volseg predict`` of the
same folder) is added as one more function once ``volseg predict`` reads nnU-Net folders.
Prints one JSON object, then a table; writes ``benchmarks/peers.json`` (``--json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from predict_speed import load, make_run  # noqa: E402

from volseg.jsonout import write_json  # noqa: E402

PATCH, OVERLAP, BATCH = 64, 0.5, 4


def _volume(path: str) -> np.ndarray:
    from volseg.io import open_volume

    return np.asarray(open_volume(path)).astype(np.float32)


def volseg_predict(args) -> dict:
    """``volseg predict RUN VOL -o OUT --stitch`` with its defaults, in this process."""
    from volseg.inference import predict
    from volseg.inference.settings import predict_options

    t0 = time.perf_counter()
    r = predict(args.run, args.volume, args.out, *predict_options(stitch=True, quiet=True, overwrite=True))
    return {"compute_seconds": time.perf_counter() - t0, "patches": r["patches"],
            "runtime": r.get("runtime"), "batch_size": r.get("batch_size")}


def monai(args) -> dict:
    """MONAI ``sliding_window_inference`` over the volume in memory (same patch, overlap, blending)."""
    try:
        from monai.inferers import sliding_window_inference
    except ImportError:
        return {"skipped": "monai is not installed (pip install monai)"}
    import monai as monai_package
    import torch

    from volseg.models import load_model

    model = load_model(Path(args.run) / "model.pt")
    vol = torch.from_numpy(_volume(args.volume))[None, None]
    calls = []

    def forward(x):
        calls.append(x.shape[0])
        return model(x)

    t0 = time.perf_counter()
    with torch.inference_mode():
        sliding_window_inference(vol, (PATCH,) * 3, BATCH, forward, overlap=OVERLAP, mode="gaussian",
                                 sigma_scale=0.125)
    return {"compute_seconds": time.perf_counter() - t0, "patches": sum(calls), "version": monai_package.__version__}


def raw(args) -> dict:
    """The forward alone over volseg's patch grid, in volseg's layout and batch."""
    import torch

    from volseg.geometry import grid_origins, padded_shape, stride_from_overlap
    from volseg.inference.runtime import as_layout, auto_batch_size, channels_last_pays, prepare_module
    from volseg.models import load_model

    vol = _volume(args.volume)
    layout = channels_last_pays("cpu", "unet")
    model = prepare_module(load_model(Path(args.run) / "model.pt"), layout)
    batch = auto_batch_size((PATCH,) * 3)
    origins = grid_origins(padded_shape(vol.shape, (PATCH,) * 3), (PATCH,) * 3,
                           stride_from_overlap((PATCH,) * 3, OVERLAP))
    t0 = time.perf_counter()
    with torch.inference_mode():
        for lo in range(0, len(origins), batch):
            patches = np.stack([vol[z:z + PATCH, y:y + PATCH, x:x + PATCH] for z, y, x in origins[lo:lo + batch]])
            model(as_layout(torch.from_numpy(patches[:, None]), layout))
    return {"compute_seconds": time.perf_counter() - t0, "patches": len(origins), "batch_size": batch}


#: name -> the function its child process runs (a new contestant is one more entry).
CONTESTANTS = {"volseg": volseg_predict, "monai": monai, "monai_tuned": monai, "raw": raw}
#: Contestants whose process tunes the allocator first, as the ``volseg`` command line does.
TUNED = ("volseg", "monai_tuned", "raw")


def child(argv) -> None:
    p = argparse.ArgumentParser()
    for name in ("name", "run", "volume", "out"):
        p.add_argument(f"--{name}")
    args = p.parse_args(argv)
    if args.name in TUNED:
        from volseg.allocator import tune

        tune()
    result = CONTESTANTS[args.name](args)
    result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print("RESULT " + json.dumps(result))


def spawn(name: str, run: Path, volume: Path, out: Path) -> dict:
    """One contestant in its own process: its result, wall time and the load around it."""
    before, t0 = load(), time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--child", "--name", name, "--run", str(run),
                           "--volume", str(volume), "--out", str(out)], capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = proc.stderr.strip().splitlines()
        return {"error": tail[-1] if tail else f"exit {proc.returncode}"}
    result = json.loads(lines[-1][7:])
    if "skipped" not in result:
        result.update(seconds=round(seconds, 2), compute_seconds=round(result["compute_seconds"], 2),
                      patches_per_s=round(result["patches"] / result["compute_seconds"], 3), load=[before, load()])
    return result


def summary(rows: list) -> dict:
    """Median of every number over repeated runs of one contestant (the first row's other fields)."""
    ok = [r for r in rows if "error" not in r and "skipped" not in r]
    if not ok:
        return rows[0]
    out = dict(ok[0])
    for key in ("seconds", "compute_seconds", "patches_per_s", "peak_rss_mib"):
        out[key] = round(statistics.median(r[key] for r in ok), 3)
    out["runs"] = len(ok)
    out["load"] = [min(r["load"][0] for r in ok), max(r["load"][1] for r in ok)]
    return out


def measure(args, tmp: Path) -> dict:
    import torch

    from volseg.io import write_volume

    run = make_run(tmp / "run")
    sizes = {}
    for size in args.sizes:
        volume = tmp / f"v{size}.zarr"
        write_volume(volume, (100 + 20 * np.random.default_rng(0).normal(size=(size,) * 3)).astype(np.float32))
        rows: dict = {name: [] for name in args.contestants}
        for _ in range(args.repeat):  # interleaved: a change of load hits every contestant alike
            for name in args.contestants:
                rows[name].append(spawn(name, run, volume, tmp / f"{name}{size}.zarr"))
                print(f"{size}^3 {name}: {rows[name][-1]}", flush=True)
        sizes[str(size)] = {name: summary(r) for name, r in rows.items()}
    return {"benchmark": "peers", "model": "unet (configs/unet3d.yml: ch 16, depth 3), random weights",
            "patch": PATCH, "overlap": OVERLAP, "monai_batch": BATCH, "repeat": args.repeat,
            "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                        "torch": torch.__version__},
            "sizes": sizes}


def table(report: dict) -> str:
    lines = ["| volume | contestant | wall s | compute s | patches/s | peak RSS MiB | load |",
             "|---|---|---|---|---|---|---|"]
    for size, rows in report["sizes"].items():
        for name, r in rows.items():
            if "error" in r or "skipped" in r:
                lines.append(f"| {size}^3 | {name} | {r.get('error') or r.get('skipped')} | | | | |")
                continue
            lines.append(f"| {size}^3 | {name} | {r['seconds']:.1f} | {r['compute_seconds']:.1f} | "
                         f"{r['patches_per_s']:.2f} | {r['peak_rss_mib']:.0f} | {r['load'][0]}-{r['load'][1]} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--child":
        return child(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128], help="volume sides (cubes)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per contestant (median)")
    parser.add_argument("--contestants", nargs="+", choices=list(CONTESTANTS), default=list(CONTESTANTS))
    parser.add_argument("--json", default=str(HERE / "peers.json"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="volseg-peers-") as tmp:
        report = measure(args, Path(tmp))
    print(json.dumps(report, indent=1))
    write_json(report, args.json)
    print(table(report))
    return report


if __name__ == "__main__":
    main()
