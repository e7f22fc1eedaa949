"""Predict settings (TTA, rotation TTA, inference patch, ensembles, threshold) on a demo's model.

    python benchmarks/predict_levers.py DEMO_DIR [--runs RUN2 ...] [--chunks 32] [--json out.json]

``DEMO_DIR`` is the folder ``volseg demo`` wrote (``run/``, ``scroll.zarr`` with
``labels/surface``). Each setting predicts the scroll with :func:`volseg.inference.predict`
(``--stitch``, overlap 0.5, CPU), post-processes it with :func:`volseg.postprocess.postprocess`
(defaults, or the row's threshold) and scores the raw and the post-processed prediction with
:func:`volseg.metrics.evaluate` (Dice, surface Dice, VOI and its split / merge terms, tiled
topology, leaderboard-style score). ``--runs`` adds further runs trained on the same patches:
each alone and the ensemble of all (arithmetic and geometric mean). Prints one JSON object per
setting as it goes, then writes them all with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from volseg.jsonout import write_json

METRICS = "dice,surface_dice,voi,topology,score"
KEYS = ("dice", "surface_dice", "voi", "voi_split", "voi_merge", "topology", "score")
#: name -> (predict options, post-processing options); patch 32 is the --fast demo's own
SETTINGS = {
    "patch 32": ({"patch": 32}, {}),
    "patch 32, tta-rotate 15": ({"patch": 32, "tta_rotate": 15}, {}),
    "patch 32, tta (8 flips)": ({"patch": 32, "tta": True}, {}),
    "patch 48": ({"patch": 48}, {}),
    "patch 48, tta-rotate 15": ({"patch": 48, "tta_rotate": 15}, {}),
    "patch 32, threshold 0.6": ({"patch": 32}, {"threshold": 0.6}),
    "patch 48, threshold 0.6": ({"patch": 48}, {"threshold": 0.6}),
}


def _scores(path, truth) -> dict:
    from volseg.metrics import evaluate

    s = evaluate(path, truth, metrics=METRICS)
    return {k: round(float(s[k]), 4) for k in KEYS}


def measure(demo: Path, name: str, run, predict_opts: dict, post_opts: dict, *, chunks: int, work: Path) -> dict:
    """One row: predict seconds, raw scores, post-processed scores."""
    from volseg.inference import predict
    from volseg.inference.settings import predict_options
    from volseg.postprocess import postprocess

    out = work / name.replace(" ", "_").replace(",", "").replace("(", "").replace(")", "")
    truth = demo / "scroll.zarr" / "labels" / "surface"
    t0 = time.perf_counter()
    predict(run, demo / "scroll.zarr", out / "p.zarr", *predict_options(
        overlap=0.5, stitch=True, device="cpu", chunks=chunks, quiet=True, **predict_opts))
    seconds = round(time.perf_counter() - t0, 1)
    postprocess(out / "p.zarr", out / "pp.zarr", chunks=chunks, **post_opts)
    return {"setting": name, "predict_s": seconds, "raw": _scores(out / "p.zarr", truth),
            "post": _scores(out / "pp.zarr", truth)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("demo", type=Path, help="folder written by `volseg demo`")
    parser.add_argument("--runs", nargs="*", default=[], help="further runs for the ensemble rows")
    parser.add_argument("--chunks", type=int, default=32, help="output chunks (the demo's: 32 --fast, 64)")
    parser.add_argument("--json", default=None, help="also write the rows as one JSON object to this file")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="volseg-levers-") as tmp:
        todo = [(name, args.demo / "run", p, q) for name, (p, q) in SETTINGS.items()]
        for i, run in enumerate(args.runs):
            todo.append((f"run {i + 2}, patch 32", run, {"patch": 32}, {}))
        if args.runs:
            members = [str(args.demo / "run"), *args.runs]
            todo.append(("ensemble, patch 32", members, {"patch": 32}, {}))
            todo.append(("ensemble geometric, patch 32", members, {"patch": 32, "ensemble_mean": "geometric"}, {}))
        for name, run, p, q in todo:
            rows.append(measure(args.demo, name, run, p, q, chunks=args.chunks, work=Path(tmp)))
            print(json.dumps(rows[-1]), flush=True)
    if args.json:
        write_json({"demo": str(args.demo), "rows": rows}, args.json)


if __name__ == "__main__":
    main()
