"""``volseg demo``: the whole journey, as a user runs it (fast here; the full one is slow)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from volseg.cli import app


@pytest.fixture(scope="module")
def fast_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo"
    result = CliRunner().invoke(app, ["demo", "--fast", "--out", str(out), "--quiet", "--json", "-"])
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)


def test_fast_demo_json_and_outputs(fast_demo):
    out, summary = fast_demo
    assert set(summary) >= {"scores", "seconds", "paths", "plan", "train"}
    for key in ("dice", "surface_dice", "voi", "topology", "score"):
        assert isinstance(summary["scores"][key], float)
    assert 0.0 <= summary["scores"]["dice"] <= 1.0
    assert set(summary["seconds"]) == {"synth", "patchify", "train", "predict", "evaluate", "postprocess",
                                       "evaluate_post", "total"}
    # before and after post-processing; the exact Betti matching only for the final prediction
    assert set(summary["scores"]) - set(summary["raw_scores"]) == {"betti_matching"}
    matching = summary["scores"]["betti_matching"]
    assert 0.0 <= matching["topology"] <= 1.0 and isinstance(matching["score"], float)
    assert summary["scores"]["topology_counts"]["tiles"] == [2, 2, 2]
    for name in ("scroll", "patches", "prediction", "postprocessed", "preview", "scores"):
        assert Path(summary["paths"][name]).exists(), name
    assert (out / "run" / "model.pt").exists()
    import yaml

    config = yaml.safe_load((out / "run" / "config.yml").read_text())
    assert config["loss"]["ignore_label"] is None        # the ignore band trained as background
    assert json.loads((out / "scores.json").read_text())["scores"] == summary["scores"]


def test_demo_summary_as_printed_and_rerun_replaces(fast_demo):
    out, first = fast_demo
    args = [sys.executable, "-m", "volseg", "demo", "--fast", "--out", str(out), "--steps", "2"]
    proc = subprocess.run(args, capture_output=True, text=True, env={"COLUMNS": "100", "PATH": ""})
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "scores.json").read_text())
    assert summary["train"]["steps"] == 2 != first["train"]["steps"]  # replaced, not resumed
    text = proc.stdout
    for needle in ("Dice", "Surface Dice", "Leaderboard-style score", "Topology (Betti matching)",
                   "time per stage", "train",
                   "prediction.zarr", "preview.png"):
        assert needle in text, needle


def test_demo_bad_shape_is_refused(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--fast", "--shape", "20", "--out", str(tmp_path / "d")])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: --shape:")
    assert "Traceback" not in result.output


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_default_demo_reaches_dice_085(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "demo"), "--quiet", "--json", "-"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["scores"]["dice"] >= 0.85
