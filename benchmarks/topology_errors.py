"""Where a prediction's topological errors come from (why is my topology score low?).

    python benchmarks/topology_errors.py --prediction volseg-demo/prediction.zarr \
        --truth volseg-demo/scroll.zarr/labels/surface [--threshold 0.5] [--json out.json]

Reads both volumes whole (meant for crops up to ~320^3 voxels), binarises the prediction
(probabilities > threshold; labels > 0) and reports, axis order (z, y, x), sizes in voxels:

* the Betti numbers (b0, b1, b2, 26-connected foreground) of the truth (label 1), of the
  prediction as the metrics see it (ignore-labelled voxels set to background, as the leaderboard
  does) and of the prediction before that masking: when masking multiplies the tunnels, the
  ignore label cuts the prediction apart (a sheet predicted thicker than label 1 + the ignore
  band loses a voxel layer inside, and its outer layer is left as loose shells);
* false positives by their distance to the labelled sheet (labels 1 and ignore): at distance 1
  the predicted sheet is one voxel too thick, far away it is debris or specks;
* false negatives by their depth inside label 1: depth 1 is the sheet's skin, deeper ones are
  holes through it;
* Betti numbers of (prediction | truth) and (prediction & truth): tunnels left in the first come
  from extra voxels (shells, bridges), in the second from missing ones (holes).

Prints one JSON object, then a table.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

FP_BINS = (1, 2, 3, 5)          # distance to the labelled sheet: 1, 2, 3-4, >= 5 voxels
FN_BINS = (1, 2, 3)             # depth inside label 1: 1, 2, >= 3 voxels


def _histogram(values: np.ndarray, edges) -> dict[str, int]:
    rounded = np.ceil(values - 1e-6).astype(np.int64)
    out, low = {}, None
    for high in tuple(edges) + (None,):
        if low is None:
            low = high
            continue
        key = f"{low}" if high == low + 1 else (f"{low}-{high - 1}" if high is not None else f">={low}")
        out[key] = int(np.count_nonzero((rounded >= low) & ((rounded < high) if high is not None else True)))
        low = high
    return out


def analyse(pred: np.ndarray, labels: np.ndarray, *, threshold: float = 0.5, ignore: int = 2) -> dict:
    """The report described in the module docstring, as a dict of plain numbers."""
    from scipy import ndimage

    from volseg.metrics.topology import betti_numbers

    fg = pred > threshold if pred.dtype.kind == "f" else pred > 0
    truth, ign = labels == 1, labels == ignore
    masked = fg & ~ign
    fp, fn = masked & ~truth, truth & ~masked
    to_sheet = ndimage.distance_transform_edt(~(truth | ign))
    depth = ndimage.distance_transform_edt(truth)
    return {
        "threshold": threshold,
        "betti": {"truth": list(betti_numbers(truth)), "pred_masked": list(betti_numbers(masked)),
                  "pred_unmasked": list(betti_numbers(fg)),
                  "pred_or_truth": list(betti_numbers(masked | truth)),
                  "pred_and_truth": list(betti_numbers(masked & truth))},
        "voxels": {"truth": int(truth.sum()), "false_positive": int(fp.sum()), "false_negative": int(fn.sum())},
        "false_positive_by_distance": _histogram(to_sheet[fp], FP_BINS),
        "false_negative_by_depth": _histogram(depth[fn], FN_BINS),
    }


def main() -> None:
    from volseg.io.readers import open_volume

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prediction", required=True)
    parser.add_argument("--truth", required=True)
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--json", default=None, help="also write the JSON object to this file")
    args = parser.parse_args()
    pred = open_volume(args.prediction).compute()
    labels = open_volume(args.truth).compute()
    report = analyse(pred, labels, threshold=args.threshold)
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    print("\n| mask | b0 | b1 | b2 |\n|---|---|---|---|")
    for name, b in report["betti"].items():
        print(f"| {name} | {b[0]} | {b[1]} | {b[2]} |")
    print("\nfalse positives by distance to the sheet:", report["false_positive_by_distance"])
    print("false negatives by depth inside label 1:", report["false_negative_by_depth"])


if __name__ == "__main__":
    main()
