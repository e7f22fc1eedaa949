"""Choose `volseg postprocess` defaults: Dice / topology / score of settings on damaged scrolls.

A synthetic scroll's truth is damaged as a network's prediction is (specks in the background,
1-voxel holes through the sheets, optionally sheet voxels lost at random) and every setting is
applied with the whole-volume reference :func:`volseg.postprocess.postprocess_array` (equal to
the streamed command, see tests/test_postprocess.py), then scored with `volseg evaluate`'s
metrics. A probability map, if given (``--prediction prob.zarr --truth labels``), is scored too.

    python benchmarks/postprocess.py --shape 64 --seeds 0 1
    python benchmarks/postprocess.py --prediction volseg-demo/prediction.zarr \\
        --truth volseg-demo/scroll.zarr/labels/surface   # --prediction may be repeated

Prints one JSON object, then a table.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

SETTINGS = [
    {"name": "threshold only", "min_size": 0, "fill_holes": 0, "close": 0},
    {"name": "min-size 20", "min_size": 20, "fill_holes": 0, "close": 0},
    {"name": "min-size 200", "min_size": 200, "fill_holes": 0, "close": 0},
    {"name": "min-size 200, fill-holes 8", "min_size": 200, "fill_holes": 8, "close": 0},
    {"name": "min-size 200, fill-holes 16 (labels' default)", "min_size": 200, "fill_holes": 16, "close": 0},
    {"name": "min-size 200, fill-holes 32", "min_size": 200, "fill_holes": 32, "close": 0},
    {"name": "min-size 200, fill-holes 16, close 1", "min_size": 200, "fill_holes": 16, "close": 1},
]
#: Extra rows for probability maps: a Gaussian (sigma in voxels) before the threshold.
SMOOTH_SETTINGS = [
    {"name": f"smooth {sigma:g}, min-size 200, fill-holes 16{tag}", "smooth": sigma, "min_size": 200,
     "fill_holes": 16, "close": 0}
    for sigma, tag in ((0.7, ""), (1.0, " (default)"), (1.5, ""))
]
METRICS = "dice,surface_dice,voi,topology,score,betti"


def damaged(shape: int, seed: int, *, specks: int, holes: int):
    """(truth labels, damaged uint8 prediction) of a synthetic scroll."""
    from volseg.data.synth import synth_scroll

    _, lab = synth_scroll((shape,) * 3, seed=seed)
    rng = np.random.default_rng(seed)
    pred = lab == 1
    bg = np.argwhere(lab == 0)
    for z, y, x in bg[rng.choice(len(bg), specks, replace=False)]:
        pred[z:z + 2, y:y + 2, x:x + rng.integers(1, 3)] = True
    fg = np.argwhere(lab == 1)
    c = shape / 2
    for z, y, x in fg[rng.choice(len(fg), holes, replace=False)]:
        if abs(x - c) > abs(y - c):
            pred[z, y, max(0, x - 4):x + 4] = False
        else:
            pred[z, max(0, y - 4):y + 4, x] = False
    return lab, pred.astype(np.uint8)


def score_settings(values, truth, *, threshold=None) -> list[dict]:
    from volseg.metrics import evaluate
    from volseg.parallel import Execution
    from volseg.postprocess import postprocess_array

    rows = []
    for s in SETTINGS + (SMOOTH_SETTINGS if values.dtype.kind == "f" else []):
        t0 = time.perf_counter()
        out = postprocess_array(values, threshold=threshold, smooth=s.get("smooth", 0.0),
                                min_size=s["min_size"], fill_holes=s["fill_holes"], close=s["close"])
        seconds = time.perf_counter() - t0
        m = evaluate(out, truth, metrics=METRICS, execution=Execution.parse(scheduler="synchronous", quiet=True))
        rows.append({**s, **{k: m[k] for k in ("dice", "surface_dice", "voi", "topology", "score")},
                     "betti_pred": m["betti"]["pred"], "betti_truth": m["betti"]["truth"],
                     "seconds": round(seconds, 2)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, default=64)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--specks", type=int, default=150)
    ap.add_argument("--holes", type=int, default=40)
    ap.add_argument("--prediction", action="append", default=[],
                    help="A probability map (or labels) to score as well; repeat for several.")
    ap.add_argument("--truth", help="Its truth labels (0, 1, 2 ignore).")
    args = ap.parse_args()
    cases = []
    for seed in args.seeds:
        truth, pred = damaged(args.shape, seed, specks=args.specks, holes=args.holes)
        cases.append({"case": f"damaged scroll {args.shape}^3 seed {seed}", "rows": score_settings(pred, truth)})
    for path in args.prediction:
        from volseg.io import open_volume

        values = np.asarray(open_volume(path).compute())
        truth = np.asarray(open_volume(args.truth).compute())
        cases.append({"case": path,
                      "rows": score_settings(values, truth, threshold=0.5 if values.dtype.kind == "f" else None)})
    print(json.dumps({"cases": cases}))
    for case in cases:
        print(f"\n{case['case']}")
        print(f"{'setting':52s} {'Dice':>7s} {'sDice':>7s} {'VOI':>6s} {'topology':>9s} {'score':>7s}  "
              "betti pred / truth")
        for r in case["rows"]:
            print(f"{r['name']:52s} {r['dice']:7.4f} {r['surface_dice']:7.4f} {r['voi']:6.3f} "
                  f"{r['topology']:9.4f} {r['score']:7.4f}  {r['betti_pred']} / {r['betti_truth']}")


if __name__ == "__main__":
    main()
