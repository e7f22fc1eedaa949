"""``benchmarks/repairs.py``: every repair scored on the oracle predictions."""

from benchmark_checks import load_benchmark


def test_repairs_are_scored_on_a_small_oracle():
    mod = load_benchmark("repairs")
    report = mod.run(40, seed=0, errors=(0.75,), correlations=(1.0,),
                     repairs=("base", "open 1,0,0 + close 1,0,0"))
    (row,) = report["rows"]
    assert set(row["repairs"]) == {"base", "open 1,0,0 + close 1,0,0"}
    for scores in [row["raw"], *row["repairs"].values()]:
        assert 0 <= scores["topology"] <= 1 and 0 < scores["dice"] <= 1
        assert abs(scores["voi"] - scores["voi_split"] - scores["voi_merge"]) < 2e-4
        assert len(scores["topology_f1"]) == 3
    text = mod.table(report)
    assert "| open 1,0,0 + close 1,0,0 |" in text and "0.75 / 1" in text
