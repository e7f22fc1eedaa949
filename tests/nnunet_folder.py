"""Make small trained-looking nnU-Net v2 model folders through nnU-Net's own trainer.

``make_folder(root, ...)`` builds a plans dict (one ``3d_fullres`` configuration), instantiates
``nnUNetTrainer`` (which builds the network from the plans with dynamic_network_architectures),
logs two epochs through nnU-Net's logger the way training does (numpy scalars included, as in
real checkpoints) and writes ``checkpoint_final.pth``/``checkpoint_best.pth`` with the trainer's
own ``save_checkpoint``, into ``$nnUNet_results/Dataset.../Trainer__Plans__3d_fullres/fold_K``,
plus ``plans.json`` and ``dataset.json``: the folder ``nnUNetv2_train`` leaves. Needs nnunetv2.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from volseg.errors import VolsegError

ARCH = {
    "PlainConvUNet": {"n_conv_per_stage": [1, 1, 1, 1]},
    "ResidualEncoderUNet": {"n_blocks_per_stage": [1, 1, 2, 2]},
}


def plans_for(scheme: str, network: str = "PlainConvUNet", patch=(32, 32, 32), channels: int = 1,
              use_mask_for_norm: bool = False) -> dict:
    """A plans dict like ExperimentPlanner's, with a 4-stage 3d_fullres configuration."""
    arch_kwargs = {"n_stages": 4, "features_per_stage": [4, 8, 16, 16],
                   "conv_op": "torch.nn.modules.conv.Conv3d", "kernel_sizes": [[3, 3, 3]] * 4,
                   "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]],
                   "n_conv_per_stage_decoder": [1, 1, 1], "conv_bias": True,
                   "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                   "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None,
                   "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
                   "nonlin_kwargs": {"inplace": True}, **ARCH[network]}
    resample = {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None}
    props = {str(c): {"max": 6.0, "mean": 0.4 + c, "median": 0.3, "min": -6.0,
                      "percentile_00_5": -2.0, "percentile_99_5": 2.5, "std": 0.9} for c in range(channels)}
    return {
        "dataset_name": "Dataset999_Volseg", "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [1.0, 1.0, 1.0],
        "original_median_shape_after_transp": [96, 96, 96], "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
        "configurations": {"3d_fullres": {
            "data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor",
            "batch_size": 2, "patch_size": list(patch), "median_image_size_in_voxels": [96, 96, 96],
            "spacing": [1.0, 1.0, 1.0], "normalization_schemes": [scheme] * channels,
            "use_mask_for_norm": [use_mask_for_norm] * channels,
            "resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_data_kwargs": resample,
            "resampling_fn_seg": "resample_data_or_seg_to_shape",
            "resampling_fn_seg_kwargs": dict(resample, is_seg=True, order=1),
            "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
            "resampling_fn_probabilities_kwargs": dict(resample, order=1),
            "architecture": {
                "network_class_name": f"dynamic_network_architectures.architectures.unet.{network}",
                "arch_kwargs": arch_kwargs,
                "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]},
            "batch_dice": False}},
        "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": props,
    }


def dataset_for(labels=("fibre", "sheet"), channels: int = 1) -> dict:
    """dataset.json with ``background`` and the given foreground labels (1, 2, ...)."""
    return {"channel_names": {str(c): ("CT" if c == 0 else f"ch{c}") for c in range(channels)},
            "labels": {"background": 0, **{name: i + 1 for i, name in enumerate(labels)}},
            "numTraining": 2, "file_ending": ".nii.gz"}


@contextlib.contextmanager
def _nnunet_paths(root: Path):
    keys = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
    old = {k: os.environ.get(k) for k in keys}
    try:
        for k in keys:
            os.environ[k] = str(root / k)
            (root / k).mkdir(parents=True, exist_ok=True)
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def make_folder(root: Path, plans: dict, dataset: dict, folds=(0, 1), seed: int = 0,
                trainer_class=None) -> Path:
    """Write a model folder under ``root`` with random weights per fold; return its path.

    ``trainer_class`` is an nnU-Net trainer class (default ``nnUNetTrainer``).
    """
    import torch
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    trainer_class = trainer_class or nnUNetTrainer
    root = Path(root)
    with _nnunet_paths(root), contextlib.redirect_stdout(io.StringIO()):
        pre = root / "nnUNet_preprocessed" / plans["dataset_name"] / "nnUNetPlans_3d_fullres"
        pre.mkdir(parents=True, exist_ok=True)
        (pre / "case_000.b2nd").touch()  # initialize() infers the dataset class from the file endings
        base = None
        for k, fold in enumerate(folds):
            torch.manual_seed(seed + k)
            trainer = trainer_class(plans=dict(copy.deepcopy(plans), continue_training=False),
                                    configuration="3d_fullres", fold=fold, dataset_json=dataset,
                                    device=torch.device("cpu"))
            trainer.initialize()
            trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
            with torch.no_grad():  # random but not tiny: logits of a few units, like a trained net
                for p in trainer.network.parameters():
                    p.add_(torch.randn_like(p) * 0.3)
            for epoch in range(2):
                trainer.logger.log("mean_fg_dice", np.float64(0.2 + 0.1 * epoch), epoch)
                trainer.logger.log("dice_per_class_or_region", [np.float64(0.3)] * len(dataset["labels"]), epoch)
                trainer.logger.log("train_losses", np.float32(-0.5), epoch)
                trainer.logger.log("val_losses", np.float32(-0.4), epoch)
                trainer.logger.log("lrs", 0.01, epoch)
                trainer.logger.log("epoch_start_timestamps", time.time(), epoch)
                trainer.logger.log("epoch_end_timestamps", time.time(), epoch)
            trainer.current_epoch = 1
            trainer._best_ema = trainer.logger.get_value("ema_fg_dice", step=-1)
            out = Path(trainer.output_folder)
            trainer.save_checkpoint(str(out / "checkpoint_final.pth"))
            trainer.save_checkpoint(str(out / "checkpoint_best.pth"))
            base = Path(trainer.output_folder_base)
        (base / "plans.json").write_text(json.dumps(plans, indent=2))
        (base / "dataset.json").write_text(json.dumps(dataset, indent=2))
    return base



# Fixtures and checks shared by the test_nnunet_*.py files (import them by name).
@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("nnunet"), plans_for("CTNormalization", patch=(16, 16, 16)),
                       dataset_for(("fibre", "sheet")))


@pytest.fixture(name="copy")
def writable_copy(folder, tmp_path):
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


def rewrite(path, **changes):
    import torch

    ck = torch.load(path, weights_only=False)
    ck.update(changes)
    torch.save(ck, path)


def blobby(rng, shape):
    data = np.zeros(shape, np.float32)
    z0, y0, x0 = (rng.integers(0, s // 3) for s in shape[1:])
    z1, y1, x1 = (rng.integers(2 * s // 3, s) for s in shape[1:])
    data[:, z0:z1, y0:y1, x0:x1] = rng.normal(size=(shape[0], z1 - z0, y1 - y0, x1 - x0))
    data[:, (z0 + z1) // 2, (y0 + y1) // 2, :] = 0  # a hole, which fill_holes closes
    return data
