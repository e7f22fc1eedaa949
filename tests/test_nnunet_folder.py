"""volseg.models.nnunet.folder: reading an nnU-Net model folder; every bad folder as one VolsegError line."""

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



@pytest.mark.parametrize("trainer,words", [("nnUNetTrainerMedNeXtS_kernel3", ("MedNeXt", "ONNX")),
                                           ("nnUNet_Primus_M_Trainer", ("Primus",))])
def test_trainer_with_its_own_network(copy, trainer, words):
    for fold in (0, 1):
        rewrite(copy / f"fold_{fold}" / "checkpoint_final.pth", trainer_name=trainer)
    refused(lambda: NnunetModel(copy), "fold_0/checkpoint_final.pth", trainer, *words)



def test_checkpoint_needing_code_is_refused_unless_trusted(copy, caplog):
    path = copy / "fold_0" / "checkpoint_final.pth"
    rewrite(path, extra=Fraction(1, 3))
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

