"""nnU-Net's grid and normalisation, reproduced in volseg, against nnunetv2's own functions."""

from __future__ import annotations

import numpy as np
import pytest

from volseg.inference import nnunet_grid as grid
from volseg.models.nnunet.normalization import (ChannelStats, block_stats, combine_stats,
                                                image_stats, normalise_channel)

nnunetv2 = pytest.importorskip("nnunetv2", reason="nnunetv2 (the oracle) is in the dev extra: "
                                                  "pip install -e '.[dev]' torch==2.13.0")


@pytest.mark.parametrize("image,patch,step", [
    ((96, 96, 96), (32, 32, 32), 0.5), ((110, 64, 40), (64, 64, 40), 0.5),
    ((97, 33, 200), (32, 32, 48), 0.5), ((40, 41, 42), (40, 40, 40), 0.5),
    ((300, 128, 129), (80, 96, 64), 0.5), ((100, 100, 100), (32, 48, 64), 0.3),
    ((64, 64, 64), (64, 64, 64), 1.0),
])
def test_steps_equal_nnunet(image, patch, step):
    from nnunetv2.inference.sliding_window_prediction import compute_steps_for_sliding_window

    assert grid.steps(image, patch, step) == compute_steps_for_sliding_window(image, patch, step)


@pytest.mark.parametrize("patch", [(32, 32, 32), (48, 40, 33), (64, 128, 128), (16, 96, 96)])
def test_gaussian_equals_nnunet(patch):
    import torch
    from nnunetv2.inference.sliding_window_prediction import compute_gaussian

    ours = grid.gaussian(patch)
    theirs = compute_gaussian(patch, sigma_scale=1.0 / 8, value_scaling_factor=10,
                              device=torch.device("cpu")).numpy()
    assert ours.dtype == theirs.dtype == np.float16
    np.testing.assert_array_equal(ours, theirs)
    assert ours.min() > 0


@pytest.mark.parametrize("shape,patch", [((3, 20, 33, 7), (32, 32, 32)), ((1, 40, 40, 40), (32, 32, 32)),
                                         ((2, 31, 50, 64), (32, 48, 64))])
def test_pad_equals_pad_nd_image(shape, patch):
    import torch
    from acvl_utils.cropping_and_padding.padding import pad_nd_image

    data = np.random.default_rng(0).random(shape, dtype=np.float32)
    # the predictor pads a torch tensor, as here
    theirs, their_slicer = pad_nd_image(torch.from_numpy(data), patch, "constant", {"value": 0}, True, None)
    theirs = theirs.numpy()
    ours, unpad = grid.pad(data, patch)
    np.testing.assert_array_equal(ours, theirs)
    assert tuple(their_slicer[1:]) == unpad
    np.testing.assert_array_equal(ours[(slice(None),) + unpad], data)


def _blobby(rng, shape):
    data = np.zeros(shape, np.float32)
    z0, y0, x0 = (rng.integers(0, s // 3) for s in shape[1:])
    z1, y1, x1 = (rng.integers(2 * s // 3, s) for s in shape[1:])
    data[:, z0:z1, y0:y1, x0:x1] = rng.normal(size=(shape[0], z1 - z0, y1 - y0, x1 - x0))
    data[:, (z0 + z1) // 2, (y0 + y1) // 2, :] = 0  # a hole, which fill_holes closes
    return data


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_crop_box_and_mask_equal_crop_to_nonzero(seed):
    from nnunetv2.preprocessing.cropping.cropping import crop_to_nonzero

    data = _blobby(np.random.default_rng(seed), (2, 30, 41, 25))
    _, seg, bbox = crop_to_nonzero(data.copy())
    mask = grid.nonzero_mask(data)
    box = grid.nonzero_bbox(mask)
    assert [list(b) for b in box] == [list(map(int, b)) for b in bbox]
    np.testing.assert_array_equal(mask[grid.bbox_slices(box)], seg[0] >= 0)


def test_crop_box_streamed_in_blocks_equals_whole():
    data = _blobby(np.random.default_rng(5), (1, 37, 29, 45))
    nonzero = np.any(data != 0, axis=0)
    parts = []
    for z in range(0, 37, 10):
        for y in range(0, 29, 8):
            for x in range(0, 45, 16):
                parts.append(grid.block_bbox(nonzero[z:z + 10, y:y + 8, x:x + 16], (z, y, x)))
    assert any(p is None for p in parts)  # empty blocks are part of the reduction
    assert grid.finish_bbox(grid.merge_bboxes(parts), nonzero.shape) == grid.nonzero_bbox(nonzero)
    # nothing nonzero anywhere: nnU-Net keeps the whole volume
    empty = np.zeros((5, 6, 7), bool)
    assert grid.nonzero_bbox(empty) == ((0, 5), (0, 6), (0, 7))
    assert grid.finish_bbox(grid.merge_bboxes([None, None]), (5, 6, 7)) == ((0, 5), (0, 6), (0, 7))


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

    data = _blobby(np.random.default_rng(7), (1, 26, 31, 22)) * 5 + 0.0
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
