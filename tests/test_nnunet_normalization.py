"""volseg.models.nnunet.normalization: nnU-Net's five schemes and streamed statistics, against nnunetv2."""

from __future__ import annotations

import numpy as np
import pytest

from nnunet_folder import blobby
from volseg.inference import nnunet_grid as grid
from volseg.models.nnunet.normalization import (ChannelStats, block_stats, combine_stats,
                                                image_stats, normalise_channel)

nnunetv2 = pytest.importorskip("nnunetv2", reason="nnunetv2 (the oracle) is in the dev extra: "
                                                  "pip install -e '.[dev]' torch==2.13.0")


PROPS = {"mean": 0.3, "std": 1.7, "percentile_00_5": -2.5, "percentile_99_5": 3.1, "median": 0.2,
         "min": -9.0, "max": 9.0}


def _scheme(name):
    from nnunetv2.preprocessing.normalization import default_normalization_schemes as s

    return getattr(s, name)


@pytest.mark.parametrize("scheme", ["CTNormalization", "ZScoreNormalization", "NoNormalization",
                                    "RescaleTo01Normalization"])
@pytest.mark.parametrize("seed", [0, 1])
def test_normalisation_equals_nnunet(scheme, seed):
    rng = np.random.default_rng(seed)
    image = (rng.normal(size=(24, 30, 28)) * 3 + 1).astype(np.float32)
    theirs = _scheme(scheme)(use_mask_for_norm=False, intensityproperties=PROPS).run(image.copy())
    ours = normalise_channel(image, scheme, PROPS)
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(ours, theirs)


def test_rgb_normalisation_equals_nnunet_and_refuses_out_of_range():
    image = np.random.default_rng(3).integers(0, 256, size=(10, 12, 3)).astype(np.uint8)
    theirs = _scheme("RGBTo01Normalization")(intensityproperties=PROPS).run(image.copy())
    np.testing.assert_array_equal(normalise_channel(image, "RGBTo01Normalization"), theirs)
    with pytest.raises(ValueError, match="0..255"):
        normalise_channel(np.full((2, 2), 300.0), "RGBTo01Normalization")


def test_zscore_with_mask_for_norm_equals_nnunet():
    from nnunetv2.preprocessing.cropping.cropping import crop_to_nonzero

    data = blobby(np.random.default_rng(7), (1, 26, 31, 22)) * 5 + 0.0
    cropped, seg, _ = crop_to_nonzero(data.copy())
    theirs = _scheme("ZScoreNormalization")(use_mask_for_norm=True, intensityproperties=PROPS).run(
        cropped[0].copy(), seg[0])
    mask = grid.nonzero_mask(data)
    box = grid.bbox_slices(grid.nonzero_bbox(mask))
    ours = normalise_channel(data[0][box], "ZScoreNormalization", mask=mask[box])
    np.testing.assert_array_equal(ours, theirs)


def test_streamed_zscore_stats_match_in_memory():
    rng = np.random.default_rng(11)
    image = (rng.normal(size=(40, 33, 37)) * 250 + 1200).astype(np.float32)
    parts = [block_stats(image[z:z + 7]) for z in range(0, 40, 7)] + [block_stats(image[:0])]
    streamed = combine_stats(parts)
    whole = image_stats(image)
    assert streamed.count == whole.count == image.size
    assert streamed.minimum == whole.minimum and streamed.maximum == whole.maximum
    assert streamed.mean == pytest.approx(whole.mean, rel=1e-6)
    assert streamed.std == pytest.approx(whole.std, rel=1e-5)
    theirs = _scheme("ZScoreNormalization")(use_mask_for_norm=False, intensityproperties=PROPS).run(image.copy())
    np.testing.assert_allclose(normalise_channel(image, "ZScoreNormalization", stats=streamed), theirs,
                               atol=1e-5)
    with pytest.raises(ValueError, match="no voxels"):
        combine_stats([block_stats(image[:0])])


def test_stats_given_replace_the_image_own():
    image = np.arange(8, dtype=np.float32)
    fixed = ChannelStats(count=100, mean=2.0, std=4.0, minimum=-4.0, maximum=12.0)
    np.testing.assert_array_equal(normalise_channel(image, "ZScoreNormalization", stats=fixed), (image - 2) / 4)
    np.testing.assert_array_equal(normalise_channel(image, "RescaleTo01Normalization", stats=fixed),
                                  (image + 4) / 16)
