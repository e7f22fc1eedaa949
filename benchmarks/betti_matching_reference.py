"""volseg's `betti_matching` metric against the real Betti-Matching-3D, as the leaderboard calls it.

The reference column is what the Vesuvius leaderboard computes: the ``topometrics`` package
(``leaderboard.py``: ``compute_leaderboard_score``; ``toposcore.py``: ``TopoScore``) feeds
nstucki/Betti-Matching-3D's ``compute_matching`` the uint8 arrays ``~pred`` and ``~truth`` (so
the foreground enters the sublevel filtration first; prediction first, truth second), per tile of
its hard-coded 2 x 2 x 2 split (the first ``n % 2`` halves one voxel longer), and counts per
dimension k: m_k = matched pairs, p_k = m_k + unmatched input-1 pairs, g_k = m_k + unmatched
input-2 pairs (Betti-Matching-3D leaves out the infinite bar of dimension 0 and zero-length bars).
The counts are summed over the tiles, then F1_k = 2 m / (p + g) (0.5 / (p + 0.5) where g = 0),
weighted 0.34 / 0.33 / 0.33 over the dimensions with p + g > 0. That formula is written out again
here, independently of volseg's.

Cases: the hand cases of tests/test_metrics_betti_matching.py, random blob volumes (smoothed
noise thresholded; the prediction's noise is the truth's plus independent noise), independent
random voxels (8^3: ties everywhere, all dimensions populated), boxes with odd or 1-voxel sides,
and crops of the
synthetic scroll (truth = label 1; prediction = damaged copies, ignore label set to background as
the leaderboard does), each matched whole (tiles 1) and with the leaderboard's tiles (2).
Where the counts differ, Betti-Matching-3D is run again on the 8 mirror images of the pair and
with prediction and truth swapped (the same pair of volumes): its m_k over these 16 runs shows how
much its tie-break (cell order) decides; volseg's count does not depend on it.

Build Betti-Matching-3D's Python module first (pybind11 is a build tool only):

    pip install pybind11
    git clone https://github.com/nstucki/Betti-Matching-3D /tmp/bm3d && mkdir /tmp/bm3d/build
    cd /tmp/bm3d/build && cmake .. -DCMAKE_CXX_FLAGS="-include tuple" \\
        -Dpybind11_DIR=$(python -c "import pybind11; print(pybind11.get_cmake_dir())") \\
        && make betti_matching
    python benchmarks/betti_matching_reference.py --bm3d /tmp/bm3d/build

(``-include tuple``: its src_1D uses std::tuple without including it, which g++ 12 refuses.)
Writes ``benchmarks/betti_matching_reference.json`` (``--json`` elsewhere, ``-`` for none) and
prints a table.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
WEIGHTS = (0.34, 0.33, 0.33)


def load_bm3d(path: str):
    """Betti-Matching-3D's compiled ``betti_matching`` module from its build folder (or the .so)."""
    import importlib

    folder = Path(path)
    if folder.is_file():
        folder = folder.parent
    if not any(folder.glob("betti_matching*.so")):
        sys.exit(f"error: --bm3d: no betti_matching*.so in {folder}; build Betti-Matching-3D "
                 "(see this script's docstring)")
    sys.path.insert(0, str(folder))
    return importlib.import_module("betti_matching")


# ---- the reference: topometrics' leaderboard on Betti-Matching-3D ---------------------------

def _halves(n: int, parts: int) -> list[tuple[int, int]]:
    # topometrics' split, written out on purpose instead of volseg.geometry.axis_cuts: the
    # reference column must not share volseg's code.
    parts = max(1, min(parts, n))
    base, extra = divmod(n, parts)
    out, start = [], 0
    for i in range(parts):
        stop = start + base + (1 if i < extra else 0)
        out.append((start, stop))
        start = stop
    return out


