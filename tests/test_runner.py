"""Runner: batch-wise prediction of a run, and mirroring TTA equal to averaging the flips by hand."""

import numpy as np
import pytest
import torch

from volseg.errors import VolsegError
from volseg.inference.runner import Runner, parse_batch_size
from volseg.models import build_model


def test_batches_and_tta(tmp_path):
    torch.manual_seed(0)
    cfg = {"type": "unet", "in_channels": 1, "out_ch": 1, "ch": 4, "depth": 2}
    model = build_model(cfg)
    torch.save({"format": "volseg-run", "version": 1, "model_config": cfg, "state_dict": model.state_dict()},
               tmp_path / "model.pt")
    patches = np.random.default_rng(0).normal(size=(3, 1, 8, 8, 8)).astype(np.float32)
    one = Runner(str(tmp_path / "model.pt"), batch_size=1).predict(patches)
    three = Runner(str(tmp_path / "model.pt"), batch_size=3).predict(patches)
    assert one.shape == (3, 1, 8, 8, 8) and one.dtype == np.float32
    np.testing.assert_allclose(one, three, atol=1e-5)
    tta = Runner(str(tmp_path / "model.pt"), batch_size=3, tta=True).predict(patches)
    runner = Runner(str(tmp_path / "model.pt"), batch_size=3)
    flips = [tuple(a for a, f in zip((2, 3, 4), bits) if f) for bits in np.ndindex(2, 2, 2)]
    by_hand = np.mean([np.flip(runner.predict(np.flip(patches, axes).copy()), axes) if axes else
                       runner.predict(patches) for axes in flips], axis=0)
    np.testing.assert_allclose(tta, by_hand, atol=1e-5)
    with pytest.raises(VolsegError, match=r"^--batch-size: must be >= 1, got 0"):
        parse_batch_size(0)
