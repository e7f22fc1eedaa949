"""``benchmarks/topology_errors.py``: the error breakdown on a hand-made sheet."""

import numpy as np
from benchmark_checks import load_benchmark


def _module():
    return load_benchmark("topology_errors")


def test_breakdown_of_a_sheet_with_a_skin_a_speck_and_a_hole():
    labels = np.zeros((20, 20, 20), np.uint8)
    labels[8:12] = 1                       # a sheet 4 voxels thick across the volume
    labels[7] = labels[12] = 2             # its ignore band
    pred = np.zeros(labels.shape, np.float32)
    pred[7:13] = 0.9                       # the sheet with its band
    pred[13, 5:9, 5:9] = 0.8               # a skin patch one voxel beyond the band
    pred[2, 2, 2] = 0.7                    # a speck five voxels away
    pred[10, 10, 10] = 0.1                 # a hole voxel two voxels deep
    report = _module().analyse(pred, labels, threshold=0.5)
    assert report["betti"]["truth"] == [1, 0, 0]
    assert report["voxels"] == {"truth": 4 * 400, "false_positive": 17, "false_negative": 1}
    assert report["false_positive_by_distance"] == {"1": 16, "2": 0, "3-4": 0, ">=5": 1}
    assert report["false_negative_by_depth"] == {"1": 0, "2": 1, ">=3": 0}
    # masking the band cuts the skin patch off the sheet: one more component than unmasked
    assert report["betti"]["pred_masked"][0] == report["betti"]["pred_unmasked"][0] + 1 == 3