def reference_tile(bm, pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Rows (matched, pred, truth) x dims (0, 1, 2) of one tile, counted as TopoScore does."""
    res = bm.compute_matching((~pred).astype(np.uint8), (~truth).astype(np.uint8))
    out = np.zeros((3, 3), np.int64)
    for k in range(3):
        m = len(res.input1_matched_birth_coordinates[k])
        out[:, k] = (m, m + len(res.input1_unmatched_birth_coordinates[k]),
                     m + len(res.input2_unmatched_birth_coordinates[k]))
    return out


def leaderboard_score(counts: np.ndarray) -> tuple[list, float]:
    """F1 per dimension (None inactive) and the weighted TopoScore, as topometrics computes them."""
    f1, active = [], []
    for k in range(3):
        m, p, g = (int(v) for v in counts[:, k])
        if p + g == 0:
            f1.append(None)
            continue
        f1.append(2.0 * m / (p + g) if g else 0.5 / (p + g + 0.5))
        active.append(k)
    if not active:
        return f1, 1.0
    w = np.array([WEIGHTS[k] for k in active])
    return f1, float(np.dot(w / w.sum(), [f1[k] for k in active]))


def tiles_of(shape, tiles: int):
    for box in itertools.product(*[_halves(n, tiles) for n in shape]):
        yield tuple(slice(a, b) for a, b in box)


def reference(bm, pred, truth, tiles: int) -> np.ndarray:
    return sum(reference_tile(bm, pred[s], truth[s]) for s in tiles_of(pred.shape, tiles))


def tie_break_range(bm, pred, truth) -> tuple[list[int], list[int]]:
    """Betti-Matching-3D's m_k (min, max) over the 8 mirror images, both argument orders."""
    ms = []
    for flips in itertools.product((False, True), repeat=3):
        axes = tuple(a for a, f in enumerate(flips) if f)
        p, g = (np.ascontiguousarray(np.flip(v, axes)) if axes else v for v in (pred, truth))
        ms.append(reference_tile(bm, p, g)[0])
        ms.append(reference_tile(bm, g, p)[0])
    ms = np.array(ms)
    return ms.min(0).tolist(), ms.max(0).tolist()


# ---- cases ------------------------------------------------------------------------------------

def hand_cases():
    z, y, x = np.mgrid[:24, :24, :24] - 11.5
    r = np.sqrt(z ** 2 + y ** 2 + x ** 2)
    ball, shell = r < 8, (r < 8) & (r > 4)
    torus = (np.sqrt(y ** 2 + x ** 2) - 7) ** 2 + z ** 2 < 9
    empty = np.zeros_like(ball)

    def cubes(*corners, size=4):
        out = np.zeros((24, 24, 24), bool)
        for c in corners:
            out[tuple(slice(a, a + size) for a in c)] = True
        return out

    two = cubes((2, 2, 2), (14, 14, 14))
    yield "identical ball", ball, ball
    yield "identical shell", shell, shell
    yield "identical torus", torus, torus
    yield "identical two cubes", two, two
    yield "cube moved 1 voxel (overlap)", cubes((2, 2, 3), (14, 14, 14)), two
    yield "cube moved apart", cubes((2, 2, 12), (14, 14, 14)), two
    yield "extra cavity (shell vs ball)", shell, ball
    yield "missed cavity (ball vs shell)", ball, shell
    yield "two tori vs torus", torus | np.roll(torus, 7, axis=0), torus
    yield "torus shifted 1 voxel", np.roll(torus, 1, axis=2), torus
    yield "empty vs torus", empty, torus
    yield "torus vs empty", torus, empty
    yield "two cubes vs empty", two, empty
    yield "full box vs ball", np.ones_like(ball), ball


def odd_shape_cases(seed: int = 5):
    """Smoothed noise in boxes with odd or tiny sides (uneven tiles, flat and 1-voxel boxes)."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    for shape in ((25, 31, 17), (3, 40, 40), (1, 30, 30), (2, 2, 50), (33, 1, 20)):
        t = ndimage.gaussian_filter(rng.standard_normal(shape), 1.0)
        p = ndimage.gaussian_filter(rng.standard_normal(shape), 1.0) + t
        yield f"odd shape {shape}", p > 0.1, t > 0.1


def blob_cases(sizes, seeds, fractions=(0.3, 0.5, 0.7)):
    """Smoothed noise (sigma 1.5 voxels) thresholded at a foreground fraction: 0.3 gives many
    components, 0.5 tunnels, 0.7 cavities; the prediction's noise adds 0.6 x independent noise."""
    from scipy import ndimage

    for n, seed in itertools.product(sizes, seeds):
        rng = np.random.default_rng(seed)
        base = rng.standard_normal((n, n, n))
        other = rng.standard_normal((n, n, n))
        t = ndimage.gaussian_filter(base, 1.5)
        p = ndimage.gaussian_filter(base + 0.6 * other, 1.5)
        for f in fractions:
            yield (f"blobs {n}^3 s{seed} fg {f:.0%}", p > np.quantile(p, 1 - f),
                   t > np.quantile(t, 1 - f))


def noise_cases(n: int, seeds):
    """Independent random voxels (half foreground): ties everywhere, every dimension populated."""
    for seed in seeds:
        rng = np.random.default_rng(seed)
        yield f"noise {n}^3 s{seed}", rng.random((n,) * 3) < 0.5, rng.random((n,) * 3) < 0.5


def scroll_cases(sizes, seeds):
    from scipy import ndimage

    sys.path.insert(0, str(HERE))
    from postprocess import damaged          # benchmarks/postprocess.py: specks and punched holes

    ball = ndimage.generate_binary_structure(3, 1)
    for n, seed in itertools.product(sizes, seeds):
        specks, holes = max(20, n ** 3 // 5000), max(8, n ** 3 // 25000)
        lab, speckled = damaged(n, seed, specks=specks, holes=holes)
        truth, keep = lab == 1, lab != 2
        name = f"scroll {n}^3 s{seed}"
        yield f"{name}: specks + holes", speckled.astype(bool) & keep, truth
        yield f"{name}: shifted 1 voxel (x)", np.roll(truth, 1, axis=2) & keep, truth
        yield f"{name}: eroded", ndimage.binary_erosion(truth, ball) & keep, truth
        yield f"{name}: dilated", ndimage.binary_dilation(truth, ball) & keep, truth
        # a truth with tunnels too (holes punched through its sheets), so that matching matters
        holed = damaged(n, seed, specks=0, holes=holes)[1].astype(bool) & keep
        yield f"{name}: holed truth, shifted 1 voxel (x)", np.roll(holed, 1, axis=2) & keep, holed
        yield f"{name}: holed truth, other holes + specks", speckled.astype(bool) & keep, holed


# ---- comparison -------------------------------------------------------------------------------

def compare(bm, name, pred, truth, tiles: int) -> dict:
    from volseg.metrics.betti_matching import betti_matching

    t0 = time.perf_counter()
    ours = betti_matching(pred, truth, tiles=(tiles,) * 3)
    t1 = time.perf_counter()
    ref = reference(bm, pred, truth, tiles)
    t2 = time.perf_counter()
    ref_f1, ref_score = leaderboard_score(ref)
    mine = np.array([ours["matched"], ours["pred"], ours["truth"]])
    row = {"case": name, "shape": list(pred.shape), "tiles": tiles,
           "volseg": {"matched": ours["matched"], "pred": ours["pred"], "truth": ours["truth"],
                      "topology": ours["topology"]},
           "reference": {"matched": ref[0].tolist(), "pred": ref[1].tolist(), "truth": ref[2].tolist(),
                         "f1": ref_f1, "topology": ref_score},
           "counts_equal": bool((mine == ref).all()),
           "features_equal": bool((mine[1:] == ref[1:]).all()),
           "matched_diff": (mine[0] - ref[0]).tolist(),
           "topology_diff": ours["topology"] - ref_score,
           "seconds": {"volseg": round(t1 - t0, 3), "bm3d": round(t2 - t1, 3)}}
    if tiles == 1 and not row["counts_equal"]:
        lo, hi = tie_break_range(bm, pred, truth)
        row["bm3d_matched_over_mirrors_and_swap"] = {"min": lo, "max": hi}
        row["volseg_at_or_below_every_tie_break"] = bool((mine[0] <= np.array(lo)).all())
    return row


def to_json(report: dict) -> str:
    """The report as JSON, one line per compared case."""
    head = json.dumps({k: v for k, v in report.items() if k != "rows"}, indent=1)
    rows = ",\n  ".join(json.dumps(r) for r in report["rows"])
    return f'{head[:-2]},\n "rows": [\n  {rows}\n ]\n}}'


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bm3d", default=os.environ.get("VOLSEG_BM3D"),
                    help="Betti-Matching-3D's build folder (holds betti_matching*.so); or $VOLSEG_BM3D")
    ap.add_argument("--bm3d-commit", default="50d7379324c3987aeaf0935aa47fb20c56b8e116",
                    help="the Betti-Matching-3D commit built (recorded in the JSON only)")
    ap.add_argument("--blob-sizes", type=int, nargs="+", default=[24, 32, 48])
    ap.add_argument("--blob-seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--noise-size", type=int, default=8)
    ap.add_argument("--noise-seeds", type=int, nargs="+", default=list(range(10)))
    ap.add_argument("--scroll-sizes", type=int, nargs="+", default=[64, 96])
    ap.add_argument("--scroll-seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--json", default=str(HERE / "betti_matching_reference.json"))
    args = ap.parse_args(argv)
    if not args.bm3d:
        ap.error("--bm3d (or $VOLSEG_BM3D) is required: the folder of the built betti_matching module")
    bm = load_bm3d(args.bm3d)

    start = time.perf_counter()
    rows = []
    groups = (("hand", hand_cases()), ("blobs", blob_cases(args.blob_sizes, args.blob_seeds)),
              ("noise", noise_cases(args.noise_size, args.noise_seeds)),
              ("odd shapes", odd_shape_cases()),
              ("scroll", scroll_cases(args.scroll_sizes, args.scroll_seeds)))
    for group, cases in groups:
        for name, pred, truth in cases:
            for tiles in (1, 2):
                rows.append({"group": group, **compare(bm, name, np.asarray(pred, bool),
                                                       np.asarray(truth, bool), tiles)})
    summary = {}
    for group in ("hand", "blobs", "noise", "odd shapes", "scroll", "all"):
        sel = [r for r in rows if group in ("all", r["group"])]
        diffs = np.array([abs(r["topology_diff"]) for r in sel])
        summary[group] = {
            "comparisons": len(sel),
            "counts_equal": sum(r["counts_equal"] for r in sel),
            "features_equal": sum(r["features_equal"] for r in sel),
            "matched_equal_by_dim": [sum(r["matched_diff"][k] == 0 for r in sel) for k in range(3)],
            "volseg_matched_lower": sum(any(d < 0 for d in r["matched_diff"]) for r in sel),
            "volseg_matched_higher": sum(any(d > 0 for d in r["matched_diff"]) for r in sel),
            "probed_over_mirrors": sum("bm3d_matched_over_mirrors_and_swap" in r for r in sel),
            "volseg_at_or_below_every_mirror": sum(r.get("volseg_at_or_below_every_tie_break", False)
                                                   for r in sel),
            "max_abs_topology_diff": float(diffs.max()),
            "mean_abs_topology_diff": float(diffs.mean()),
        }
    report = {"benchmark": "betti_matching_reference", "bm3d_module": str(Path(bm.__file__).resolve()),
              "bm3d_commit": args.bm3d_commit,
              "reference": "nstucki/Betti-Matching-3D compute_matching on ~mask (uint8), "
                           "counted and tiled as topometrics' TopoScore / compute_leaderboard_score",
              "seconds": round(time.perf_counter() - start, 1), "summary": summary, "rows": rows}
    text = to_json(report)
    print(text)
    if args.json and args.json != "-":
        Path(args.json).write_text(text + "\n")
    print("\n| case | tiles | volseg m / p / g | Betti-Matching-3D m / p / g | topology volseg | reference | diff |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        v, ref = r["volseg"], r["reference"]
        print(f"| {r['case']} | {r['tiles']} | {v['matched']} / {v['pred']} / {v['truth']} | "
              f"{ref['matched']} / {ref['pred']} / {ref['truth']} | {v['topology']:.4f} | "
              f"{ref['topology']:.4f} | {r['topology_diff']:+.4f} |")
    print("\n| group | comparisons | counts equal | p, g equal | m equal (k=0, 1, 2) | volseg m lower "
          "| volseg m higher | max abs diff | mean abs diff |")
    print("|---|---|---|---|---|---|---|---|---|")
    for g, s in summary.items():
        print(f"| {g} | {s['comparisons']} | {s['counts_equal']} | {s['features_equal']} | "
              f"{s['matched_equal_by_dim']} | {s['volseg_matched_lower']} | {s['volseg_matched_higher']} | "
              f"{s['max_abs_topology_diff']:.4f} | {s['mean_abs_topology_diff']:.4f} |")
    return report


if __name__ == "__main__":
    main()
