"""benchmarks/diffusion_translation.py: the masked scores it reports, and a tiny end-to-end run."""

import json

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from benchmark_checks import load_benchmark


def test_masked_scores_match_scikit_image_inside_the_mask():
    bench = load_benchmark("diffusion_translation")
    rng = np.random.default_rng(0)
    truth = rng.random((16, 16, 16)).astype(np.float32)
    pred = truth + 0.1 * rng.standard_normal(truth.shape).astype(np.float32)
    mask = np.zeros(truth.shape, bool)
    mask[2:14, 3:12, 4:10] = True
    got = bench.masked_scores(pred, truth, mask)
    data_range = float(truth[mask].max() - truth[mask].min())
    assert got["psnr"] == pytest.approx(peak_signal_noise_ratio(truth[mask], pred[mask], data_range=data_range),
                                        abs=1e-3)
    _, smap = structural_similarity(truth.astype(np.float64), pred.astype(np.float64), win_size=7,
                                    data_range=data_range, full=True)
    assert got["ssim"] == pytest.approx(float(smap[mask].mean()), abs=1e-4)
    assert bench.masked_scores(truth, truth, mask) == {"psnr": float("inf"), "ssim": 1.0}


@pytest.mark.slow
def test_tiny_run_reports_every_model_and_output(tmp_path):
    bench = load_benchmark("diffusion_translation")
    report = bench.main(["--seconds", "2", "--cases", "2", "--held-out", "1", "--samples", "2", "--shape", "32",
                         "--patch", "16", "--models", "unet,v", "--curve", "0.5", "--json", str(tmp_path / "r.json")])
    assert json.loads((tmp_path / "r.json").read_text()) == report
    rows = report["tasks"]["translation"]["summary"]
    assert [(r["model"], r["output"]) for r in rows] == [("unet", "image"), ("v", "1 sample"), ("v", "mean of 2")]
    assert all(np.isfinite(r["psnr"]) and -1 <= r["ssim"] <= 1 for r in rows)
    assert rows[2]["std_tumour"] >= 0 and rows[2]["std_normal"] >= 0
    curve = report["tasks"]["translation"]["curve"]
    assert [(c["model"], c["fraction"]) for c in curve] == [("unet", 0.5), ("v", 0.5)]


@pytest.mark.slow
def test_tiny_denoising_run_has_sdedit_rows(tmp_path):
    bench = load_benchmark("diffusion_translation")
    report = bench.main(["--seconds", "2", "--cases", "1", "--held-out", "1", "--samples", "2", "--shape", "32",
                         "--patch", "16", "--models", "x0", "--denoising", "--curve", "",
                         "--json", str(tmp_path / "r.json")])
    rows = report["tasks"]["denoising"]["summary"]
    assert [r["model"] for r in rows] == ["input", "x0", "x0", "sdedit-eps", "sdedit-eps", "sdedit-x0", "sdedit-x0"]
    assert all(np.isfinite(r["psnr"]) for r in rows) and report["tasks"]["denoising"]["curve"] == []
