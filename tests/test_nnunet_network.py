"""volseg.models.nnunet.network: the plans' network built as nnU-Net builds it, and what cannot be built."""

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




