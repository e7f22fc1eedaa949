"""Training config: defaults, YAML files, validation by name, CLI precedence."""

from pathlib import Path

import pytest

from volseg.errors import VolsegError
from volseg.training.config import defaults, parse_patch, resolve, to_yaml

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _write(tmp_path, text):
    path = tmp_path / "cfg.yml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name,kind", [("unet3d.yml", "unet"), ("diffusion3d.yml", "diffusion")])
def test_shipped_configs_are_valid(name, kind):
    cfg = resolve(config_path=CONFIGS / name)
    assert cfg["model"]["type"] == kind
    assert cfg["model"]["in_channels"] == (1 if kind == "unet" else 2)


def test_defaults_per_model_type():
    unet, diff = resolve(model_type="unet"), resolve(model_type="diffusion")
    assert unet["model"]["ch"] == 16 and unet["model"]["depth"] == 3
    assert diff["model"]["ch_mult"] == [1, 2, 4] and diff["diffusion"]["timesteps"] == 10
    assert diff["diffusion"]["beta_start"] == 1e-4 and diff["diffusion"]["beta_end"] == 0.02
    assert "loss" in unet and "diffusion" not in unet


def test_typo_is_refused_with_a_suggestion(tmp_path):
    path = _write(tmp_path, "training:\n  bach_size: 4\n")
    with pytest.raises(VolsegError) as err:
        resolve(config_path=path)
    assert str(err.value) == (f"{path}: unknown key 'training.bach_size' "
                              "(did you mean 'training.batch_size'?)")


@pytest.mark.parametrize("text,needle", [
    ("training:\n  batch_size: two\n", "'training.batch_size' must be an integer"),
    ("training:\n  batch_size: 2.5\n", "'training.batch_size' must be an integer"),
    ("training:\n  amp: 1\n", "'training.amp' must be true or false"),
    ("model:\n  ch_mult: 4\n", "applies to --model diffusion"),
    ("model:\n  type: diffusion\n  ch_mult: [1, x]\n", "'model.ch_mult' must be a list"),
    ("trainig:\n  lr: 1\n", "unknown section 'trainig' (did you mean 'training'?)"),
    ("diffusion:\n  timesteps: 10\n", "section 'diffusion' applies to --model diffusion"),
    ("model:\n  type: gan\n", "unknown model 'gan'"),
    ("optim:\n  optimizer: sgd\n", "must be one of adam, adamw"),
    ("training:\n  batch_size: 0\n", "at least 1"),
    ("model:\n  in_channels: 3\n", "must be data.channels = 1"),
    ("training: [1, 2]\n", "must be a mapping"),
    ("data: {patch: [8, 8]}\n", "1 or 3 sides"),
    ("training: {n_iters: 5, n_epochs: 2}\n", "not both"),
    ("a: [unclosed\n", "not valid YAML"),
    ("model: {type: diffusion}\ndiffusion: {prediction: noise}\n",
     "'diffusion.prediction' must be one of eps, x0, v, got 'noise'"),
    ("diffusion: {prediction: x0}\n", "section 'diffusion' applies to --model diffusion"),
    ("loss: {type: huber}\n", "'loss.type' must be one of segmentation, l1, l2, got 'huber'"),
])
def test_bad_values_are_refused_by_name(tmp_path, text, needle):
    with pytest.raises(VolsegError, match=None) as err:
        resolve(config_path=_write(tmp_path, text))
    assert needle in str(err.value)


def test_cli_flags_override_the_file(tmp_path):
    path = _write(tmp_path, "training:\n  batch_size: 4\n  n_epochs: 3\n  amp: true\noptim:\n  lr: 0.1\n")
    cfg = resolve(config_path=path, overrides={"training.batch_size": 8, "training.n_iters": 7,
                                               "training.amp": None, "optim.lr": None})
    assert cfg["training"]["batch_size"] == 8
    assert cfg["training"]["n_iters"] == 7 and cfg["training"]["n_epochs"] is None
    assert cfg["training"]["amp"] is True and cfg["optim"]["lr"] == 0.1
    with pytest.raises(VolsegError, match="--steps or --epochs"):
        resolve(overrides={"training.n_iters": 1, "training.n_epochs": 1})


