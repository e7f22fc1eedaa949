"""``volseg predict NNUNET_FOLDER volume.zarr -o out.zarr`` equals nnU-Net's own predictor.

Model folders are made through nnU-Net's trainer (tests/nnunet_folder.py, 2 folds, 4 stages,
16^3 patches), volumes are the 96^3 OME-Zarr volumes of test_nnunet_oracle (a textured box in
zeros, so nnU-Net crops), predicted through the real CLI with output chunks of 24 voxels so
nnU-Net's tiles cross chunk faces on every axis. The oracle is
``nnUNetPredictor.predict_single_npy_array`` (step 0.5, gaussian, mirroring on, both folds).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from volseg.cli import app

pytest.importorskip("nnunetv2", reason="nnunetv2 (the oracle) is in the dev extra: "
                                       "pip install -e '.[dev]' torch==2.13.0")

from cli_checks import reuse_click_command, one_error_line, tree  # noqa: E402
from nnunet_folder import dataset_for, make_folder, plans_for, rewrite  # noqa: E402
from test_nnunet_oracle import CASES, nnunet_predict, reference, tiles, volume  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _one_command():
    """Build the Click command once for the module (CliRunner builds it per call otherwise)."""
    with reuse_click_command(app):
        yield


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def ok(*args):
    result = cli(*args, "--quiet")
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result


def read(path) -> np.ndarray:
    import zarr

    return zarr.open_array(str(Path(path) / "0"), mode="r")[:]


def write(path, data: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> Path:
    from volseg.io import write_volume

    write_volume(path, data, chunks=32, spacing=spacing, unit="micrometer")
    return Path(path)


@pytest.fixture(scope="module", params=["ct-plainconv", "zscore-resenc"])
def oracle(request, tmp_path_factory):
    """(folder, volume path, data, nnU-Net's probabilities and labels) of one oracle case."""
    import torch

    spec, labels, size = CASES[request.param]
    root = tmp_path_factory.mktemp(request.param)
    folder = make_folder(root, plans_for(**spec), dataset_for(labels))
    data, _ = volume(len(request.param), size)
    threads = torch.get_num_threads()
    probs, labels = nnunet_predict(folder, data)
    torch.set_num_threads(threads)
    return folder, write(root / "vol.zarr", data[0]), data, probs, labels


def test_predict_equals_nnunet(oracle, tmp_path):
    folder, vol, data, their_probs, their_labels = oracle
    before = tree(vol)
    ok("predict", folder, vol, "-o", tmp_path / "p.zarr", "--tta", "--chunks", 24)
    ok("predict", folder, vol, "-o", tmp_path / "l.zarr", "--tta", "--chunks", 24, "--label", "argmax")
    probs, labels = read(tmp_path / "p.zarr"), read(tmp_path / "l.zarr")
    assert probs.dtype == np.float32 and labels.dtype == np.uint8
    assert np.abs(probs - their_probs[1]).max() < 1e-4  # the first foreground label
    np.testing.assert_array_equal(labels, their_labels)
    assert np.ptp(probs) > 0.05 and tree(vol) == before


def test_second_label_and_resumed_parts_give_the_same_bytes(oracle, tmp_path):
    folder, vol, data, their_probs, _ = oracle
    import volseg.models.nnunet.folder as mf

    names = [k for k in json.loads((folder / "dataset.json").read_text())["labels"] if k != "background"]
    ok("predict", folder, vol, "-o", tmp_path / "whole.zarr", "--chunks", 24, "--label", names[-1], "--tile", 24)
    for part in ("2/3", "1/3", "3/3"):  # out of order: each part resumes the same output
        ok("predict", folder, vol, "-o", tmp_path / "parts.zarr", "--chunks", 24, "--label", names[-1],
           "--tile", 24, "--part", part)
    assert tree(tmp_path / "parts.zarr" / "0") == tree(tmp_path / "whole.zarr" / "0")
    assert mf.is_model_folder(folder) and not mf.is_model_folder(vol)


@pytest.mark.slow
def test_processes_scheduler_gives_the_same_bytes(oracle, tmp_path):
    folder, vol, *_ = oracle
    ok("predict", folder, vol, "-o", tmp_path / "a.zarr", "--chunks", 24, "--tta")
    ok("predict", folder, vol, "-o", tmp_path / "b.zarr", "--chunks", 24, "--tta", "--scheduler", "processes",
       "--workers", 2)
    assert tree(tmp_path / "a.zarr" / "0") == tree(tmp_path / "b.zarr" / "0")


def test_output_records_its_provenance_and_info_prints_it(oracle, tmp_path):
    import zarr

    folder, vol, *_ = oracle
    ok("predict", folder, vol, "-o", tmp_path / "p.zarr", "--chunks", 48, "--folds", "1")
    settings = zarr.open_group(str(tmp_path / "p.zarr"), mode="r").attrs["volseg"]["settings"]
    model = settings["model"]
    assert model["kind"] == "nnunet" and model["folds"] == ["1"] and len(model["weights_sha256"]["1"]) == 64
    assert settings["blend"]["mode"] == "nnunet" and settings["crop_box"][0][0] == 20
    assert settings["volume"].endswith("vol.zarr") and settings["volseg_version"]
    assert model["folder"] == str(folder.resolve())
    scheme = model["normalization"][0]
    stats = settings["normalization_stats"][0]
    assert (stats is None) == (scheme == "CTNormalization")
    info = cli("info", tmp_path / "p.zarr", "--json", "-")
    assert info.exit_code == 0, info.stderr
    made = json.loads(info.stdout)["made_by"]
    assert made["model"]["weights_sha256"] == model["weights_sha256"] and made["crop_box"] == settings["crop_box"]
    assert "weights_sha256" in cli("info", tmp_path / "p.zarr").stdout


def _folder(root: Path, scheme: str, transpose=(0, 1, 2), patch=(16, 16, 16)) -> Path:
    plans = plans_for(scheme, network="PlainConvUNet", patch=patch)
    plans["transpose_forward"] = list(transpose)
    plans["transpose_backward"] = [int(a) for a in np.argsort(transpose)]
    return make_folder(root, plans, dataset_for(("fibre",)))


def _reference(model, data: np.ndarray, stats=None) -> np.ndarray:
    """test_nnunet_oracle's whole-array reference in nnU-Net's transposed axes, transposed back;
    ``stats``: normalise with these statistics instead of the crop's in-memory ones."""
    tf = model.transpose_forward
    data_t = np.ascontiguousarray(data.transpose(0, *(1 + a for a in tf)))
    if stats is not None:
        normalise = model.normalise
        model.normalise = lambda array, _stats=None, mask=None, where=None: normalise(array, stats, mask=mask)
    probs_t, _, _ = reference(model, data_t, tiles(model, data_t))
    return probs_t.transpose(0, *(1 + a for a in model.transpose_backward))


@pytest.fixture(scope="module")
def transposed(tmp_path_factory):
    """A plan with transpose_forward (2, 0, 1), patch 16x32x16 (nnU-Net's axes): the crop's
    transposed y (19 voxels, from the volume's z) is padded to 32."""
    root = tmp_path_factory.mktemp("transposed")
    folder = _folder(root, "CTNormalization", (2, 0, 1), (16, 32, 16))
    data, _ = volume(5, (19, 30, 26))
    return folder, write(root / "vol.zarr", data[0]), data


def test_transposed_plan_equals_the_whole_array_reference(transposed, tmp_path):
    from volseg.models.nnunet import NnunetModel

    folder, vol, data = transposed
    ok("predict", folder, vol, "-o", tmp_path / "p.zarr", "--chunks", 24)
    probs = _reference(NnunetModel(folder, tta=False), data)
    assert np.abs(read(tmp_path / "p.zarr") - probs[1]).max() < 1e-7


def test_streamed_zscore_statistics(tmp_path):
    """ZScore without a mask: mean and std of the crop from a streamed float64 pass.

    nnU-Net computes them in float32 in memory (``image.mean()``, ``image.std()``, numpy's
    pairwise sums); the streamed values round to the same float32 mean here and to a std one
    float32 ulp away, which nnU-Net's float16 logit sums amplify to 1.2e-4 in probability at
    most (measured, near the crop's faces). With the recorded statistics the pass equals the
    whole-array reference.
    """
    import zarr

    from volseg.models.nnunet import NnunetModel
    from volseg.models.nnunet.normalization import ChannelStats, image_stats

    folder = _folder(tmp_path / "m", "ZScoreNormalization", (2, 0, 1), (16, 32, 16))
    data, box = volume(5, (19, 30, 26))
    vol = write(tmp_path / "vol.zarr", data[0])
    ok("predict", folder, vol, "-o", tmp_path / "p.zarr", "--chunks", 24)
    recorded = zarr.open_group(str(tmp_path / "p.zarr"), mode="r").attrs["volseg"]["settings"]
    s = recorded["normalization_stats"][0]
    theirs = image_stats(data[(0,) + box])
    assert s["count"] == theirs.count and (s["min"], s["max"]) == (theirs.minimum, theirs.maximum)
    assert abs(s["mean"] - theirs.mean) < 1e-6 * abs(theirs.mean) and abs(s["std"] - theirs.std) < 1e-6 * theirs.std
    model, mine = NnunetModel(folder, tta=False), read(tmp_path / "p.zarr")
    stats = [ChannelStats(s["count"], s["mean"], s["std"], s["min"], s["max"])]
    assert np.abs(mine - _reference(model, data, stats)[1]).max() < 1e-7
    assert np.abs(mine - _reference(NnunetModel(folder, tta=False), data)[1]).max() < 5e-4


@pytest.mark.slow
def test_transposed_plan_equals_nnunet(transposed, tmp_path):
    import torch

    folder, vol, data = transposed
    threads = torch.get_num_threads()
    their_probs, their_labels = nnunet_predict(folder, data)
    torch.set_num_threads(threads)
    ok("predict", folder, vol, "-o", tmp_path / "p.zarr", "--chunks", 24, "--tta")
    ok("predict", folder, vol, "-o", tmp_path / "l.zarr", "--chunks", 24, "--tta", "--label", "argmax")
    assert np.abs(read(tmp_path / "p.zarr") - their_probs[1]).max() < 1e-4
    np.testing.assert_array_equal(read(tmp_path / "l.zarr"), their_labels)
