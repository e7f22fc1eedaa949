"""How accurate must a model be to reach a topology score? Oracle predictions of the synthetic scroll.

    python benchmarks/topology_ceiling.py [--shape 160] [--seed 0] [--errors 0 0.25 0.4 0.5 0.6 0.75 1] \
        [--correlations 1 2] [--truths band none] [--offset 0] [--json out.json]

A network's mistakes on a sheet are mostly its boundary placed a little off, voxel by voxel.
This script makes predictions that are exactly that and nothing else: the *oracle* of boundary
error ``a`` (voxels, standard deviation) is ``{f + a * n > offset}``, where ``f`` is the signed
Euclidean distance to the boundary of the truth's label 1 (>= 1 inside, <= -1 outside, axis
order (z, y, x)) and ``n`` is Gaussian noise smoothed with a Gaussian of ``sigma = correlation``
voxels, scaled to unit standard deviation (seeded). ``a = 0`` with ``offset = 0`` is label 1
itself. Every oracle is scored raw and after ``volseg postprocess``'s defaults (binary input, so
no smoothing: ``--min-size 200 --fill-holes 16 --open 1,0,0 --close 1,0,0``; ``topology_ceiling.json``
was measured before the opening and closing, with ``--open 0 --close 0``, and
``benchmarks/repairs.py`` compares both) with the metrics of ``volseg evaluate``
(Dice, surface Dice, VOI, tiled topology, leaderboard-style score), against two truths of the
same scroll (``volseg.data.synth.synth_scroll``, identical CT):

* ``band``: the truth ``volseg synth`` and ``volseg demo`` use, a one-voxel ignore band on every
  sheet boundary (the metrics set ignored voxels to background in the prediction, as the
  leaderboard does);
* ``none``: ``synth_scroll(band=False)``, boundary voxels at least half inside the sheet are
  label 1 and only the contact zones of touching sheets are ignore.

The smallest error at which the topology score reaches a target is how accurate a model has to
be for it, whatever the model. Prints one JSON object, then a table.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

ERRORS = (0.0, 0.25, 0.4, 0.5, 0.6, 0.75, 1.0)
CORRELATIONS = (1.0, 2.0)
TRUTHS = ("band", "none")
METRICS = ("dice", "surface_dice", "voi", "topology", "score")


def oracle_field(labels: np.ndarray) -> np.ndarray:
    """Signed distance (voxels, float32) to the boundary of label 1: >= 1 inside, <= -1 outside."""
    from scipy import ndimage

    core = labels == 1
    inside = ndimage.distance_transform_edt(core)
    inside -= ndimage.distance_transform_edt(~core)
    return inside.astype(np.float32)


def unit_noise(shape, *, correlation: float, seed: int) -> np.ndarray:
    """Gaussian noise smoothed with sigma ``correlation`` (voxels), zero mean and unit std."""
    from scipy import ndimage

    noise = np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)
    if correlation > 0:
        noise = ndimage.gaussian_filter(noise, correlation)
    noise -= noise.mean()
    noise /= noise.std() + 1e-12
    return noise


def score(pred: np.ndarray, labels: np.ndarray) -> dict:
    """volseg's metrics of a binary prediction against labels (0, 1, 2 = ignore)."""
    from volseg.metrics.evaluate import evaluate
    from volseg.parallel import Execution

    s = evaluate(pred.astype(np.uint8), labels, metrics=",".join(METRICS), execution=Execution.parse(quiet=True))
    row = {k: round(float(s[k]), 4) for k in METRICS}
    row["topology_pred"] = s["topology_counts"]["pred"]
    row["topology_matched"] = s["topology_counts"]["matched"]
    return row


def run(shape, *, seed: int = 0, errors=ERRORS, correlations=CORRELATIONS, truths=TRUTHS,
        offset: float = 0.0) -> dict:
    """Every (truth, correlation, error) oracle, raw and post-processed; see the module docstring."""
    from volseg.data.synth import synth_scroll
    from volseg.postprocess.kernels import postprocess_array
    from volseg.postprocess.options import DEFAULT_CLOSE, DEFAULT_FILL_HOLES, DEFAULT_MIN_SIZE, DEFAULT_OPEN

    rows, truth_counts = [], {}
    for truth in truths:
        _, labels = synth_scroll(shape, seed=seed, band=(truth == "band"))
        truth_counts[truth] = score(labels == 1, labels)["topology_pred"]
        field = oracle_field(labels)
        for corr in correlations:
            noise = unit_noise(labels.shape, correlation=corr, seed=seed + 1)
            for a in errors:
                pred = field + np.float32(a) * noise > offset
                post = postprocess_array(pred, min_size=DEFAULT_MIN_SIZE, fill_holes=DEFAULT_FILL_HOLES,
                                         open=DEFAULT_OPEN, close=DEFAULT_CLOSE)
                rows.append({"truth": truth, "correlation": corr, "error": a,
                             "raw": score(pred, labels), "postprocessed": score(post, labels)})
    return {"shape": list(labels.shape), "seed": seed, "offset": offset,
            "postprocess": {"min_size": DEFAULT_MIN_SIZE, "fill_holes": DEFAULT_FILL_HOLES,
                            "open": DEFAULT_OPEN, "close": DEFAULT_CLOSE},
            "truth_topology_features": truth_counts, "rows": rows}


def table(report: dict) -> str:
    """Markdown table of the post-processed rows."""
    lines = ["| truth | correlation | error (voxels) | Dice | surface Dice | VOI | topology | score "
             "| features (b0-1, b1, b2) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        p = r["postprocessed"]
        lines.append(f"| {r['truth']} | {r['correlation']:g} | {r['error']:g} | {p['dice']:.3f} | "
                     f"{p['surface_dice']:.3f} | {p['voi']:.2f} | {p['topology']:.3f} | {p['score']:.3f} | "
                     f"{tuple(p['topology_pred'])} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="160", help="scroll shape: N or ZxYxX (default 160)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--errors", type=float, nargs="+", default=list(ERRORS))
    parser.add_argument("--correlations", type=float, nargs="+", default=list(CORRELATIONS))
    parser.add_argument("--truths", nargs="+", choices=TRUTHS, default=list(TRUTHS))
    parser.add_argument("--offset", type=float, default=0.0,
                        help="threshold of the signed distance: 0 = label 1's boundary, -1 = the band")
    parser.add_argument("--json", default=None, help="also write the JSON object to this file")
    args = parser.parse_args()
    t0 = time.perf_counter()
    report = run(args.shape, seed=args.seed, errors=args.errors, correlations=args.correlations,
                 truths=args.truths, offset=args.offset)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    print("\ntruth features (b0-1, b1, b2) per truth:", report["truth_topology_features"])
    print("post-processed oracles:\n" + table(report))


if __name__ == "__main__":
    main()
