"""Skeleton recall loss: zero when perfect, grows when a sheet is cut, gradients flow; config keys."""

import numpy as np
import pytest
import torch

from loss_checks import train_on_a_sheet
from volseg.errors import VolsegError
from volseg.training.losses import segmentation_loss, tubed_skeleton


def _sheet_label():
    label = torch.zeros(2, 1, 16, 16, 16, dtype=torch.uint8)
    label[:, :, :, :, 6:10] = 1        # a 4-voxel-thick sheet across the patch
    label[1, :, :, :, 5] = 2           # ignore band on one face of the second sample
    return label


def test_tube_lies_in_the_foreground_and_covers_the_skeleton():
    label = _sheet_label()
    tube = tubed_skeleton(label, radius=1)
    assert tube.shape == label.shape and tube.dtype == torch.float32
    assert tube.sum() > 0 and (tube[label != 1] == 0).all()
    assert tubed_skeleton(torch.zeros_like(label)).sum() == 0


def test_skeleton_recall_is_zero_when_perfect_and_grows_when_a_sheet_is_cut():
    label = _sheet_label()
    perfect = torch.where(label == 1, 30.0, -30.0)
    kw = dict(bce_weight=0.0, dice_weight=0.0, skeleton_recall_weight=1.0)
    assert float(segmentation_loss(perfect, label, **kw)) == pytest.approx(0.0, abs=1e-6)
    cut = perfect.clone()
    cut[:, :, 6:10] = -30.0            # a gap through the sheet
    wider = perfect.clone()
    wider[:, :, 4:12] = -30.0
    losses = [float(segmentation_loss(x, label, **kw)) for x in (perfect, cut, wider)]
    assert losses[0] < losses[1] < losses[2]
    # Dice barely notices the cut that skeleton recall punishes: the topology term adds signal.
    plain = [float(segmentation_loss(x, label)) for x in (perfect, cut)]
    with_skel = [float(segmentation_loss(x, label, skeleton_recall_weight=1.0)) for x in (perfect, cut)]
    assert with_skel[1] - with_skel[0] > plain[1] - plain[0]


def test_gradients_flow_through_the_skeleton_term():
    label = _sheet_label()
    logits = torch.zeros(label.shape, requires_grad=True)
    segmentation_loss(logits, label, bce_weight=0.0, dice_weight=0.0, skeleton_recall_weight=1.0).backward()
    grad = logits.grad
    assert grad is not None and torch.isfinite(grad).all()
    tube = tubed_skeleton(label)
    assert (grad[tube > 0] < 0).all() and (grad[tube == 0] == 0).all()
    multi = torch.zeros(2, 3, 16, 16, 16, requires_grad=True)
    segmentation_loss(multi, label, skeleton_recall_weight=1.0).backward()
    assert torch.isfinite(multi.grad).all()


def test_config_accepts_the_skeleton_keys_and_names_bad_ones():
    from volseg.training.config import resolve

    cfg = resolve(model_type="unet", overrides={"loss.skeleton_recall_weight": 1.0})
    assert cfg["loss"]["skeleton_recall_weight"] == 1.0 and cfg["loss"]["skeleton_tube_radius"] == 1
    with pytest.raises(VolsegError, match="skeleton_recal"):
        resolve(model_type="unet", overrides={"loss.skeleton_recal_weight": 1.0})
    with pytest.raises(VolsegError, match="must be >= 0"):
        resolve(model_type="unet", overrides={"loss.skeleton_recall_weight": -1.0})
    assert np.isclose(resolve(model_type="unet")["loss"]["skeleton_recall_weight"], 0.0)


def test_training_with_skeleton_recall_runs_and_records_the_weight(tmp_path):
    config = train_on_a_sheet(tmp_path, {"loss.skeleton_recall_weight": 1.0})
    assert config["loss"]["skeleton_recall_weight"] == 1.0
