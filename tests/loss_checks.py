"""A tiny training run shared by the loss tests (imported as a sibling module, like ``cli_checks``)."""

import numpy as np
import torch


def train_on_a_sheet(tmp_path, loss_overrides: dict) -> dict:
    """Train a 4-feature UNet two steps on noisy 16^3 patches of a sheet with ``loss_overrides``
    (e.g. ``{"loss.cldice_weight": 1.0}``); check it ran and return the saved config."""
    import yaml

    from volseg.training import train

    g = torch.Generator().manual_seed(0)
    items = []
    for _ in range(4):
        lab = torch.zeros(1, 16, 16, 16, dtype=torch.uint8)
        lab[:, :, :, 6:10] = 1
        items.append({"image": lab.float() * 50 + 100 + 10 * torch.randn(1, 16, 16, 16, generator=g), "label": lab})
    overrides = {"model.ch": 4, "model.depth": 2, "training.n_iters": 2, "training.validation_freq": 2,
                 "training.device": "cpu", **loss_overrides}
    result = train(None, tmp_path / "run", model_type="unet", overrides=overrides, datasets=(items, items[:1]),
                   quiet=True)
    assert result["steps"] == 2 and np.isfinite(result["loss"])
    return yaml.safe_load((tmp_path / "run" / "config.yml").read_text())
