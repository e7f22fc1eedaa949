"""The run directory: new/--resume/--overwrite checks, strict metrics.jsonl, checkpoints, RNG state."""

import math

import pytest
import torch

from volseg.errors import VolsegError
from volseg.training.run_dir import (append_metrics, check_run_dir, has_checkpoint, read_metrics, rng_state,
                                     save_checkpoint, set_rng_state, truncate_metrics)


def test_run_dir_lifecycle(tmp_path):
    run = tmp_path / "run"
    assert check_run_dir(run, resume=False, overwrite=False) == run
    with pytest.raises(VolsegError, match="give either --resume or --overwrite, not both"):
        check_run_dir(run, resume=True, overwrite=True)
    run.mkdir()
    save_checkpoint(run / "model.pt", {"step": 3, "state_dict": {}})
    assert has_checkpoint(run)
    with pytest.raises(VolsegError, match="exists; pass --resume to continue its training or --overwrite"):
        check_run_dir(run, resume=False, overwrite=False)
    for step, loss in ((1, 0.5), (2, math.nan), (3, 0.25)):
        append_metrics(run, {"step": step, "loss": loss})
    assert [r["loss"] for r in read_metrics(run)] == [0.5, None, 0.25]  # strict JSON: NaN -> null
    truncate_metrics(run, 2)
    assert [r["step"] for r in read_metrics(run)] == [1, 2]


def test_rng_state_round_trips():
    state = rng_state()
    first = torch.rand(3)
    set_rng_state(state)
    assert torch.equal(torch.rand(3), first)
