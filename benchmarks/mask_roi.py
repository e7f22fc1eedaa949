"""``predict --mask`` and ``--roi`` against the full run: time, patches run, and equality.

    python benchmarks/mask_roi.py [--shape 128] [--patch 32] [--fraction 0.1] [--level 2] \
        [--batch-sizes 4 1] [--repeats 1] [--json benchmarks/mask_roi.json]

A random UNet (``ch`` 8, depth 2) predicts a random float32 OME-Zarr volume with ``--stitch``
(patch ``--patch``, overlap 0.5, chunks of one patch, one worker) three ways at each
``--batch-sizes`` value: the whole volume; ``--mask`` with a support mask covering ``--fraction``
of the volume (a cube at the volume's corner, given as level ``--level`` of an OME-Zarr pyramid,
the way a scroll's papyrus mask is given); ``--roi`` of that same cube. Times are wall seconds
of :func:`volseg.predict` (model loading included, after one untimed warm-up run; the minimum
over ``--repeats``). Checks: the masked output equals the full one within 1e-6 wherever every
patch covering a voxel ran within 1e-5 (the masked patches run in batches of their own, which
changes the float32 rounding) and is 0 where none did; the ROI output equals it byte for byte inside the
box (a forward batch runs whole when any of its patches touches the box, so every patch keeps
the batch of the full run) and is 0 outside. The issue's target: the 10 % mask in at most
0.25 x the full time. Prints one JSON object, then a table.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr

from volseg.jsonout import write_json


def _timed(fn, repeats: int) -> tuple[dict, float]:
    best, result = float("inf"), {}
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return result, best


def _coverage(plan, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(every covering patch ran, some covering patch ran) per voxel."""
    every, some = np.ones(plan.shape, bool), np.zeros(plan.shape, bool)
    for idx in np.ndindex(*plan.counts):
        sl = tuple(slice(int(s[i]), int(s[i]) + p) for s, i, p in zip(plan.starts, idx, plan.patch))
        if keep[idx]:
            some[sl] = True
        else:
            every[sl] = False
    return every, some


