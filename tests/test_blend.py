"""Blending windows: shapes, peaks, positivity, and the crop partition of unity."""

import numpy as np
import pytest

from volseg.errors import VolsegError
from volseg.geometry import grid_origins
from volseg.inference.blend import (
    BLEND_MODES,
    MIN_WEIGHT,
    Blender,
    parse_blend,
    profile,
    window,
)


@pytest.mark.parametrize("mode", ["gaussian", "hann", "constant"])
def test_fixed_windows_are_positive_symmetric_and_peak_at_one(mode):
    w = window((8, 12, 7), mode)
    assert w.shape == (8, 12, 7) and w.dtype == np.float32
    assert w.min() >= MIN_WEIGHT ** 3 * 0.99
    assert np.isclose(w.max(), 1.0)
    np.testing.assert_allclose(w, w[::-1, ::-1, ::-1], rtol=1e-6)


def test_gaussian_sigma_is_an_eighth_of_the_patch_by_default():
    p = profile(64, "gaussian")
    c = 31.5
    x = np.arange(64)
    expected = np.exp(-((x - c) ** 2) / (2 * 8.0 ** 2))
    np.testing.assert_allclose(p, np.maximum(expected / expected.max(), MIN_WEIGHT), rtol=1e-6)
    wider = profile(64, "gaussian", sigma_scale=0.25)
    assert wider[0] > p[0]


def test_crop_weights_partition_every_voxel():
    shape, patch = (23, 31, 17), (8, 12, 6)
    origins = grid_origins(shape, patch, (4, 5, 3))
    blender = Blender.from_origins(origins, patch, "crop")
    total = np.zeros(shape, np.float32)
    for o in origins:
        total[o[0]:o[0] + 8, o[1]:o[1] + 12, o[2]:o[2] + 6] += blender.weight(o)
    np.testing.assert_array_equal(total, 1.0)


def test_crop_takes_each_voxel_from_the_nearest_patch_centre():
    origins = grid_origins((20, 8, 8), (8, 8, 8), (4, 8, 8))
    blender = Blender.from_origins(origins, (8, 8, 8), "crop")
    prof = {int(o[0]): blender.profiles(o)[0] for o in origins}
    # centres at 3.5, 7.5, 11.5, 15.5: voxel 6 is nearest to 7.5 (patch at 4), voxel 5 to 3.5
    assert prof[4][6 - 4] == 1 and prof[0][6] == 0
    assert prof[0][5] == 1 and prof[4][5 - 4] == 0


def test_weight_of_a_sub_box_is_the_slice_of_the_full_weight():
    blender = Blender.from_origins(np.zeros((1, 3), int), (8, 6, 4), "gaussian")
    full = blender.weight((0, 0, 0))
    np.testing.assert_array_equal(blender.weight((0, 0, 0), (1, 2, 0), (5, 6, 3)), full[1:5, 2:6, 0:3])


def test_unknown_blend_mode_names_the_option():
    with pytest.raises(VolsegError, match="--blend"):
        parse_blend("median")
    assert set(BLEND_MODES) == {"gaussian", "hann", "constant", "crop"}
