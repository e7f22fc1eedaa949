"""`volseg export FOLDER` (:mod:`volseg.models.nnunet.export`): an nnU-Net v2 folder as one ONNX
patch model equal to ``NnunetModel(tta=False).probabilities`` on raw voxels, run by
``volseg predict``; folders normalised with per-image statistics are refused, nothing written.
Folders are made by nnU-Net's own trainer (tests/nnunet_folder.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("nnunetv2", reason="nnunetv2 (the oracle) is in the dev extra: "
                                       "pip install -e '.[dev]' torch==2.13.0")
pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")

from cli_checks import one_error_line, tree  # noqa: E402
from nnunet_folder import dataset_for, folder, make_folder, plans_for  # noqa: E402,F401
from test_inference_nnunet_pass import cli, ok, read, write  # noqa: E402


@pytest.fixture(scope="module")
def onnx_file(folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "nnunet.onnx"
    result = ok("export", folder, "-o", out, "--folds", "0,1", "--checkpoint", "best")
    assert result.exit_code == 0
    return out


def test_onnx_equals_nnunet_probabilities_on_raw_voxels(folder, onnx_file):
    import torch

    from volseg.models.exported import load_exported
    from volseg.models.nnunet import NnunetModel

    exported = load_exported(onnx_file)
    model = NnunetModel(folder, folds=(0, 1), checkpoint="best", tta=False)
    raw = np.random.default_rng(3).normal(0.4, 2.0, size=(2, 1, 16, 24, 32)).astype(np.float32)
    normalised = np.stack([model.normalise(patch) for patch in raw])
    expected = model.probabilities(normalised).numpy()
    got = exported(torch.from_numpy(raw)).numpy()
    assert got.shape == (2, 3, 16, 24, 32)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-5)  # softmax over background, fibre, sheet

    meta = exported.meta
    assert (meta["kind"], meta["in_channels"], meta["out_channels"], meta["depth"]) == ("unet", 1, 3, 3)
    assert meta["patch"] == [16, 16, 16]
    assert meta["normalisation"]["schemes"] == ["CTNormalization"]
    assert (meta["normalisation"]["clip_low"], meta["normalisation"]["clip_high"]) == ([-2.0], [2.5])
    assert meta["nnunet"] == json.loads(json.dumps(model.provenance()))
    assert meta["nnunet"]["folds"] == ["0", "1"] and meta["nnunet"]["checkpoint"] == "best"
    assert set(meta["nnunet"]["weights_sha256"]) == {"0", "1"}


def test_predict_runs_the_exported_folder(onnx_file, tmp_path):
    volume = write(tmp_path / "vol.zarr", np.random.default_rng(1).normal(0.4, 1.0, (24, 40, 40)).astype(np.float32))
    before = tree(volume)
    ok("predict", onnx_file, volume, "-o", tmp_path / "out.zarr", "--stitch", "--chunks", "16")
    labels = read(tmp_path / "out.zarr")  # several classes: the argmax label map
    assert labels.shape == (24, 40, 40) and labels.dtype == np.uint8
    assert set(np.unique(labels)) <= {0, 1, 2} and len(np.unique(labels)) > 1
    assert tree(volume) == before


def test_zscore_folder_is_refused_and_nothing_written(tmp_path):
    zscore = make_folder(tmp_path / "z", plans_for("ZScoreNormalization", patch=(16, 16, 16)),
                         dataset_for(("fibre",)), folds=(0,))
    before = tree(zscore)
    r = cli("export", zscore, "-o", tmp_path / "out.onnx")
    one_error_line(r, "plans.json", "ZScoreNormalization", "volseg predict FOLDER")
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith("out")]
    assert tree(zscore) == before


def test_nnunet_options_on_a_run_are_refused(tmp_path):
    r = cli("export", tmp_path, "-o", tmp_path.parent / f"{tmp_path.name}-x.onnx", "--folds", "0")
    one_error_line(r, "not an nnU-Net model folder", "--folds")


@pytest.mark.parametrize("suffix", [".pt2", ".ts"])
def test_pt2_and_torchscript_of_one_fold_equal_that_fold(folder, tmp_path, suffix):
    import torch

    from volseg.models.exported import load_exported
    from volseg.models.nnunet import NnunetModel
    from volseg.models.nnunet.export import export_nnunet

    result = export_nnunet(folder, tmp_path / f"fold1{suffix}", folds=[1])
    assert result["max_abs_diff"] == 0.0 and result["metadata"]["nnunet"]["folds"] == ["1"]
    model = NnunetModel(folder, folds=[1], tta=False)
    raw = np.random.default_rng(4).normal(0.4, 2.0, size=(1, 1, 16, 16, 24)).astype(np.float32)
    expected = model.probabilities(model.normalise(raw[0])[None]).numpy()
    with torch.no_grad():
        got = load_exported(result["output"])(torch.from_numpy(raw)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
