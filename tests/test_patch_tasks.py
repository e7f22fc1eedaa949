"""Patchify tasks: grid ranges are disjoint, inside one grid row and cover every patch; a written
task leaves its <store>.done/<lo> marker holding its count of patches with label 1."""

import numpy as np

from volseg.data.patch_tasks import _grid_ranges, done_counts, marker_dir, plan_jobs
from volseg.geometry import grid_counts


def test_grid_ranges_partition_the_grid(monkeypatch):
    import volseg.data.patch_tasks as pt

    monkeypatch.setattr(pt, "_READ_BUDGET", 2 * 8 * 8 * 8)  # two patches per task
    full, patch, stride = (16, 24, 40), (8, 8, 8), (8, 8, 8)
    nz, ny, nx = grid_counts(full, patch, stride)
    ranges = _grid_ranges(full, patch, stride)
    covered = [i for lo, hi in ranges for i in range(lo, hi)]
    assert covered == list(range(nz * ny * nx))
    assert all(hi - lo <= 2 and lo // nx == (hi - 1) // nx for lo, hi in ranges)  # one row each


def test_jobs_and_markers(tmp_path):
    jobs = plan_jobs("grid", out=tmp_path / "p.zarr", volume="v", labels=None, targets=None, patch=(8, 8, 8),
                     stride=(8, 8, 8), full=(8, 8, 24), n=None, seed=0, fraction=None, open_volume=None)
    assert [(j.lo, j.hi) for j in jobs] == [(0, 3)] and jobs[0].origins.tolist() == [[0, 0, 0], [0, 0, 8], [0, 0, 16]]
    assert marker_dir(tmp_path / "p.zarr") == tmp_path / "p.zarr.done" and done_counts(tmp_path / "p.zarr") == {}
    (tmp_path / "p.zarr.done").mkdir()
    (tmp_path / "p.zarr.done" / "0").write_text("2")
    (tmp_path / "p.zarr.done" / "32").write_text("garbled")
    assert done_counts(tmp_path / "p.zarr") == {0: 2}
    assert np.asarray(jobs[0].patch).tolist() == [8, 8, 8]
