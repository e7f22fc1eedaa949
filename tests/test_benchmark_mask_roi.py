"""``benchmarks/mask_roi.py``: --mask and --roi timed against the full run, outputs checked equal."""

from benchmark_checks import load_benchmark


def test_mask_and_roi_runs_are_timed_and_checked_on_a_small_volume(tmp_path):
    mod = load_benchmark("mask_roi")
    report = mod.run(32, patch=8, fraction=0.1, level=1, ch=4, batch_sizes=(2,), root=str(tmp_path))
    runs = {r["run"]: r for r in report["runs"]}
    assert set(runs) == {"full", "mask", "roi"} and runs["full"]["time_ratio"] == 1.0
    assert runs["mask"]["patches"] < runs["full"]["patches"] / 2 and runs["roi"]["chunks"] < runs["full"]["chunks"]
    assert report["outputs_equal"] and 0 < report["voxels_exact"] < 0.2
    assert report["patches_in_mask"] <= runs["mask"]["patches"] and set(report["target_met_at_batch"]) == {"2"}
    assert "| 2 | mask |" in mod.table(report) and 0.05 < report["mask_fraction"] < 0.15
