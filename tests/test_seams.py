"""The seam measure: where the patch grid's boundaries lie, that a jump there is a seam and a
smooth volume has none, and that a stitched UNet shows none while patches cut hard do.
test_diffusion_sampling.py applies the same measure to diffusion samples."""

import numpy as np
import pytest
import zarr

from seam_checks import HARD_CUT, NO_SEAM, smooth_field, train_unet
from volseg.errors import VolsegError
from volseg.geometry import axis_origins
from volseg.inference.blend import Blender
from volseg.metrics.seams import grid_boundaries, plane_steps, seam_ratio, seam_ratios


def test_boundaries_are_patch_starts_ends_and_crop_handovers():
    assert grid_boundaries(24, 16, 8).tolist() == [8, 12, 16]
    assert grid_boundaries(32, 16, 16).tolist() == [16]
    assert grid_boundaries(10, 16, 8).tolist() == []  # one (padded) patch: no boundary inside
    starts = axis_origins(23, 8, 5)  # the last patch flush with the end: uneven hand-overs
    crop = Blender([starts] * 3, (8, 8, 8), "crop")
    first_owned = [int(s + np.flatnonzero(crop.profiles((s, s, s))[0])[0]) for s in starts]
    expected = set(starts[1:]) | set(starts + 8) | set(first_owned[1:])
    assert grid_boundaries(23, 8, 5).tolist() == sorted(p for p in expected if 0 < p < 23)


def test_a_jump_at_a_boundary_is_a_seam_and_a_smooth_volume_has_none(tmp_path):
    z, y, x = np.mgrid[:24, :32, :32].astype(np.float32)
    smooth = np.sin(z / 5.0) + np.cos(y / 7.0) + np.sin(x / 6.0)
    assert max(seam_ratios(smooth, (16, 16, 16), (8, 8, 8))) < 1.05
    seam = smooth.copy()
    seam[:, 12:] += 0.5  # two patches that disagree at the y hand-over 12
    ratios = seam_ratios(seam, (16, 16, 16), (8, 8, 8))
    assert ratios[1] > HARD_CUT and ratios[0] == pytest.approx(seam_ratios(smooth, (16, 16, 16), (8, 8, 8))[0])
    off_grid = smooth.copy()
    off_grid[:, 14:] += 0.5  # the same jump between boundaries is no seam of this grid
    assert seam_ratios(off_grid, (16, 16, 16), (8, 8, 8))[1] < 1.05
    arr = zarr.create_array(str(tmp_path / "s.zarr"), shape=seam.shape, chunks=(8, 8, 8), dtype="float32")
    arr[:] = seam
    assert seam_ratio(arr, (16, 16, 16), (8, 8, 8)) == pytest.approx(seam_ratio(seam, (16, 16, 16), (8, 8, 8)))
    np.testing.assert_allclose(plane_steps(arr, 2), np.abs(np.diff(seam.astype(np.float64), axis=2)).mean(axis=(0, 1)), rtol=1e-9)


def test_what_has_no_grid_is_refused():
    with pytest.raises(VolsegError, match=r"\(z, y, x\) volume"):
        seam_ratios(np.zeros((8, 8)), (4, 4, 4), (2, 2, 2))
    with pytest.raises(VolsegError, match="3 positive sizes"):
        seam_ratios(np.zeros((8, 8, 8)), (4, 4), (2, 2))
    with pytest.raises(VolsegError, match="no patch boundary"):
        seam_ratio(np.zeros((8, 8, 8)), (8, 8, 8), (4, 4, 4))


def test_a_stitched_unet_has_no_seams_and_patches_cut_hard_do(tmp_path):
    from volseg.inference import predict
    from volseg.inference.settings import predict_options

    run = train_unet(tmp_path / "run")
    np.save(tmp_path / "c.npy", smooth_field(3, (16, 24, 24)))
    ratios = {}
    for overlap in (0.5, 0.0):  # gaussian blending of half-overlapping patches; patches side by side
        out = tmp_path / f"o{overlap}.zarr"
        predict(run, tmp_path / "c.npy", out, *predict_options(patch=8, overlap=overlap, stitch=True, chunks=8,
                                                              device="cpu", quiet=True))
        stride = int(8 * (1 - overlap))
        ratios[overlap] = seam_ratio(zarr.open_array(str(out / "0"), mode="r"), (8, 8, 8), (stride,) * 3)
    assert ratios[0.5] < NO_SEAM and ratios[0.0] > HARD_CUT, ratios


def test_docstring_examples_hold():
    import doctest

    import volseg.metrics.seams as module

    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 5 and result.failed == 0
