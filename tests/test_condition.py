"""Several input contrasts as condition channels (``data.condition``, e.g. T1 + FLAIR -> T2):
config checks, the streamed dataset, training and predict through the CLI, and the refusals."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

from volseg.cli import app
from volseg.errors import VolsegError
from volseg.training.config import resolve

runner = CliRunner()
TINY = "model: {type: diffusion, ch: 8, ch_mult: [1, 2], attn: false}\n" \
       "diffusion: {prediction: x0, val_samples: 1}\ndata: {condition: [flair], samples_per_epoch: 4}\n" \
       "training: {validation_freq: 2, snapshot_freq: 2}\n"


def _cfg(tmp_path, text, name="cfg.yml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_config_derives_the_channels(tmp_path):
    cfg = resolve(config_path=_cfg(tmp_path, "model: {type: diffusion}\ndata: {condition: [flair]}\n"))
    assert cfg["data"]["channels"] == 2 and cfg["model"]["in_channels"] == 3   # T1, FLAIR + x_t
    cfg = resolve(config_path=_cfg(tmp_path, "data: {condition: [flair, t2]}\nloss: {type: l1}\n"))
    assert cfg["data"]["channels"] == 3 and cfg["model"]["in_channels"] == 3
    assert resolve(model_type="diffusion")["model"]["in_channels"] == 2         # unchanged default


@pytest.mark.parametrize("text,needle", [
    ("model: {type: diffusion, in_channels: 2}\ndata: {condition: [flair]}\n",
     "'model.in_channels' is 2 but must be data.channels + model.out_ch (condition + noisy volume) = 3"),
    ("data: {condition: [flair], channels: 3}\n", "'data.channels' is 3 but data.condition ['flair'] gives 1 + 1 = 2"),
    ("data: {condition: flair}\n", "'data.condition' must be a list of image names"),
    ("data: {condition: ['..']}\n", "'data.condition' must be a list of image names"),
])
def test_bad_condition_configs_are_refused_by_name(tmp_path, text, needle):
    with pytest.raises(VolsegError) as err:
        resolve(config_path=_cfg(tmp_path, text))
    assert needle in str(err.value)


@pytest.fixture(scope="module")
def brain(tmp_path_factory):
    root = tmp_path_factory.mktemp("cond")
    assert runner.invoke(app, ["synth", "brain", "-o", str(root / "brain.zarr"), "--cases", "3", "--shape", "32",
                               "--quiet"]).exit_code == 0
    return root


def test_dataset_stacks_the_condition_after_the_root_image(brain):
    from volseg.data.dataset import make_datasets
    from volseg.io import open_volume

    case = brain / "brain.zarr" / "case_000"
    train, _ = make_datasets(case, task="translation", patch=(16, 16, 16), val_fraction=0.0,
                             samples_per_epoch=2, augment=False, condition=["flair"])
    assert train.in_channels == 2
    origin, raw, _ = train.draw(0)
    item = train[0]
    box = tuple(slice(int(o), int(o) + 16) for o in origin)
    assert item["image"].shape == (2, 16, 16, 16)
    np.testing.assert_array_equal(item["image"][0].numpy(), np.asarray(open_volume(case))[box])
    np.testing.assert_array_equal(item["image"][1].numpy(), np.asarray(open_volume(case / "flair"))[box])


def _digest(path):
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f.read_bytes())
    return h.hexdigest()


def test_train_and_predict_t1_and_flair_to_t2(brain):
    cases = [str(brain / "brain.zarr" / f"case_00{i}") for i in range(3)]
    cfg = _cfg(brain, TINY, "tiny.yml")
    r = runner.invoke(app, ["train", cases[0], cases[1], "--val", cases[2], "-c", str(cfg), "--patch", "16",
                            "--steps", "2", "-o", str(brain / "run"), "--quiet"])
    assert r.exit_code == 0, r.output
    out = brain / "t2.zarr"
    r = runner.invoke(app, ["predict", str(brain / "run"), cases[2], "-o", str(out), "--patch", "16",
                            "--chunks", "16", "--samples", "2", "--device", "cpu", "--quiet"])
    assert r.exit_code == 0, r.output
    pred = zarr.open_array(str(out / "0"), mode="r")[:]
    assert pred.shape == (32, 32, 32) and np.isfinite(pred).all()
    settings = zarr.open_group(str(out)).attrs["volseg"]["settings"]
    assert settings["condition"] == ["flair"]
    # the regression UNet takes the same two channels
    r = runner.invoke(app, ["train", cases[0], cases[1], "--val", cases[2], "-c",
                            str(_cfg(brain, "data: {condition: [flair]}\nloss: {type: l1}\nmodel: {ch: 4, depth: 2}\n",
                                     "unet.yml")),
                            "--patch", "16", "--steps", "2", "-o", str(brain / "unet"), "--quiet"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["predict", str(brain / "unet"), cases[2], "-o", str(brain / "u.zarr"), "--stitch",
                            "--patch", "16", "--device", "cpu", "--quiet"])
    assert r.exit_code == 0, r.output


def _one_line(r, needle):
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], r.stderr
    assert "Traceback" not in r.output


def test_volumes_without_the_condition_exit_2(brain, tmp_path):
    assert runner.invoke(app, ["synth", "scan", "-o", str(tmp_path / "scan.zarr"), "--shape", "32",
                               "--quiet"]).exit_code == 0
    case = str(brain / "brain.zarr" / "case_000")
    before = _digest(tmp_path / "scan.zarr")
    # a training case of another contrast count
    r = runner.invoke(app, ["train", case, str(tmp_path / "scan.zarr"), "-c", str(_cfg(tmp_path, TINY)),
                            "--patch", "16", "--steps", "1", "-o", str(tmp_path / "run")])
    _one_line(r, "has no condition image 'flair'")
    assert not (tmp_path / "run").exists() and _digest(tmp_path / "scan.zarr") == before
    # predict on a volume without the condition the model was trained with
    if not (brain / "run").exists():
        pytest.skip("needs the run of test_train_and_predict_t1_and_flair_to_t2")
    r = runner.invoke(app, ["predict", str(brain / "run"), str(tmp_path / "scan.zarr"), "-o", str(tmp_path / "o.zarr"),
                            "--patch", "16", "--device", "cpu"])
    _one_line(r, "has no condition image 'flair'")
    assert not (tmp_path / "o.zarr").exists() and _digest(tmp_path / "scan.zarr") == before
    # a single-input model fed a case: fine; a two-input model in a patch store: refused
    r = runner.invoke(app, ["patchify", str(tmp_path / "scan.zarr"), "-o", str(tmp_path / "p.zarr"), "--patch", "16",
                            "--quiet"])
    if r.exit_code == 0:
        r = runner.invoke(app, ["train", str(tmp_path / "p.zarr"), "-c", str(_cfg(tmp_path, TINY)), "--steps", "1",
                                "-o", str(tmp_path / "run2")])
        _one_line(r, "is a patch store; data.condition")
        assert not (tmp_path / "run2").exists()
