"""volseg.inference.nnunet_grid: nnU-Net's tile steps, gaussian, padding and crop box, against nnunetv2's own functions."""

from __future__ import annotations

import numpy as np
import pytest

from volseg.inference import nnunet_grid as grid

from nnunet_folder import blobby

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




@pytest.mark.parametrize("seed", [0, 1, 2])
def test_crop_box_and_mask_equal_crop_to_nonzero(seed):
    from nnunetv2.preprocessing.cropping.cropping import crop_to_nonzero

    data = blobby(np.random.default_rng(seed), (2, 30, 41, 25))
    _, seg, bbox = crop_to_nonzero(data.copy())
    mask = grid.nonzero_mask(data)
    box = grid.nonzero_bbox(mask)
    assert [list(b) for b in box] == [list(map(int, b)) for b in bbox]
    np.testing.assert_array_equal(mask[grid.bbox_slices(box)], seg[0] >= 0)


def test_crop_box_streamed_in_blocks_equals_whole():
    data = blobby(np.random.default_rng(5), (1, 37, 29, 45))
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
