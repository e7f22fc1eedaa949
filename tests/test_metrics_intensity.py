"""PSNR and 3D SSIM equal scikit-image's whole-volume results, also split into many chunks."""

import dask.array as da
import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from volseg.metrics import evaluate, psnr, ssim
from volseg.metrics.intensity import default_data_range
from volseg.parallel import Execution


@pytest.fixture(scope="module")
def pair():
    rng = np.random.default_rng(0)
    z, y, x = np.mgrid[:26, :30, :23]
    truth = np.sin(x / 4.0) + np.cos(y / 5.0) + z / 26.0
    pred = truth + 0.2 * rng.standard_normal(truth.shape)
    return pred, truth


@pytest.mark.parametrize("chunks", [None, (5, 6, 7), 3, (26, 30, 4)])
def test_ssim_equals_skimage(pair, chunks):
    pred, truth = pair
    ref = structural_similarity(truth, pred, data_range=3.0)
    assert ssim(pred, truth, data_range=3.0, chunks=chunks) == pytest.approx(ref, rel=1e-12, abs=1e-12)


def test_psnr_and_ssim_streamed_with_dask(pair):
    pred, truth = pair
    drange = truth.max() - truth.min()
    got = evaluate(da.from_array(pred, chunks=(7, 8, 9)), da.from_array(truth, chunks=(7, 8, 9)),
                   execution=Execution.parse(scheduler="synchronous", quiet=True))
    assert set(got) == {"psnr", "ssim"}  # float truth: intensity metrics by default
    assert got["psnr"] == pytest.approx(peak_signal_noise_ratio(truth, pred, data_range=drange), rel=1e-12)
    assert got["ssim"] == pytest.approx(structural_similarity(truth, pred, data_range=drange), rel=1e-12)


def test_uint8_default_range_is_dtype_range(pair):
    pred, truth = pair
    t8 = np.clip((truth + 1) * 60, 0, 255).astype(np.uint8)
    p8 = np.clip((pred + 1) * 60, 0, 255).astype(np.uint8)
    assert default_data_range(np.uint8) == 255
    assert psnr(p8, t8) == pytest.approx(peak_signal_noise_ratio(t8, p8), rel=1e-12)
    got = evaluate(p8, t8, metrics="psnr,ssim", block=6,
                   execution=Execution.parse(scheduler="synchronous", quiet=True))
    assert got["ssim"] == pytest.approx(structural_similarity(t8, p8), rel=1e-9)
    assert got["psnr"] == pytest.approx(peak_signal_noise_ratio(t8, p8), rel=1e-12)


def test_identical_volumes():
    v = np.random.default_rng(2).random((9, 9, 9))
    assert psnr(v, v, data_range=1) == float("inf")
    assert ssim(v, v, data_range=1) == pytest.approx(1.0)
