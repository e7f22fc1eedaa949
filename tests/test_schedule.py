"""Learning-rate schedules: formulas, validation through the CLI, resume equals uninterrupted."""

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from volseg.cli import app
from volseg.errors import VolsegError
from volseg.models import load_run
from volseg.training import train
from volseg.training.config import resolve
from volseg.training.schedule import lr_at
from test_cli_train import _store
from test_trainer import UNET, _seg

torch.set_num_threads(1)


def _optim(**kw):
    return resolve(model_type="unet", overrides={f"optim.{k}": v for k, v in kw.items()})["optim"]


def test_poly_is_nnunets_formula():
    optim = _optim(schedule="poly", lr=0.01)
    assert lr_at(0, optim, total=100) == pytest.approx(0.01)
    for step in (1, 37, 99):
        assert lr_at(step, optim, total=100) == pytest.approx(0.01 * (1 - step / 100) ** 0.9)
    assert lr_at(100, optim, total=100) == 0.0
    optim = _optim(schedule="poly", lr=0.01, poly_exponent=2.0, min_lr=1e-3)
    assert lr_at(50, optim, total=100) == pytest.approx(1e-3 + 9e-3 * 0.25)


def test_cosine_with_linear_warmup():
    optim = _optim(schedule="cosine", lr=0.01, warmup=10)
    assert [lr_at(s, optim, total=110) for s in (0, 4, 9)] == pytest.approx([1e-3, 5e-3, 1e-2])
    assert lr_at(10, optim, total=110) == pytest.approx(0.01)
    assert lr_at(60, optim, total=110) == pytest.approx(0.005)
    assert lr_at(60, optim, total=110) == pytest.approx(0.01 * (1 + math.cos(math.pi / 2)) / 2)
    assert lr_at(110, optim, total=110) == pytest.approx(0.0)
    # schedule_steps fixes the horizon whatever the run's steps
    fixed = _optim(schedule="cosine", lr=0.01, schedule_steps=20)
    assert lr_at(10, fixed, total=5) == lr_at(10, fixed, total=500) == pytest.approx(0.005)
    assert lr_at(7, _optim(lr=0.01), total=8) == 0.01  # constant stays the default


@pytest.mark.parametrize("text, where", [
    ("optim:\n  schedule: linear\n", "'optim.schedule' must be one of constant, poly, cosine, got 'linear'"),
    ("optim:\n  poly_exponent: 0\n", "'optim.poly_exponent' must be > 0"),
    ("optim:\n  min_lr: 1.0\n", "'optim.min_lr' must be in [0"),
    ("optim:\n  shedule: poly\n", "did you mean 'optim.schedule'"),
])
def test_bad_schedule_exits_2_naming_the_key(tmp_path, text, where):
    cfg = tmp_path / "cfg.yml"
    cfg.write_text(text)
    store = _store(tmp_path / "p.zarr", n=4)
    r = CliRunner().invoke(app, ["train", str(store), "-o", str(tmp_path / "run"), "--config",
                                 str(cfg), "--steps", "2", "--device", "cpu", "--quiet"])
    assert r.exit_code == 2, r.output
    assert r.stderr.startswith(f"error: {cfg}: ") and where in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def test_poly_resume_equals_an_uninterrupted_run(tmp_path):
    sched = dict(UNET, **{"optim.schedule": "poly", "optim.warmup": 2, "optim.schedule_steps": 8,
                          "training.validation_freq": 100, "training.log_freq": 1})
    data = (_seg(side=8)[0], None)  # no validation: the test is about the optimiser
    train(None, tmp_path / "once", model_type="unet", datasets=data,
          overrides=dict(sched, **{"training.n_iters": 8}), quiet=True)
    train(None, tmp_path / "twice", model_type="unet", datasets=data,
          overrides=dict(sched, **{"training.n_iters": 4}), quiet=True)
    train(None, tmp_path / "twice", overrides={"training.n_iters": 8}, resume=True,
          datasets=data, quiet=True)
    once, twice = (load_run(tmp_path / n / "model.pt") for n in ("once", "twice"))
    for name, value in once["state_dict"].items():
        torch.testing.assert_close(twice["state_dict"][name], value, rtol=1e-5, atol=1e-6)
    lrs = [[json.loads(x)["lr"] for x in (tmp_path / n / "metrics.jsonl").read_text().splitlines()]
           for n in ("once", "twice")]
    assert lrs[0] == lrs[1] and len(lrs[0]) == 8
    optim = once["config"]["optim"]
    assert lrs[0] == [lr_at(s, optim, total=8) for s in range(8)]
    assert lrs[0][1] == pytest.approx(2e-3) and lrs[0][-1] < lrs[0][3] < lrs[0][2]


def test_schedule_needs_a_horizon():
    with pytest.raises(VolsegError, match="optim.schedule"):
        lr_at(3, _optim(schedule="poly"))
