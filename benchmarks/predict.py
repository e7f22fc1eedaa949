"""Benchmark whole-volume inference: volseg predict --stitch vs the raw model forward over the
same patches, MONAI's sliding_window_inference and TorchIO's GridSampler/GridAggregator.

Every method runs in its own subprocess (time and peak RSS of that process, model loading
excluded from the time); all use the same random UNet3D, patch, overlap and batch size. volseg
reads a chunked OME-Zarr input and writes an OME-Zarr output; the others hold the volume,
output and weights in memory. Peak RSS of volseg is also measured at two volume sizes 8x apart,
and at two (y, x) cross-sections 4x apart in area at the same depth, with column tiles
(``--xs-tile``) and without, with the extra patch forwards that tiling costs and the peak bytes
of overlap pieces the pass carries between windows (``carried MiB``: the part of memory that
follows the cross-section; RSS at these sizes is dominated by torch and the interpreter).

    .venv/bin/python benchmarks/predict.py [--size 96] [--patch 32] [--json out.json]
    .venv/bin/python benchmarks/predict.py --only-xs      # just the cross-section rows

Prints a table and writes one JSON object (``--json``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _model(run: Path, batch: int = 4, patch: int = 32):
    """Load the model and run one warm-up batch (first-call allocations are not timed)."""
    import torch

    from volseg.inference.runner import cached_model

    model = cached_model(str(Path(run) / "model.pt"), "cpu")
    with torch.inference_mode():
        model(torch.zeros(batch, 1, patch, patch, patch))
    return model


def _raw(args) -> dict:
    """The model forward over exactly the patches volseg computes (volume in memory)."""
    import torch

    from volseg.geometry import grid_origins, padded_shape, stride_from_overlap
    from volseg.io import open_volume

    model = _model(args.run, args.batch, args.patch)
    vol = np.asarray(open_volume(args.volume)).astype(np.float32)
    patch = (args.patch,) * 3
    origins = grid_origins(padded_shape(vol.shape, patch), patch, stride_from_overlap(patch, args.overlap))
    t0 = time.perf_counter()
    with torch.inference_mode():
        for lo in range(0, len(origins), args.batch):
            batch = np.stack([vol[o[0]:o[0] + args.patch, o[1]:o[1] + args.patch, o[2]:o[2] + args.patch]
                              for o in origins[lo:lo + args.batch]])[:, None]
            model(torch.from_numpy(batch))
    return {"seconds": time.perf_counter() - t0, "patches": len(origins)}


def _volseg(args) -> dict:
    from volseg.inference import predict
    from volseg.inference.settings import predict_options

    _model(args.run, args.batch, args.patch)  # load and warm up outside the timing, like the others
    t0 = time.perf_counter()
    predict(args.run, args.warmup, args.out + ".warmup", *predict_options(patch=args.patch, overlap=args.overlap, batch_size=args.batch, stitch=True, chunks=args.chunks, device="cpu", workers=args.workers, quiet=True, overwrite=True))  # imports and the worker threads' first calls
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    r = predict(args.run, args.volume, args.out, *predict_options(patch=args.patch, overlap=args.overlap, batch_size=args.batch, stitch=True, chunks=args.chunks, device="cpu", workers=args.workers, quiet=True, overwrite=True, tile=args.tile))
    return {"seconds": time.perf_counter() - t0, "patches": r["patches"],
            "input_bytes_read_per_byte": r["input_bytes_read_per_byte"], "model_seconds": r["model_seconds"],
            "warmup_call_seconds": first, "carried_mib_peak": r.get("carried_bytes_peak", 0) / 2**20}


def _monai(args) -> dict:
    import torch
    from monai.inferers import sliding_window_inference

    from volseg.io import open_volume

    model = _model(args.run, args.batch, args.patch)
    vol = torch.from_numpy(np.asarray(open_volume(args.volume)).astype(np.float32))[None, None]
    t0 = time.perf_counter()
    with torch.inference_mode():
        sliding_window_inference(vol, (args.patch,) * 3, args.batch, model, overlap=args.overlap,
                                 mode="gaussian", sigma_scale=0.125)
    return {"seconds": time.perf_counter() - t0}


def _torchio(args) -> dict:
    import torch
    import torchio as tio

    from volseg.io import open_volume

    model = _model(args.run, args.batch, args.patch)
    vol = torch.from_numpy(np.asarray(open_volume(args.volume)).astype(np.float32))[None]
    subject = tio.Subject(image=tio.ScalarImage(tensor=vol))
    overlap = round(args.patch * args.overlap) // 2 * 2
    t0 = time.perf_counter()
    sampler = tio.inference.GridSampler(subject, args.patch, overlap)
    aggregator = tio.inference.GridAggregator(sampler, overlap_mode="hann")
    loader = torch.utils.data.DataLoader(sampler, batch_size=args.batch)
    with torch.inference_mode():
        for batch in loader:
            aggregator.add_batch(model(batch["image"][tio.DATA].float()), batch[tio.LOCATION])
    aggregator.get_output_tensor()
    return {"seconds": time.perf_counter() - t0, "patches": len(sampler)}


METHODS = {"raw": _raw, "volseg": _volseg, "monai": _monai, "torchio": _torchio}


def _child(argv) -> None:
    p = argparse.ArgumentParser()
    for name in ("method", "run", "volume", "out", "warmup", "tile"):
        p.add_argument(f"--{name}")
    for name in ("patch", "batch", "chunks", "workers"):
        p.add_argument(f"--{name}", type=int)
    p.add_argument("--overlap", type=float)
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    # Every method runs in a non-main thread: volseg's model calls run in Dask worker threads, and
    # on Linux torch CPU kernels run measurably faster off the main thread (malloc arenas), so
    # timing the others on the main thread would flatter volseg.
    box: dict = {}
    thread = threading.Thread(target=lambda: box.update(METHODS[args.method](args)))
    thread.start()
    thread.join()
    result = box
    result["peak_rss_mib"] = _rss_mib()
    print("RESULT " + json.dumps(result))


def _spawn(method, run, volume, out, a, tile="1024", env=None) -> dict:
    cmd = [sys.executable, __file__, "--child", "--method", method, "--tile", str(tile), "--run", str(run),
           "--volume", str(volume),
           "--out", str(out), "--warmup", str(Path(run).parent / "warmup.zarr"), "--patch", str(a.patch), "--batch", str(a.batch), "--chunks", str(a.chunks),
           "--workers", str(a.workers), "--overlap", str(a.overlap)]
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), **(env or {}))
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode != 0 or not line:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
    return json.loads(line[-1][7:])


def _compare(a, tmp: Path, sizes: dict) -> dict:
    """The method comparison and the 8x volume RSS row (the big volume is 2x per axis)."""
    from volseg.io import write_volume

    rng = np.random.default_rng(0)
    for name, shape in sizes.items():
        write_volume(tmp / f"{name}.zarr", rng.normal(size=shape).astype(np.float32), chunks=a.chunks)
    rows: dict = {}
    for _ in range(a.repeat):  # interleaved repeats; keep each method's fastest run
        for method in ("raw", "volseg", "monai", "torchio"):
            r = _spawn(method, tmp / "run", tmp / "big.zarr", tmp / f"{method}.out.zarr", a)
            if method not in rows or r.get("seconds", float("inf")) < rows[method].get("seconds", float("inf")):
                rows[method] = r
    small = _spawn("volseg", tmp / "run", tmp / "small.zarr", tmp / "small.out.zarr", a)
    report = {
        "volume": list(sizes["big"]), "methods": rows, "volseg_small": {"volume": list(sizes["small"]), **small},
        "volseg_over_raw": rows["volseg"].get("seconds", float("nan")) / rows["raw"].get("seconds", float("nan")),
        "rss_big_over_small": rows["volseg"].get("peak_rss_mib", float("nan")) / small.get("peak_rss_mib", float("nan")),
        "input_bytes_read_per_byte": rows["volseg"].get("input_bytes_read_per_byte"),
        "volseg_over_own_forward": rows["volseg"].get("seconds", float("nan"))
        / rows["volseg"].get("model_seconds", float("nan")),
    }
    print(f"volume {sizes['big']} float32, patch {a.patch}, overlap {a.overlap}, batch {a.batch}, "
          f"UNet3D ch={a.ch} depth=3, CPU, {a.threads} torch thread(s), volseg --workers {a.workers}")
    print(f"{'method':<10}{'seconds':>10}{'x raw':>8}{'peak RSS MiB':>14}")
    for method, r in rows.items():
        if "error" in r:
            print(f"{method:<10}  error: {r['error']}")
            continue
        print(f"{method:<10}{r['seconds']:>10.2f}{r['seconds'] / rows['raw']['seconds']:>8.2f}{r['peak_rss_mib']:>14.0f}")
    print(f"volseg peak RSS {sizes['small'][0]}^3: {small.get('peak_rss_mib', float('nan')):.0f} MiB, "
          f"{sizes['big'][0]}^3: {rows['volseg'].get('peak_rss_mib', float('nan')):.0f} MiB "
          f"(ratio {report['rss_big_over_small']:.2f}, 8x the voxels)")
    print(f"volseg wall time / its own model forward time: {report['volseg_over_own_forward']:.3f}")
    print(f"volseg input bytes read per input byte: {report['input_bytes_read_per_byte']}")
    return report


def _cross_section(a, tmp: Path, rng) -> dict:
    """Peak RSS of predict --stitch at two (y, x) cross-sections 4x apart in area, tiled and not."""
    from volseg.io import write_volume

    depth, side = 2 * a.patch, a.xs_size
    rows = {}
    for name, s in (("xs_small", side), ("xs_big", 2 * side)):
        write_volume(tmp / f"{name}.zarr", rng.normal(size=(depth, s, s)).astype(np.float32), chunks=a.chunks)
        for tile in (a.xs_tile, "0"):
            r = _spawn("volseg", tmp / "run", tmp / f"{name}.zarr", tmp / f"{name}-{tile}.out.zarr", a, tile=tile,
                       env={"VOLSEG_CHUNK_CACHE_MB": str(a.xs_cache_mb)})
            rows[f"{name} tile={tile}"] = {"volume": [depth, s, s], "tile": tile, **r}
    t, u = a.xs_tile, "0"
    out = {"rows": rows}
    for tile in (t, u):
        out[f"rss_big_over_small tile={tile}"] = (rows[f"xs_big tile={tile}"].get("peak_rss_mib", float("nan"))
                                                 / rows[f"xs_small tile={tile}"].get("peak_rss_mib", float("nan")))
    out["extra_forwards_tiled"] = (rows[f"xs_big tile={t}"].get("patches", float("nan"))
                                   / rows[f"xs_big tile={u}"].get("patches", float("nan")) - 1)
    print(f"\ncross-section scaling: depth {depth}, patch {a.patch}, chunks {a.chunks}, "
          f"tile {t} (tiled) vs 0 (one pass), input chunk cache {a.xs_cache_mb} MiB")
    print(f"{'volume':<18}{'tile':>6}{'seconds':>10}{'patches':>9}{'peak RSS MiB':>14}{'carried MiB':>13}")
    for r in rows.values():
        if "error" in r:
            print(f"{'x'.join(map(str, r['volume'])):<18}{r['tile']:>6}  error: {r['error']}")
            continue
        print(f"{'x'.join(map(str, r['volume'])):<18}{r['tile']:>6}{r['seconds']:>10.2f}{r['patches']:>9}"
              f"{r['peak_rss_mib']:>14.0f}{r['carried_mib_peak']:>13.1f}")
    print(f"peak RSS 4x area / 1x: tiled {out[f'rss_big_over_small tile={t}']:.2f}, "
          f"one pass {out['rss_big_over_small tile=0']:.2f}; extra forwards from tiling "
          f"{100 * out['extra_forwards_tiled']:.1f}%")
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return _child(sys.argv[2:])
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=64, help="side of the small volume (the big one is 2x per axis)")
    p.add_argument("--patch", type=int, default=32)
    p.add_argument("--overlap", type=float, default=0.5)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--chunks", type=int, default=64)
    p.add_argument("--workers", type=int, default=1, help="volseg --workers")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process (OMP_NUM_THREADS)")
    p.add_argument("--ch", type=int, default=8)
    p.add_argument("--repeat", type=int, default=2, help="runs per method (the fastest is kept)")
    p.add_argument("--xs-size", type=int, default=192,
                   help="cross-section rows: (2*patch, S, S) and (2*patch, 2S, 2S) volumes")
    p.add_argument("--xs-tile", default="128", help="volseg --tile of the tiled cross-section rows")
    p.add_argument("--xs-cache-mb", type=int, default=24,
                   help="input chunk cache of the cross-section rows (below both volumes' size, as on a scroll)")
    p.add_argument("--only-xs", action="store_true", help="run only the cross-section rows")
    p.add_argument("--json", default=None)
    a = p.parse_args()

    import torch

    from volseg.io import write_volume
    from volseg.models import build_model

    tmp = Path(tempfile.mkdtemp(prefix="volseg-bench-"))
    torch.manual_seed(0)
    cfg = {"type": "unet", "in_channels": 1, "out_ch": 1, "ch": a.ch, "depth": 3}
    (tmp / "run").mkdir()
    torch.save({"format": "volseg-run", "version": 1, "model_config": cfg,
                "state_dict": build_model(cfg).state_dict()}, tmp / "run" / "model.pt")
    rng = np.random.default_rng(0)
    sizes = {"small": (a.size,) * 3, "big": (2 * a.size,) * 3}
    write_volume(tmp / "warmup.zarr", rng.normal(size=(a.patch,) * 3).astype(np.float32), chunks=a.chunks)
    report: dict = {"patch": a.patch, "overlap": a.overlap, "batch": a.batch, "chunks": a.chunks,
                    "workers": a.workers, "torch_threads": a.threads, "model": cfg}
    if not a.only_xs:
        report.update(_compare(a, tmp, sizes))
    report["cross_section"] = _cross_section(a, tmp, rng)
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=2) + "\n")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
