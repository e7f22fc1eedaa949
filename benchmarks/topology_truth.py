"""Topology of the synthetic scroll truth, and Betti matching against count matching.

    python benchmarks/topology_truth.py --size 160 --seeds 0,1,2

For each seed: the Betti numbers (b0, b1, b2) of the truth (label 1; the ignore label is
background, as in the metrics) with a 26-connected foreground (volseg's streamed counts) and a
6-connected one (the leaderboard's barcodes). Then, on the first seed, a damaged prediction
(cubes cut out of the sheets, specks in the background) and the same prediction shifted by one
voxel are scored with ``betti_matching`` (leaderboard tiles 2 x 2 x 2), with the count-based
``topology`` (the same tiles) and with count matching of the whole volume (untiled, volseg's
``topology`` before it tiled), with the time Betti matching takes. Prints one JSON object, then a table.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def _damage(truth: np.ndarray, labels: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pred = truth.copy()
    n = truth.shape[0]
    for z, y, x in rng.integers(2, n - 2, (40, 3)):
        pred[z - 1:z + 2, y - 1:y + 2, x - 1:x + 2] = False
    background = np.flatnonzero(~truth & (labels != 2))
    pred.flat[rng.choice(background, 200, replace=False)] = True
    return pred


def main() -> None:
    from volseg.data.synth import synth_scroll
    from volseg.metrics.betti_matching import barcode, betti_from_barcode, betti_matching
    from volseg.metrics.leaderboard_tiles import tiled_topology
    from volseg.metrics.topology import betti_numbers, topology_score

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    truths, first = [], None
    for seed in seeds:
        _, labels = synth_scroll(args.size, seed=seed)
        sheet = labels == 1
        truths.append({"seed": seed, "betti_26": list(betti_numbers(sheet)),
                       "betti_6": list(betti_from_barcode(barcode(sheet, connectivity=6)))})
        if first is None:
            first = (sheet, labels)
    sheet, labels = first
    pred = _damage(sheet, labels, seeds[0])
    scores = []
    for name, (p, g) in {"damaged vs truth": (pred, sheet),
                         "damaged shifted 1 voxel vs damaged": (np.roll(pred, 1, axis=2), pred)}.items():
        start = time.perf_counter()
        bm = betti_matching(p, g)
        seconds = time.perf_counter() - start
        scores.append({"case": name, "betti_matching": bm, "seconds": round(seconds, 2),
                       "count_based": tiled_topology(p, g)["topology"],
                       "count_based_untiled": topology_score(betti_numbers(p), betti_numbers(g))})
    print(json.dumps({"size": args.size, "truth": truths, "scores": scores}))
    print(f"{'seed':>6} {'Betti 26-conn':>16} {'Betti 6-conn':>16}")
    for t in truths:
        print(f"{t['seed']:>6} {str(tuple(t['betti_26'])):>16} {str(tuple(t['betti_6'])):>16}")
    print(f"{'case':<36} {'betti_matching':>15} {'count-based':>12} {'untiled':>8} {'seconds':>8}")
    for s in scores:
        print(f"{s['case']:<36} {s['betti_matching']['topology']:>15.4f} {s['count_based']:>12.4f} "
              f"{s['count_based_untiled']:>8.4f} {s['seconds']:>8.1f}")


if __name__ == "__main__":
    main()
