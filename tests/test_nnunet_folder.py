"""Reading an nnU-Net model folder: what it exposes, and every bad folder as one VolsegError line."""

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

from nnunet_folder import dataset_for, make_folder, plans_for  # noqa: E402


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("nnunet"), plans_for("CTNormalization", patch=(16, 16, 16)),
                       dataset_for(("fibre", "sheet")))


@pytest.fixture
def copy(folder, tmp_path):
    """A writable copy of the folder, under nnU-Net's name."""
    return shutil.copytree(folder, tmp_path / folder.name)


def refused(call, path_end: str, *words: str) -> VolsegError:
    with pytest.raises(VolsegError) as info:
        call()
    err = info.value
    assert err.path and err.path.endswith(path_end), err.path
    assert "\n" not in str(err)
    for word in words:
        assert word in err.message, err.message
    return err


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


@pytest.mark.parametrize("variant", ["nnUNetTrainer", "nnUNetTrainerBN"])
def test_network_equals_the_one_nnunet_builds(folder, tmp_path, variant):
    """The trainer's own build_network_architecture (not the predictor: its trainer search imports
    every trainer module, and the Primus ones need a torchvision that works beside torch)."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.training.nnUNetTrainer.variants.network_architecture.nnUNetTrainerBN import nnUNetTrainerBN
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    trainer_class = {"nnUNetTrainer": nnUNetTrainer, "nnUNetTrainerBN": nnUNetTrainerBN}[variant]
    if variant == "nnUNetTrainerBN":  # batch norm instead of the plans' instance norm
        folder = make_folder(tmp_path, plans_for("CTNormalization", patch=(16, 16, 16)),
                             dataset_for(("fibre", "sheet")), folds=(0,), trainer_class=nnUNetTrainerBN)
    plans = PlansManager(json.loads((folder / "plans.json").read_text()))
    theirs = trainer_class.build_network_architecture(plans, plans.get_configuration("3d_fullres"), 1, 3, False)
    theirs.load_state_dict(torch.load(folder / "fold_0" / "checkpoint_final.pth", weights_only=False)["network_weights"])
    model = NnunetModel(folder, folds=[0], tta=False)
    assert model.trainer == variant
    assert [type(m).__name__ for m in model.networks[0].modules()] == [type(m).__name__ for m in theirs.modules()]
    batch = torch.from_numpy(np.random.default_rng(1).normal(size=(2, 1, 16, 16, 16)).astype(np.float32))
    with torch.inference_mode():
        expected = theirs.eval()(batch)
    torch.testing.assert_close(model.logits(batch), expected, rtol=0, atol=0)


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


def test_folder_without_plans(copy):
    (copy / "plans.json").unlink()
    refused(lambda: NnunetModel(copy), "plans.json", "missing", "Trainer__Plans__configuration")
    refused(lambda: NnunetModel(copy / "fold_0"), "plans.json", "not its parent or a fold")
    refused(lambda: NnunetModel(copy / "nothing"), "nothing", "is not a folder")


def test_damaged_json(copy):
    (copy / "dataset.json").write_text("{not json")
    refused(lambda: NnunetModel(copy), "dataset.json", "not valid JSON")


def test_missing_fold_names_the_folds_present(copy):
    refused(lambda: NnunetModel(copy, folds=[0, 3]), "fold_3/checkpoint_final.pth", "folds with one: 0, 1")
    (copy / "fold_1" / "checkpoint_best.pth").unlink()
    refused(lambda: NnunetModel(copy, folds=[1], checkpoint="best"), "fold_1/checkpoint_best.pth",
            "--checkpoint final")
    for fold in (0, 1):
        shutil.rmtree(copy / f"fold_{fold}")
    refused(lambda: NnunetModel(copy), copy.name, "no fold_K/checkpoint_final.pth")


def _rewrite(path, **changes):
    ck = torch.load(path, weights_only=False)
    ck.update(changes)
    torch.save(ck, path)


@pytest.mark.parametrize("trainer,words", [("nnUNetTrainerMedNeXtS_kernel3", ("MedNeXt", "ONNX")),
                                           ("nnUNet_Primus_M_Trainer", ("Primus",))])
def test_trainer_with_its_own_network(copy, trainer, words):
    for fold in (0, 1):
        _rewrite(copy / f"fold_{fold}" / "checkpoint_final.pth", trainer_name=trainer)
    refused(lambda: NnunetModel(copy), "fold_0/checkpoint_final.pth", trainer, *words)


def test_network_class_that_cannot_be_imported(copy):
    plans = json.loads((copy / "plans.json").read_text())
    plans["configurations"]["3d_fullres"]["architecture"]["network_class_name"] = "nnunetv2.nets.MedNeXt"
    (copy / "plans.json").write_text(json.dumps(plans))
    refused(lambda: NnunetModel(copy), "plans.json", "nnunetv2.nets.MedNeXt", "nnUNetTrainer",
            "volseg[nnunet]")


def test_without_dynamic_network_architectures(folder, monkeypatch):
    monkeypatch.setitem(sys.modules, "dynamic_network_architectures", None)
    refused(lambda: NnunetModel(folder), "plans.json", "pip install 'volseg[nnunet]'")


def test_weights_that_do_not_fit_the_plans(copy):
    plans = json.loads((copy / "plans.json").read_text())
    plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["features_per_stage"] = [8, 8, 16, 16]
    (copy / "plans.json").write_text(json.dumps(plans))
    refused(lambda: NnunetModel(copy), "fold_0/checkpoint_final.pth", "do not fit", "other shape")


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


def test_checkpoint_needing_code_is_refused_unless_trusted(copy, caplog):
    path = copy / "fold_0" / "checkpoint_final.pth"
    _rewrite(path, extra=Fraction(1, 3))
    refused(lambda: NnunetModel(copy, folds=[0]), "fold_0/checkpoint_final.pth", "fractions.Fraction",
            "--trust-checkpoint")
    with caplog.at_level(logging.WARNING, logger="volseg.nnunet"):
        NnunetModel(copy, folds=[0], trust=True)
    assert "weights_only=False" in caplog.text and "fractions.Fraction" in caplog.text


def test_not_a_checkpoint(copy):
    (copy / "fold_0" / "checkpoint_final.pth").write_bytes(b"not a pickle")
    refused(lambda: NnunetModel(copy, folds=[0]), "fold_0/checkpoint_final.pth", "not a readable torch checkpoint")
    torch.save({"state_dict": {}}, copy / "fold_1" / "checkpoint_final.pth")
    refused(lambda: NnunetModel(copy, folds=[1]), "fold_1/checkpoint_final.pth", "network_weights")


def test_bad_folds_and_checkpoint_names(folder):
    refused(lambda: NnunetModel(folder, folds=[0, 0]), "--folds", "named twice")
    refused(lambda: NnunetModel(folder, folds=["x"]), "--folds", "'x'")
    refused(lambda: NnunetModel(folder, checkpoint="latest"), "--checkpoint", "final, best")
