"""``benchmarks/topology_ceiling.py``: oracle predictions with a known boundary error."""

import numpy as np
from benchmark_checks import load_benchmark


def _module():
    return load_benchmark("topology_ceiling")


def test_field_and_noise():
    mod = _module()
    labels = np.zeros((12, 12, 12), np.uint8)
    labels[4:8] = 1
    labels[3] = labels[8] = 2
    f = mod.oracle_field(labels)
    assert np.all(f[4:8] >= 1) and np.all(f[:4] <= -1) and np.all(f[8:] <= -1)
    assert f[5, 6, 6] == 2 and f[2, 6, 6] == -2         # two voxels deep / two voxels out
    noise = mod.unit_noise((16, 16, 16), correlation=1.0, seed=0)
    assert abs(float(noise.mean())) < 1e-5 and abs(float(noise.std()) - 1) < 1e-4
    assert np.array_equal(noise, mod.unit_noise((16, 16, 16), correlation=1.0, seed=0))


def test_zero_error_is_the_truth_and_error_costs_topology_first():
    mod = _module()
    report = mod.run(40, seed=0, errors=(0.0, 0.75), correlations=(1.0,), truths=("band",))
    exact, noisy = report["rows"]
    assert exact["raw"]["dice"] == exact["raw"]["topology"] == exact["raw"]["score"] == 1.0
    assert exact["raw"]["topology_pred"] == report["truth_topology_features"]["band"]
    # a 0.75-voxel boundary error keeps Dice high but costs far more topology
    assert noisy["raw"]["dice"] > 0.9
    assert noisy["raw"]["topology"] < 0.6
    assert "| band | 1 | 0.75 |" in mod.table(report)
