"""Each post-processing repair alone, and chains of them, on the oracle predictions.

    python benchmarks/repairs.py [--shape 160] [--seed 0] [--errors 0.5 0.75 1] [--correlations 1 2] \
        [--repairs defaults plug ...] [--punch K] [--json out.json]

The oracles are those of ``benchmarks/topology_ceiling.py``: the truth's signed distance plus
``error`` voxels (standard deviation) of Gaussian noise smoothed with ``sigma = correlation``,
thresholded at 0, scored against the banded truth of ``volseg.data.synth.synth_scroll`` with
the metrics of ``volseg evaluate`` (Dice, surface Dice, VOI and its split / merge terms, tiled
topology and its F1 per Betti dimension, leaderboard-style score). Every repair runs on top of
the ``base`` settings (``--min-size 200 --fill-holes 16`` and nothing else, the defaults before
the repairs; binary input so no smoothing) through :func:`volseg.postprocess.postprocess_array`,
the whole-volume reference that the streamed command equals bit for bit. The chain
``open 1,0,0 + close 1,0,0`` is today's default; the ``sheet holes N`` rows add ``--fill-sheet-holes N`` to it
(``--repairs`` runs only the rows named, e.g. those three into their own ``--json``). The issue's target: topology >= 0.45 at error 0.75 and >= 0.25 at
1 voxel, Dice within 0.005 of the unrepaired oracle. ``--punch K`` adds a column: the truth's
sheet with K holes punched through it (balls of radius 3 voxels at random sheet voxels, a hole
of about 15 columns through a sheet 4-5 voxels thick), the damage ``--fill-sheet-holes`` repairs.
Prints one JSON object, then a table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from volseg.jsonout import write_json

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the oracles of the sibling script
from topology_ceiling import oracle_field, unit_noise  # noqa: E402

ERRORS = (0.5, 0.75, 1.0)
#: The settings every repair is added to: the defaults before the repairs.
BASE = {"min_size": 200, "fill_holes": 16, "open": 0, "close": 0}
CORRELATIONS = (1.0, 2.0)
#: name -> keyword arguments of postprocess_array on top of the defaults.
REPAIRS = {
    "base": {},
    "plug": {"plug_holes": True},
    "close 1": {"close": 1},
    "close 1,0,0": {"close": "1,0,0"},
    "open 1": {"open": 1},
    "open 1,0,0": {"open": "1,0,0"},
    "open 2,0,0": {"open": "2,0,0"},
    "fill cavities 4096": {"fill_cavities": 4096},
    "open 1,0,0 + close 1,0,0": {"open": "1,0,0", "close": "1,0,0"},   # the defaults
    "open 1,0,0 + close 1,0,0 + plug": {"open": "1,0,0", "close": "1,0,0", "plug_holes": True},
    "open 1,0,0 + close 1,0,0 + fill cavities 4096": {"open": "1,0,0", "close": "1,0,0", "fill_cavities": 4096},
    **{f"open 1,0,0 + close 1,0,0 + sheet holes {n}": {"open": "1,0,0", "close": "1,0,0", "fill_sheet_holes": n}
       for n in (25, 100, 400)},
}


def score(pred: np.ndarray, labels: np.ndarray) -> dict:
    """volseg's metrics of a binary prediction against labels (0, 1, 2 = ignore)."""
    from volseg.metrics.evaluate import evaluate
    from volseg.parallel import Execution

    s = evaluate(pred.astype(np.uint8), labels, metrics="dice,surface_dice,voi,topology,score",
                 execution=Execution.parse(scheduler="synchronous", quiet=True))
    row = {k: round(float(s[k]), 4) for k in ("dice", "surface_dice", "voi", "voi_split", "voi_merge",
                                              "topology", "score")}
    row["topology_f1"] = [None if f is None else round(f, 4) for f in s["topology_f1"]]
    row["topology_pred"] = s["topology_counts"]["pred"]
    return row