def run(shape: int = 128, *, patch: int = 32, fraction: float = 0.1, level: int = 2, repeats: int = 1,
        ch: int = 8, batch_sizes=(4, 1), root: str | None = None) -> dict:
    """Time and check the three runs in ``root`` (default a temporary folder)."""
    import torch

    from volseg.inference.plan import Plan
    from volseg.inference.predict import predict
    from volseg.inference.settings import PredictSettings, predict_options
    from volseg.inference.support import build_support
    from volseg.io import write_volume
    from volseg.models import build_model

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(root or tmp)
        torch.manual_seed(0)
        cfg = {"type": "unet", "in_channels": 1, "out_ch": 1, "ch": ch, "depth": 2}
        (work / "run").mkdir(parents=True, exist_ok=True)
        torch.save({"format": "volseg-run", "version": 1, "model_config": cfg,
                    "state_dict": build_model(cfg).state_dict()}, work / "run" / "model.pt")
        n = int(shape)
        write_volume(work / "v.zarr", np.random.default_rng(0).normal(size=(n, n, n)).astype(np.float32),
                     chunks=patch)
        side = int(round(n * fraction ** (1 / 3)))
        support = np.zeros((n, n, n), np.float32)
        support[:side, :side, :side] = 1.0
        write_volume(work / "mask.zarr", support, chunks=patch, levels=level + 1)  # mean: > 0 where any
        mask, roi = f"{work / 'mask.zarr'}@{level}", f":{side},:{side},:{side}"
        plan = Plan.build((n, n, n), (patch,) * 3, (patch // 2,) * 3, (patch,) * 3)
        keep = build_support(PredictSettings.parse(mask=mask), plan, (n, n, n))[0].keep
        every, some = _coverage(plan, keep)
        inside = np.zeros((n, n, n), bool)
        inside[:side, :side, :side] = True
        rows, checks = [], {}
        predict(work / "run", str(work / "v.zarr"), str(work / "warm.zarr"),  # imports and caches: not timed
                *predict_options(patch=patch, chunks=patch, stitch=True, workers=1, quiet=True,
                                 roi=f":{patch},:{patch},:{patch}"))
        for batch in batch_sizes:
            kw = dict(patch=patch, chunks=patch, stitch=True, workers=1, quiet=True, batch_size=int(batch))
            outs = {name: work / f"pred_{name}_{batch}.zarr" for name in ("full", "mask", "roi")}
            for name, options in {"full": {}, "mask": {"mask": mask}, "roi": {"roi": roi}}.items():
                def once(name=name, options=options):
                    return predict(work / "run", str(work / "v.zarr"), str(outs[name]),
                                   *predict_options(overwrite=True, **kw, **options))
                result, seconds = _timed(once, repeats)
                rows.append({"batch_size": int(batch), "run": name, "seconds": round(seconds, 2),
                             "patches": int(result["patches"]), "chunks": int(result["chunks_total"])})
            full, masked, boxed = (zarr.open_array(str(outs[k] / "0"))[:] for k in ("full", "mask", "roi"))
            checks[f"batch {batch}"] = {
                "mask_equal_where_every_covering_patch_ran": bool(np.abs(masked[every] - full[every]).max() <= 1e-5),
                "mask_max_abs_diff": float(np.abs(masked[every] - full[every]).max()),
                "mask_zero_where_no_covering_patch_ran": bool(not masked[~some].any()),
                "roi_equal_inside": bool(boxed[inside].tobytes() == full[inside].tobytes()),
                "roi_zero_outside": bool(not boxed[~inside].any())}
    for row in rows:
        full = next(r for r in rows if r["batch_size"] == row["batch_size"] and r["run"] == "full")
        row["time_ratio"] = round(row["seconds"] / full["seconds"], 3)
        row["patch_ratio"] = round(row["patches"] / full["patches"], 3)
    masked_rows = [r for r in rows if r["run"] == "mask"]
    return {"shape": [n, n, n], "patch": patch, "overlap": 0.5, "mask_level": level,
            "mask_fraction": round(side ** 3 / n ** 3, 4), "patches_in_mask": int(keep.sum()),
            "patches_total": int(keep.size), "voxels_exact": round(float(every.mean()), 4),
            "model": {"ch": ch, "depth": 2}, "repeats": repeats, "runs": rows, "checks": checks,
            "outputs_equal": all(all(v for v in c.values() if isinstance(v, bool)) for c in checks.values()),
            "target_met_at_batch": {str(r["batch_size"]): bool(r["time_ratio"] <= 0.25) for r in masked_rows}}


def table(report: dict) -> str:
    """A Markdown table of the runs."""
    lines = [f"volume {'x'.join(map(str, report['shape']))}, patch {report['patch']}, mask covering "
             f"{100 * report['mask_fraction']:.1f} % (level {report['mask_level']}): "
             f"{report['patches_in_mask']} of {report['patches_total']} patches under it", "",
             "| batch | run | seconds | x full | patches run | x full | chunks |", "|---|---|---|---|---|---|---|"]
    for r in report["runs"]:
        lines.append(f"| {r['batch_size']} | {r['run']} | {r['seconds']:.1f} | {r['time_ratio']:.3f} | "
                     f"{r['patches']} | {r['patch_ratio']:.3f} | {r['chunks']} |")
    met = ", ".join(f"batch {b}: {'met' if ok else 'NOT met'}" for b, ok in report["target_met_at_batch"].items())
    lines += ["", f"outputs equal to the full run where they must be: {report['outputs_equal']}",
              f"target (mask <= 0.25 x full time): {met}"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, default=128, help="volume side N (N^3 voxels; default 128)")
    parser.add_argument("--patch", type=int, default=32)
    parser.add_argument("--fraction", type=float, default=0.1, help="fraction of the volume the mask covers")
    parser.add_argument("--level", type=int, default=2, help="pyramid level the mask is given at")
    parser.add_argument("--repeats", type=int, default=1, help="time each run this many times, keep the fastest")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[4, 1], help="forward batch sizes to run")
    parser.add_argument("--json", default=None, help="also write the JSON object to this file")
    args = parser.parse_args()
    t0 = time.perf_counter()
    report = run(args.shape, patch=args.patch, fraction=args.fraction, level=args.level, repeats=args.repeats,
                 batch_sizes=args.batch_sizes)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(report, indent=1))
    if args.json:
        write_json(report, args.json)  # the project's strict, atomic writer
    print(table(report))


if __name__ == "__main__":
    main()
