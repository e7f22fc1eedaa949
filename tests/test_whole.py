"""Seed-style whole-volume training (``data.patch: null``) and its resize-predict-resize path.

Through the CLI on tiny ``synth brain`` cases (20x22x24 voxels, trained at 16^3): training
items are whole resized cases with 3-axis flips, predict writes the input's shape (and the
``uncertainty`` of ``--samples``), equal to resizing by hand, predicting the resized volume in
one patch and resizing back; bad combinations exit 2 with one ``error:`` line and write nothing.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cli_checks import one_error_line, tree
from volseg.inference.settings import predict_options
from volseg.cli import app
from volseg.data.resize import resize_3d
from volseg.data.whole import WholeVolumeDataset
from volseg.io import open_volume, write_volume

SHAPE, SIZE = (20, 22, 24), 16
DIFFUSION = """model: {type: diffusion, ch: 8, ch_mult: [1, 2], attn: false}
data: {patch: null, image_size: 16, depth: 16, samples_per_epoch: 4}
diffusion: {timesteps: 2}
training: {batch_size: 2, validation_freq: 2, snapshot_freq: 2, log_freq: 1}
"""
REGRESSION = """model: {type: unet, ch: 4, depth: 2}
loss: {type: l1}
data: {patch: null, image_size: 16, samples_per_epoch: 4}
training: {batch_size: 2, validation_freq: 2, snapshot_freq: 2, log_freq: 1}
"""


def _cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _ok(*args):
    result = _cli(*args)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result


@pytest.fixture(scope="module")
def brain(tmp_path_factory):
    root = tmp_path_factory.mktemp("whole")
    _ok("synth", "brain", "-o", root / "b.zarr", "--cases", 3, "--shape", "x".join(map(str, SHAPE)),
        "--seed", 1, "--quiet")
    for name, text in (("d.yml", DIFFUSION), ("r.yml", REGRESSION)):
        (root / name).write_text(text)
    cases = [root / "b.zarr" / f"case_00{i}" for i in range(3)]
    _ok("train", cases[0], cases[1], "--val", cases[2], "--config", root / "d.yml", "-o", root / "diff",
        "--steps", 2, "--quiet")
    return root, cases


def test_training_items_are_whole_resized_cases_flipped_on_three_axes(brain):
    root, cases = brain
    payload = torch.load(root / "diff" / "model.pt", weights_only=False)
    data = payload["config"]["data"]
    assert data["whole"] is True and data["patch"] is None and (data["depth"], data["image_size"]) == (16, 16)
    plain = WholeVolumeDataset(cases[:1], shape=(SIZE,) * 3, length=1, flip=False)[0]
    t1 = np.asarray(open_volume(cases[0])[...])
    assert plain["image"].shape == (1, SIZE, SIZE, SIZE) and plain["target"].shape == (1, SIZE, SIZE, SIZE)
    np.testing.assert_allclose(plain["image"][0].numpy(), resize_3d(t1, (SIZE,) * 3, order=1), rtol=1e-6)
    flipped = WholeVolumeDataset(cases[:1], shape=(SIZE,) * 3, length=64, flip=True, seed=3)
    seen = set()
    for i in range(64):
        item = flipped[i]
        match = [axes for axes in [(), (1,), (2,), (3,), (1, 2), (1, 3), (2, 3), (1, 2, 3)]
                 if torch.equal(item["image"], torch.flip(plain["image"], axes) if axes else plain["image"])]
        assert match and torch.equal(item["target"], torch.flip(plain["target"], match[0])
                                     if match[0] else plain["target"])
        seen.add(match[0])
    assert {(1,), (2,), (3,)} <= {a for axes in seen for a in [(x,) for x in axes]}


def test_predict_resizes_in_runs_once_and_resizes_back(brain, tmp_path):
    root, cases = brain
    before = tree(root / "b.zarr")
    _ok("predict", root / "diff", cases[2], "-o", tmp_path / "out.zarr", "--samples", 2, "--quiet")
    out = np.asarray(open_volume(tmp_path / "out.zarr")[...])
    std = np.asarray(open_volume(tmp_path / "out.zarr" / "uncertainty")[...])
    assert out.shape == SHAPE and std.shape == SHAPE and np.isfinite(out).all() and (std >= 0).all()
    assert std.max() > 0
    assert tree(root / "b.zarr") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.zarr"]  # no work folder left
    # by hand: resize, predict the resized volume as one patch (whole=False), resize back
    small = tmp_path / "small.zarr"
    write_volume(small, resize_3d(np.asarray(open_volume(cases[2])[...]), (SIZE,) * 3, order=1), chunks=SIZE)
    from volseg.inference.predict import predict

    _ok("predict", root / "diff", cases[2], "-o", tmp_path / "one.zarr", "--seed", 5, "--quiet")
    predict(root / "diff", small, tmp_path / "manual.zarr", *predict_options(patch=(SIZE,) * 3, overlap=0.0, stitch=True, chunks=SIZE, tile=None, seed=5, whole=False, quiet=True))
    manual = resize_3d(np.asarray(open_volume(tmp_path / "manual.zarr")[...]), SHAPE, order=1)
    np.testing.assert_allclose(np.asarray(open_volume(tmp_path / "one.zarr")[...]), manual, rtol=1e-5, atol=1e-5)


def test_regression_unet_trains_and_predicts_on_whole_volumes(brain, tmp_path):
    root, cases = brain
    _ok("train", cases[0], cases[1], "--val", cases[2], "--config", root / "r.yml", "-o", tmp_path / "reg",
        "--steps", 2, "--quiet")
    _ok("predict", tmp_path / "reg", cases[2], "-o", tmp_path / "out.zarr", "--quiet")
    assert np.asarray(open_volume(tmp_path / "out.zarr")[...]).shape == SHAPE


@pytest.mark.parametrize("name, config, needles", [
    ("not-divisible", DIFFUSION.replace("image_size: 16, depth: 16", "image_size: 17, depth: 16"),
     ["data.image_size", "not divisible by 2^1"]),
    ("no-image-size", DIFFUSION.replace("patch: null, image_size: 16, depth: 16", "whole: true"),
     ["data.image_size is not set"]),
    ("segmentation", REGRESSION.replace("loss: {type: l1}\n", ""), ["data.patch", "segmentation trains on patches"]),
])
def test_bad_whole_volume_configs_exit_2(brain, tmp_path, name, config, needles):
    root, cases = brain
    (tmp_path / "c.yml").write_text(config)
    before = tree(root / "b.zarr")
    one_error_line(_cli("train", cases[0], cases[1], "--config", tmp_path / "c.yml", "-o", tmp_path / "run",
                        "--steps", 1, "--quiet"), *needles)
    assert not (tmp_path / "run").exists() and tree(root / "b.zarr") == before


def test_a_bare_patch_null_keeps_patch_training(tmp_path):
    from volseg.training.config import resolve

    (tmp_path / "c.yml").write_text("data: {patch: null}\n")
    assert resolve(model_type="diffusion", config_path=tmp_path / "c.yml")["data"]["whole"] is False
    (tmp_path / "c.yml").write_text("data: {patch: null, image_size: 16}\n")
    data = resolve(model_type="diffusion", config_path=tmp_path / "c.yml")["data"]
    assert data["whole"] is True and (data["patch"], data["depth"]) == (None, 16)


def test_a_patch_store_is_refused(brain, tmp_path):
    root, _ = brain
    np.save(tmp_path / "v.npy", np.random.default_rng(0).random((16, 16, 16), dtype=np.float32))
    np.save(tmp_path / "g.npy", (np.arange(16 ** 3).reshape(16, 16, 16) % 2).astype(np.uint8))
    _ok("patchify", tmp_path / "v.npy", "--labels", tmp_path / "g.npy", "-o", tmp_path / "ps.zarr", "--patch", 8,
        "--quiet")
    before = tree(tmp_path / "ps.zarr")
    one_error_line(_cli("train", tmp_path / "ps.zarr", "--config", root / "d.yml", "-o", tmp_path / "run",
                        "--steps", 1, "--quiet"), "ps.zarr", "is a patch store", "data.patch")
    assert not (tmp_path / "run").exists() and tree(tmp_path / "ps.zarr") == before


@pytest.mark.parametrize("option", [["--patch", "16"], ["--part", "1/2"]])
def test_predict_refuses_patch_options_for_whole_runs(brain, tmp_path, option):
    root, cases = brain
    one_error_line(_cli("predict", root / "diff", cases[2], "-o", tmp_path / "out.zarr", *option, "--quiet"),
                   option[0], "trained on whole volumes")
    assert not (tmp_path / "out.zarr").exists()