def punched(labels: np.ndarray, count: int, *, radius: int = 3, seed: int = 0) -> np.ndarray:
    """The truth's sheet (label 1) with ``count`` balls of ``radius`` voxels removed, centred on
    random sheet voxels at least ``radius`` from the border."""
    from skimage.morphology import ball

    sheet = labels == 1
    inner = np.zeros_like(sheet)
    inner[(slice(radius, -radius),) * 3] = True
    centres = np.argwhere(sheet & inner)
    centres = centres[np.random.default_rng(seed).choice(len(centres), size=count, replace=False)]
    out, fp = sheet.copy(), ~ball(radius).astype(bool)
    for z, y, x in centres:
        box = (slice(z - radius, z + radius + 1), slice(y - radius, y + radius + 1), slice(x - radius, x + radius + 1))
        out[box] &= fp
    return out


def run(shape, *, seed: int = 0, errors=ERRORS, correlations=CORRELATIONS, repairs=tuple(REPAIRS),
        punch: int = 0) -> dict:
    """Every (correlation, error) oracle (and with ``punch`` the punched truth), raw and with
    every repair; see the module docstring."""
    from volseg.data.synth import synth_scroll
    from volseg.postprocess.kernels import postprocess_array

    _, labels = synth_scroll(shape, seed=seed, band=True)
    field = oracle_field(labels)
    cases = [(f"{a:g} / {corr:g}", {"correlation": corr, "error": a}) for corr in correlations for a in errors]
    if punch:
        cases.append((f"truth, {punch} holes", {"punched": punch}))
    rows = []
    for name, case in cases:
        if "punched" in case:
            pred = punched(labels, punch, seed=seed + 2)
        else:
            noise = unit_noise(labels.shape, correlation=case["correlation"], seed=seed + 1)
            pred = field + np.float32(case["error"]) * noise > 0
        row = {"name": name, **case, "raw": score(pred, labels), "repairs": {}}
        for repair in repairs:
            t0 = time.perf_counter()
            out = postprocess_array(pred, **(BASE | REPAIRS[repair]))
            seconds = time.perf_counter() - t0
            row["repairs"][repair] = score(out, labels) | {"seconds": round(seconds, 2)}
        rows.append(row)
        print(f"{name}: done", flush=True)
    return {"shape": list(labels.shape), "seed": seed, "truth": "band",
            "base": BASE,
            "repairs": {name: REPAIRS[name] for name in repairs}, "rows": rows}


def table(report: dict) -> str:
    """Markdown table: topology and Dice of every repair (rows) on every oracle (columns)."""
    heads = [r.get("name") or f"{r['error']:g} / {r['correlation']:g}" for r in report["rows"]]
    lines = ["| repair (error / correlation) | " + " | ".join(heads) + " |",
             "|---|" + "---|" * len(heads)]
    lines.append("| raw oracle | " + " | ".join(f"{r['raw']['topology']:.3f} ({r['raw']['dice']:.4f})"
                                                 for r in report["rows"]) + " |")
    for name in report["repairs"]:
        cells = [f"{r['repairs'][name]['topology']:.3f} ({r['repairs'][name]['dice']:.4f})"
                 for r in report["rows"]]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\ncells: topology (Dice); banded truth"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="160", help="scroll shape: N or ZxYxX (default 160)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--errors", type=float, nargs="*", default=list(ERRORS))
    parser.add_argument("--correlations", type=float, nargs="+", default=list(CORRELATIONS))
    parser.add_argument("--repairs", nargs="+", choices=list(REPAIRS), default=list(REPAIRS))
    parser.add_argument("--punch", type=int, default=0, help="also the truth with this many holes punched")
    parser.add_argument("--json", default=None, help="also write the JSON object to this file")
    args = parser.parse_args()
    t0 = time.perf_counter()
    report = run(args.shape, seed=args.seed, errors=args.errors, correlations=args.correlations,
                 repairs=args.repairs, punch=args.punch)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(report, indent=1))
    if args.json:
        write_json(report, args.json)  # the project's strict, atomic writer
    print(table(report))


if __name__ == "__main__":
    main()
