"""Validation during training: Dice of the UNet, PSNR of DDIM samples for diffusion and of the
images of a UNet trained with an L1/L2 loss.

Neither touches the training random streams (DDIM noise comes from its own seeded generator),
so validating does not change the course of training.
"""

from __future__ import annotations

from typing import Any

import torch

from volseg.training.loop import autocast, to_device
from volseg.training.losses import dice_counts


def _batches(dataset, batch_size: int, limit: int):
    n = min(len(dataset), batch_size * limit)
    for start in range(0, n, batch_size):
        items = [dataset[i] for i in range(start, min(n, start + batch_size))]
        yield {key: torch.stack([torch.as_tensor(it[key]) for it in items])
               for key in items[0] if torch.is_tensor(items[0][key])
               or hasattr(items[0][key], "shape")}


@torch.no_grad()
def validate_unet(model, dataset, *, device: torch.device, amp: bool, batch_size: int,
                  limit: int, ignore_label: int | None) -> dict[str, float]:
    """Global hard Dice (threshold 0.5, ignore label masked) over up to ``limit`` batches."""
    model.eval()
    inter = pred = true = 0.0
    for batch in _batches(dataset, batch_size, limit):
        batch = to_device(batch, device)
        with autocast(device, amp):
            prob = model(batch["image"].float())
        i, p, t = dice_counts(prob.float(), batch["label"], ignore_label=ignore_label)
        inter, pred, true = inter + i, pred + p, true + t
    dice = 1.0 if pred + true == 0 else 2.0 * inter / (pred + true)
    return {"val_dice": round(dice, 6)}


@torch.no_grad()
def validate_image(model, dataset, *, device: torch.device, amp: bool, batch_size: int,
                   limit: int) -> dict[str, float]:
    """PSNR (dB, raw units, range of the targets) of a UNet regressing an image, and of the input."""
    model.eval()
    preds, conds, targets = [], [], []
    for batch in _batches(dataset, batch_size, limit):
        batch = to_device(batch, device)
        with autocast(device, amp):
            preds.append(model(batch["image"].float()).float().cpu())
        conds.append(batch["image"].float().cpu())
        targets.append(batch["target"].float().cpu())
    return _psnr_scores(torch.cat(preds), torch.cat(conds), torch.cat(targets))


def _psnr_scores(pred: torch.Tensor, cond: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """``val_psnr`` (and ``val_psnr_input``) of CPU tensors: :func:`volseg.metrics.intensity.psnr`."""
    from volseg.metrics.intensity import psnr

    data_range = float(target.max() - target.min()) or 1.0
    out = {"val_psnr": round(psnr(pred.numpy(), target.numpy(), data_range=data_range), 4)}
    if cond.shape == target.shape:
        out["val_psnr_input"] = round(psnr(cond.numpy(), target.numpy(), data_range=data_range), 4)
    return out


@torch.no_grad()
def validate_diffusion(model, dataset, *, device: torch.device, amp: bool, samples: int,
                       seed: int, eta: float) -> dict[str, float]:
    """PSNR (dB, raw units, range of the targets) of DDIM samples and of the degraded input."""
    model.eval()
    preds, conds, targets = [], [], []
    generator = torch.Generator().manual_seed(seed)
    for batch in _batches(dataset, 1, samples):
        batch = to_device(batch, device)
        with autocast(device, amp):
            out = model.sample(batch["image"].float(), eta=eta, generator=generator)
        preds.append(out.float().cpu())
        conds.append(batch["image"].float().cpu())
        targets.append(batch["target"].float().cpu())
    if not preds:
        return {}
    return _psnr_scores(torch.cat(preds), torch.cat(conds), torch.cat(targets))


def validate(state: dict[str, Any], dataset, *, device: torch.device) -> dict[str, float]:
    """Validation metrics for the model in ``state`` (the EMA copy for diffusion)."""
    cfg = state["cfg"]
    training = cfg["training"]
    if state["kind"] == "unet" and cfg["loss"].get("type", "segmentation") != "segmentation":
        return validate_image(state["model"], dataset, device=device, amp=training["amp"],
                              batch_size=training["batch_size"], limit=training["val_batches"])
    if state["kind"] == "unet":
        return validate_unet(state["model"], dataset, device=device, amp=training["amp"],
                             batch_size=training["batch_size"], limit=training["val_batches"],
                             ignore_label=cfg["loss"]["ignore_label"])
    model = state["ema"].module if state["ema"] is not None else state["model"]
    diff = cfg["diffusion"]
    return validate_diffusion(model, dataset, device=device, amp=training["amp"],
                              samples=diff["val_samples"], seed=training["seed"],
                              eta=diff["eta"])
