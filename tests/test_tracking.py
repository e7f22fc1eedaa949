"""progress.png at each validation, TensorBoard event files, and --tensorboard without tensorboard."""

import json
import sys

import pytest
import torch
from typer.testing import CliRunner

from volseg.cli import app
from volseg.training import train
from volseg.training.progress_plot import draw_progress, read_records
from test_cli_train import _store
from test_trainer import UNET, _seg

torch.set_num_threads(1)
PNG = b"\x89PNG\r\n\x1a\n"


def test_progress_png_and_tensorboard_events(tmp_path):
    pytest.importorskip("matplotlib")
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    overrides = dict(UNET, **{"training.tensorboard": True, "optim.schedule": "cosine"})
    train(None, run, model_type="unet", overrides=overrides, datasets=_seg(), quiet=True)
    assert (run / "progress.png").read_bytes().startswith(PNG)
    assert not list(run.glob("*.tmp-*"))
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"train/loss", "train/lr", "val/dice"} <= set(tags)
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [e.step for e in events.Scalars("train/loss")] == [r["step"] for r in records]
    assert [e.value for e in events.Scalars("train/lr")] == pytest.approx([r["lr"] for r in records])


def test_draw_progress_from_records(tmp_path):
    pytest.importorskip("matplotlib")
    records = [{"step": s, "loss": 1 / s, "lr": 1e-3 * (1 - s / 40) ** 0.9, "seconds": 0.5 * s,
                **({"val_dice": s / 40} if s % 10 == 0 else {})} for s in range(1, 41)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n{bad\n")
    assert read_records(tmp_path / "metrics.jsonl") == records
    out = draw_progress(records, tmp_path / "progress.png", metric="val_dice", title="run")
    assert out.read_bytes().startswith(PNG)


def test_tensorboard_flag_without_tensorboard_exits_2(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    store = _store(tmp_path / "p.zarr", n=4)
    r = CliRunner().invoke(app, ["train", str(store), "-o", str(tmp_path / "run"), "--steps", "2",
                                 "--device", "cpu", "--quiet", "--tensorboard"])
    assert r.exit_code == 2, r.output
    assert r.stderr.startswith("error: --tensorboard: install tensorboard")
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "run").exists()
