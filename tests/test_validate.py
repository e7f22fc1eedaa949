"""Training validation: global Dice of the UNet and PSNR (metrics.intensity.psnr) of an image UNet."""

import numpy as np
import torch
from torch import nn

from volseg.metrics.intensity import psnr
from volseg.training.validate import _psnr_scores, validate_image, validate_unet


class _Echo(nn.Module):
    def forward(self, x):
        return x


def test_dice_and_psnr():
    image = torch.zeros(4, 1, 4, 4, 4)
    image[:, :, :2] = 1.0
    data = [{"image": image[i], "label": (image[i] > 0.5).to(torch.uint8)} for i in range(4)]
    got = validate_unet(_Echo(), data, device=torch.device("cpu"), amp=False, batch_size=2, limit=2, ignore_label=2)
    assert got == {"val_dice": 1.0}
    rng = np.random.default_rng(0)
    target = torch.from_numpy(rng.random((3, 1, 4, 4, 4)).astype(np.float32))
    pred = target + 0.01 * torch.from_numpy(rng.standard_normal((3, 1, 4, 4, 4)).astype(np.float32))
    scores = _psnr_scores(pred, torch.zeros_like(target), target)
    data_range = float(target.max() - target.min())
    assert scores["val_psnr"] == round(psnr(pred.numpy(), target.numpy(), data_range=data_range), 4)
    assert scores["val_psnr"] > scores["val_psnr_input"] + 10
    items = [{"image": target[i], "target": target[i]} for i in range(3)]
    echo = validate_image(_Echo(), items, device=torch.device("cpu"), amp=False, batch_size=2, limit=2)
    assert echo == {"val_psnr": float("inf"), "val_psnr_input": float("inf")}
