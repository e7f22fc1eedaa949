"""`volseg bench-memory`: budgets parsed, real steps measured, checkpointing cuts activations."""

import json
import pytest
from typer.testing import CliRunner

from volseg.bench.memory import bench_memory, fits, measure, parse_budget, parse_patches
from volseg.cli import app
from volseg.errors import VolsegError
from volseg.models.precision import amp_pays_off

runner = CliRunner()


@pytest.mark.parametrize("text,value", [("8GiB", 8 * 1024 ** 3), ("512MB", 512 * 10 ** 6),
                                        ("1.5G", 1.5e9), ("2e9", 2e9), ("64 mib", 64 * 2 ** 20)])
def test_parse_budget(text, value):
    assert parse_budget(text) == int(value)


@pytest.mark.parametrize("text", ["lots", "8 parsecs", "-1GB", "0", "GiB"])
def test_bad_budget(text):
    with pytest.raises(VolsegError, match="--budget"):
        parse_budget(text)


def test_parse_patches():
    assert parse_patches("16,32", multiple=8) == [(16, 16, 16), (32, 32, 32)]
    assert parse_patches("16x32x32", multiple=8) == [(16, 32, 32)]
    with pytest.raises(VolsegError, match="multiple of 8"):
        parse_patches("12", multiple=8)


def _spec(**kw):
    spec = {"model": "unet", "patch": [8, 8, 8], "amp": False, "checkpoint": False,
            "batch_size": 1, "device": "cpu"}
    spec.update(kw)
    return spec


def test_checkpointing_cuts_activations_small():
    plain = measure(_spec())
    ckpt = measure(_spec(checkpoint=True))
    for row in (plain, ckpt):
        assert {"model", "patch", "amp", "checkpoint", "activation_bytes", "peak_bytes", "seconds",
                "infer_seconds", "rss_peak_bytes", "state_bytes"} <= set(row)
        assert row["peak_bytes"] == row["activation_bytes"] + row["state_bytes"]
    assert ckpt["activation_bytes"] <= 0.6 * plain["activation_bytes"]
    assert ckpt["state_bytes"] == plain["state_bytes"]


def test_fits_measured_and_extrapolated():
    rows = [{"model": "unet", "amp": False, "checkpoint": False, "batch_size": 1, "patch": [p] * 3,
             "peak_bytes": 1000 + 10 * p ** 3, "state_bytes": 1000} for p in (16, 32)]
    out = fits(rows, 1000 + 10 * 40 ** 3, multiple=8)["fits"][0]
    assert out["measured"] == [32, 32, 32] and out["extrapolated"] == [40, 40, 40]
    assert out["bytes_per_voxel"] == pytest.approx(10)


def test_cli_bad_budget_and_model():
    result = runner.invoke(app, ["bench-memory", "--budget", "lots"])
    assert result.exit_code == 2 and result.stderr.strip().startswith("error: --budget")
    result = runner.invoke(app, ["bench-memory", "--model", "vit"])
    assert result.exit_code == 2 and "--model" in result.stderr
    result = runner.invoke(app, ["bench-memory", "--patch", "20"])
    assert result.exit_code == 2 and "multiple of 8" in result.stderr


def test_cli_one_combination_json():
    # On the CPU each combination is measured in a fresh process.
    out = runner.invoke(app, ["bench-memory", "--patch", "8", "--no-amp", "--checkpoint", "--budget",
                              "1GiB", "--device", "cpu", "--json", "-"])
    assert out.exit_code == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["device"] == "cpu" and len(result["rows"]) == 1
    row = result["rows"][0]
    assert row["patch"] == [8, 8, 8] and row["checkpoint"] is True and row["amp"] is False
    assert row["rss_peak_bytes"] > row["activation_bytes"] > 0
    assert result["budget"]["fits"][0]["measured"] == [8, 8, 8]


def test_amp_rows_only_where_amp_pays_off(capsys):
    result = bench_memory(patches="8", checkpoint=False, isolate=False, quiet=True)
    amps = [r["amp"] for r in result["rows"]]
    if amp_pays_off("cpu"):
        assert amps == [False, True] and result["notes"] == []
    else:
        assert amps == [False]
        assert result["notes"] == [
            "amp rows skipped: this CPU has no native bf16 (AVX512-BF16 or AMX), where bf16 autocast "
            "is about 100x slower than fp32, and train --amp runs in fp32 here; pass --amp to measure "
            "bf16 anyway"]
        forced = bench_memory(patches="8", amp=True, checkpoint=False, isolate=False)
        assert [r["amp"] for r in forced["rows"]] == [True] and forced["notes"] == []
        assert capsys.readouterr().err.startswith("warning: --amp: this CPU has no native bf16")


def test_inference_is_measured_once_per_patch_and_precision():
    result = bench_memory(patches="8", amp=False, isolate=False, quiet=True)
    plain, ckpt = result["rows"]
    assert not plain["checkpoint"] and ckpt["checkpoint"]
    assert {k: v for k, v in ckpt.items() if k.startswith("infer_")} == \
        {k: v for k, v in plain.items() if k.startswith("infer_")}
    assert ckpt["activation_bytes"] < plain["activation_bytes"]


def test_cli_absurd_patch_is_refused_naming_the_limit():
    out = runner.invoke(app, ["bench-memory", "--patch", "4096", "--device", "cpu"])
    assert out.exit_code == 2, out.output
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, lines
    assert lines[0].startswith("error: --patch: 4096x4096x4096: one training step needs about ")
    assert "of memory of this machine (cpu); use --patch " in lines[0]
    side = int(lines[0].rsplit("use --patch ", 1)[1].split()[0])
    assert 8 <= side < 4096 and side % 8 == 0


def test_cli_default_prints_the_skip_note_once():
    if amp_pays_off("cpu"):
        pytest.skip("this CPU has native bf16: amp rows are measured")
    out = runner.invoke(app, ["bench-memory", "--patch", "8", "--no-checkpoint", "--device", "cpu"])
    assert out.exit_code == 0, out.output
    assert out.stderr.strip().splitlines() == [f"note: {line}" for line in bench_memory(
        patches="8", checkpoint=False, isolate=False, quiet=True)["notes"]]


@pytest.mark.slow
def test_unet_64_checkpoint_cuts_training_activations_by_40_percent():
    result = bench_memory(model="unet", patches="64", quiet=True)
    rows = {(r["amp"], r["checkpoint"]): r["activation_bytes"] for r in result["rows"]}
    assert rows[(False, True)] <= 0.6 * rows[(False, False)]
    if amp_pays_off("cpu"):
        assert rows[(True, False)] < rows[(False, False)]


@pytest.mark.slow
def test_diffusion_steps_run():
    result = bench_memory(model="diffusion", patches="16", amp=False, quiet=True, isolate=False)
    rows = {r["checkpoint"]: r["activation_bytes"] for r in result["rows"]}
    assert rows[True] < rows[False]