def test_model_flag_beats_the_file_and_original_names(tmp_path):
    path = _write(tmp_path, "model:\n  type: sg\n  ch: 8\n"
                            "data:\n  image_size: 32\n  depth: 16\n  channels: 1\n")
    cfg = resolve(config_path=path)
    assert cfg["model"]["type"] == "diffusion" and cfg["model"]["ch"] == 8
    assert cfg["data"]["patch"] == [16, 32, 32]
    cfg = resolve(config_path=path, overrides={"data.patch": [8, 8, 8]})
    assert cfg["data"]["patch"] == [8, 8, 8] and cfg["data"]["image_size"] == 8


def test_resolved_config_round_trips_through_yaml(tmp_path):
    cfg = resolve(model_type="diffusion", overrides={"data.patch": [16, 16, 16]})
    path = _write(tmp_path, to_yaml(cfg))
    assert resolve(config_path=path) == cfg
    assert defaults("unet")["augment"] is None


def test_augment_is_passed_through(tmp_path):
    cfg = resolve(config_path=_write(tmp_path, "augment:\n  flip: true\n  anything: [1]\n"))
    assert cfg["augment"] == {"flip": True, "anything": [1]}


@pytest.mark.parametrize("text,sides", [("64", [64, 64, 64]), ("16x32x48", [16, 32, 48]),
                                        ("8,8,16", [8, 8, 16])])
def test_parse_patch(text, sides):
    assert parse_patch(text) == sides


@pytest.mark.parametrize("text", ["", "abc", "8x8", "0", "-8"])
def test_parse_patch_refuses(text):
    with pytest.raises(VolsegError, match="--patch"):
        parse_patch(text)


def _readme_augment_snippets():
    """The inline config snippets the README gives for `augment` (``augment: false``)."""
    import re

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    return re.findall(r"`(augment: (?:true|false))`", text)


def test_readme_augment_false_is_accepted(tmp_path):
    from volseg.data.augment import parse_augment

    snippets = _readme_augment_snippets()
    assert "augment: false" in snippets
    for snippet in snippets + ["augment: true"]:
        cfg = resolve(config_path=_write(tmp_path, snippet + "\n"))
        on = snippet.endswith("true")
        assert cfg["augment"] is on and parse_augment(cfg["augment"]).enabled is on
        assert f"augment: {str(on).lower()}" in to_yaml(cfg)
    with pytest.raises(VolsegError, match="'augment' must be true, false, null or a mapping"):
        resolve(config_path=_write(tmp_path, "augment: 3\n"))


def test_val_fraction_is_blamed_on_where_it_came_from(tmp_path):
    with pytest.raises(VolsegError) as err:
        resolve(overrides={"data.val_fraction": 1.5})
    assert str(err.value) == "--val-fraction: 'data.val_fraction' must be in [0, 1), got 1.5; e.g. 0.1"
    path = _write(tmp_path, "data:\n  val_fraction: -0.2\n")
    with pytest.raises(VolsegError, match=rf"^{path}: 'data.val_fraction' must be in \[0, 1\)"):
        resolve(config_path=path)


def test_prediction_defaults_to_eps_and_reaches_the_model_config(tmp_path):
    from volseg.models import build_model
    from volseg.training.trainer import model_config

    assert defaults("diffusion")["diffusion"]["prediction"] == "x0"  # chosen by benchmarks/diffusion_translation.py
    cfg = resolve(config_path=_write(tmp_path, "model: {type: diffusion}\ndiffusion: {prediction: v}\n"))
    assert model_config(cfg)["schedule"]["prediction"] == "v"
    assert build_model(dict(model_config(cfg), ch=8, ch_mult=[1, 2], target_mean=0.0, norm_mean=0.0, norm_std=1.0,
                            target_std=1.0)).prediction == "v"
    # a run saved before the key existed predicts eps
    assert build_model({"type": "diffusion", "ch": 8, "ch_mult": [1, 2],
                        "schedule": {"steps": 10}}).prediction == "eps"


def test_unknown_prediction_exits_2_with_one_line(tmp_path):
    from typer.testing import CliRunner

    from volseg.cli import app

    cfg = _write(tmp_path, "model: {type: diffusion}\ndiffusion: {prediction: noise}\n")
    run = tmp_path / "run"
    r = CliRunner().invoke(app, ["train", str(tmp_path / "missing.zarr"), "--config", str(cfg),
                                 "-o", str(run)])
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1, r.stderr
    assert lines[0] == (f"error: {cfg}: 'diffusion.prediction' must be one of eps, x0, v, "
                        "got 'noise'")
    assert "Traceback" not in r.output and not run.exists()
