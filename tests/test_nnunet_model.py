"""volseg.models.nnunet.model: what NnunetModel exposes to a tiler; labels, regions, channels, masks."""

from __future__ import annotations

import json
import logging
import shutil
import sys
from fractions import Fraction

import numpy as np
import pytest
import torch

from volseg.errors import VolsegError
from volseg.models.nnunet import NnunetModel

pytest.importorskip("nnunetv2", reason="nnunetv2 (the oracle) is in the dev extra: "
                                       "pip install -e '.[dev]' torch==2.13.0")

from nnunet_folder import dataset_for, folder, make_folder, plans_for, refused, rewrite, writable_copy  # noqa: E402,F401


def test_folder_exposes_what_a_tiler_needs(folder, caplog):
    with caplog.at_level(logging.INFO, logger="volseg.nnunet"):
        model = NnunetModel(folder)
    assert "weights-only, allowing numpy scalars" in caplog.text  # nnU-Net logs numpy floats
    assert model.folds == [0, 1] and model.trainer == "nnUNetTrainer"
    assert model.configuration == "3d_fullres"
    assert (model.in_channels, model.out_channels) == (1, 3)
    assert model.labels == {"background": 0, "fibre": 1, "sheet": 2} and not model.regions
    assert model.patch_size == (16, 16, 16) and model.spacing == (1.0, 1.0, 1.0)
    assert model.transpose_forward == model.transpose_backward == (0, 1, 2)
    assert model.mirror_axes == (0, 1, 2) and model.needs_stats == (False,)
    assert model.label_channel() == 1 and model.label_channel("sheet") == 2
    batch = np.random.default_rng(0).normal(size=(2, 1, 16, 16, 16)).astype(np.float32)
    probs = model.probabilities(batch)
    assert probs.shape == (2, 3, 16, 16, 16) and probs.dtype == torch.float32
    torch.testing.assert_close(probs.sum(1), torch.ones(2, 16, 16, 16))
    one = NnunetModel(folder, folds=[1], checkpoint="best", tta=False)
    assert one.folds == [1] and one.mirror_axes == ()
    # the ensemble is the mean of the folds' logits
    torch.testing.assert_close(model.logits(batch), (model.logits(batch, fold=0) + model.logits(batch, fold=1)) / 2)
    prov = model.provenance()
    assert prov["folds"] == ["0", "1"] and len(prov["weights_sha256"]["0"]) == 64



def test_region_labels_use_sigmoid(copy):
    dataset = dataset_for(("a", "b"))
    dataset["labels"] = {"background": 0, "whole": [1, 2, 3], "core": [2, 3], "tip": 3}
    dataset["regions_class_order"] = [1, 2, 3]
    (copy / "dataset.json").write_text(json.dumps(dataset))
    model = NnunetModel(copy, folds=[0])  # three regions: the folder's three heads fit
    assert model.regions and model.out_channels == 3 and model.label_channel("core") == 1
    assert model.label_channel() == 0
    logits = torch.tensor([0.0, 2.0, -1.0]).reshape(1, 3, 1, 1, 1)
    torch.testing.assert_close(model.activation(logits).flatten(), torch.sigmoid(logits.flatten()))
    assert model.segmentation(np.array([0.7, 0.2, 0.9]).reshape(3, 1, 1, 1)).item() == 3
    assert model.segmentation(np.array([0.7, 0.2, 0.1]).reshape(3, 1, 1, 1)).item() == 1



def test_channel_count_differs_from_dataset_json(folder, copy):
    model = NnunetModel(folder, folds=[0])
    two = np.zeros((2, 8, 8, 8), np.float32)
    refused(lambda: model.normalise(two, where="scroll.zarr"), "scroll.zarr", "has 2 channel(s)", "names 1 (CT)")
    with pytest.raises(VolsegError, match="has 2 channel"):
        model.probabilities(np.zeros((1, 2, 16, 16, 16), np.float32))
    # a dataset.json naming two channels for one-channel weights and plans
    dataset = json.loads((copy / "dataset.json").read_text())
    dataset["channel_names"] = {"0": "CT", "1": "mask"}
    (copy / "dataset.json").write_text(json.dumps(dataset))
    refused(lambda: NnunetModel(copy), "plans.json", "name 1/1 channels, dataset.json 2")



def test_masked_zscore_needs_the_mask(copy):
    plans = json.loads((copy / "plans.json").read_text())
    config = plans["configurations"]["3d_fullres"]
    config["normalization_schemes"], config["use_mask_for_norm"] = ["ZScoreNormalization"], [True]
    (copy / "plans.json").write_text(json.dumps(plans))
    model = NnunetModel(copy, folds=[0])
    assert model.needs_stats == (True,)
    image = np.zeros((1, 6, 6, 6), np.float32)
    image[0, 1:5, 1:5, 1:5] = np.arange(64).reshape(4, 4, 4)
    with pytest.raises(ValueError, match="use_mask_for_norm"):
        model.normalise(image)
    out = model.normalise(image, mask=image[0] != 0)
    assert out[0, 0, 0, 0] == 0 and abs(out[0][image[0] != 0].mean()) < 1e-6



def test_unknown_label(folder):
    model = NnunetModel(folder, folds=[0])
    refused(lambda: model.label_channel("ink"), "--label", "'ink'", "fibre, sheet")

