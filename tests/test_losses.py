"""Soft clDice: the soft skeleton, the loss term against MONAI, gradients, config keys, training."""

import numpy as np
import pytest
import torch

from loss_checks import train_on_a_sheet
from volseg.errors import VolsegError
from volseg.training.losses import segmentation_loss, soft_skeleton


def _sheet_label():
    label = torch.zeros(2, 1, 16, 16, 16, dtype=torch.uint8)
    label[:, :, :, :, 5:10] = 1        # a 5-voxel-thick sheet across the patch
    return label


def test_soft_skeleton_of_a_binary_sheet_is_its_middle_plane():
    sheet = (_sheet_label() == 1).float()
    skel = soft_skeleton(sheet, iters=3)
    assert set(torch.unique(skel).tolist()) <= {0.0, 1.0}
    # Inside the volume (the pooling pads the borders), the skeleton is the plane x = 7.
    inner = skel[:, :, 3:-3, 3:-3]
    assert inner[..., 7].eq(1).all() and inner[..., :7].eq(0).all() and inner[..., 8:].eq(0).all()
    assert soft_skeleton(torch.zeros_like(sheet)).sum() == 0


def test_cldice_is_zero_when_perfect_and_tells_a_cut_from_an_equal_thinning():
    label = _sheet_label()
    perfect = torch.where(label == 1, 30.0, -30.0)
    kw = dict(bce_weight=0.0, dice_weight=0.0, cldice_weight=1.0)
    assert float(segmentation_loss(perfect, label, **kw)) == pytest.approx(0.0, abs=1e-6)
    cut = perfect.clone()
    cut[:, :, 6:12] = -30.0            # a gap through the sheet (6 of 16 slices): 480 voxels lost
    wider = perfect.clone()
    wider[:, :, 2:14] = -30.0
    thinned = perfect.clone()
    thinned[..., 5] = thinned[..., 9] = -30.0   # both faces peeled (512 voxels), no hole
    losses = [float(segmentation_loss(x, label, **kw)) for x in (perfect, cut, wider)]
    assert losses[0] < losses[1] < losses[2]
    # Dice loses about as much to either; clDice sees that only the cut breaks the sheet.
    dice = [float(segmentation_loss(x, label, bce_weight=0.0)) for x in (cut, thinned)]
    assert abs(dice[0] - dice[1]) < 0.05
    assert float(segmentation_loss(thinned, label, **kw)) < 0.01 < 0.2 < losses[1]


def test_soft_skeleton_and_loss_equal_monai():
    cldice = pytest.importorskip("monai.losses.cldice")
    g = torch.Generator().manual_seed(0)
    prob = torch.rand(1, 1, 20, 18, 22, generator=g)
    np.testing.assert_array_equal(soft_skeleton(prob, iters=3).numpy(), cldice.soft_skel(prob, 3).numpy())
    label = (torch.rand(1, 1, 20, 18, 22, generator=g) > 0.6).to(torch.uint8)
    logits = torch.randn(1, 1, 20, 18, 22, generator=g)
    ours = segmentation_loss(logits, label, ignore_label=None, bce_weight=0.0, dice_weight=0.0,
                             cldice_weight=1.0, cldice_iters=3)
    ref = cldice.SoftclDiceLoss(iter_=3, sigmoid=True)(logits, label.float())
    # MONAI adds 1e-4 to the harmonic mean's denominator; volseg does not.
    assert float(ours) == pytest.approx(float(ref), abs=1e-4)


def test_gradients_flow_and_the_ignore_label_is_left_out():
    label = _sheet_label()
    label[1, :, :, :, 4] = 2           # ignore band on one face of the second sample
    logits = torch.zeros(label.shape, requires_grad=True)
    segmentation_loss(logits, label, bce_weight=0.0, dice_weight=0.0, cldice_weight=1.0).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    assert (logits.grad[label == 2] == 0).all()
    multi = torch.zeros(2, 3, 16, 16, 16, requires_grad=True)
    segmentation_loss(multi, label, cldice_weight=1.0).backward()
    assert torch.isfinite(multi.grad).all()


def test_config_accepts_the_cldice_keys_and_names_bad_ones():
    from volseg.training.config import resolve

    cfg = resolve(model_type="unet", overrides={"loss.cldice_weight": 0.5})
    assert cfg["loss"]["cldice_weight"] == 0.5 and cfg["loss"]["cldice_iters"] == 3
    with pytest.raises(VolsegError, match="must be >= 0"):
        resolve(model_type="unet", overrides={"loss.cldice_weight": -1.0})
    with pytest.raises(VolsegError, match="at least 1"):
        resolve(model_type="unet", overrides={"loss.cldice_iters": 0})


def test_training_with_cldice_runs_and_records_the_weight(tmp_path):
    config = train_on_a_sheet(tmp_path, {"loss.cldice_weight": 1.0})
    assert config["loss"]["cldice_weight"] == 1.0
