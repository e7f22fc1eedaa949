"""Training losses and validation scores (torch).

Segmentation: binary cross-entropy + soft Dice (one class) or cross-entropy + soft Dice over the
foreground classes (several), with voxels of the ignore label masked out of both terms.
Diffusion: MSE between the true and the predicted noise.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def _mask(label: torch.Tensor, ignore_label: int | None) -> torch.Tensor:
    if ignore_label is None:
        return torch.ones_like(label, dtype=torch.float32)
    return (label != ignore_label).float()


def segmentation_loss(logits: torch.Tensor, label: torch.Tensor, *,
                      ignore_label: int | None = 2, bce_weight: float = 1.0,
                      dice_weight: float = 1.0, smooth: float = 1.0,
                      reduce: Callable[[torch.Tensor], torch.Tensor] | None = None
                      ) -> torch.Tensor:
    """BCE (or CE) + soft Dice on the batch, ignoring voxels labelled ``ignore_label``.

    Both terms are ratios of sums over the whole batch (CE summed over valid voxels / their
    count; batch soft Dice as nnU-Net's ``batch_dice``). ``reduce`` receives the vector of those
    sums and returns it summed over every process of a distributed run (an autograd-aware
    all-reduce, :mod:`volseg.training.distributed`), so that N ranks with b patches each compute
    exactly the loss of one process with N*b patches.

    Parameters
    ----------
    logits : torch.Tensor
        (N, K, z, y, x) head outputs before the sigmoid/softmax.
    label : torch.Tensor
        (N, 1, z, y, x) integer labels (0 background, 1 foreground, ``ignore_label`` ignored;
        class indices 0..K-1 when K > 1).
    ignore_label : int or None
        Label excluded from both terms (2 in the Vesuvius convention).
    bce_weight, dice_weight : float
        Weights of the two terms.
    smooth : float
        Additive smoothing of the Dice ratio.
    reduce : callable, optional
        Sums the (S,) float32 vector of batch sums across processes; None: this batch only.

    Returns
    -------
    torch.Tensor
        Scalar loss (float32).
    """
    logits = logits.float()
    mask = _mask(label, ignore_label)
    if logits.shape[1] == 1:
        target = (label == 1).float()
        ce = (F.binary_cross_entropy_with_logits(logits, target, reduction="none") * mask).sum()
        prob = torch.sigmoid(logits) * mask
        target = target * mask
        sums = torch.stack([ce, mask.sum(), (prob * target).sum(), prob.sum() + target.sum()])
    else:
        classes = label[:, 0].long()
        if ignore_label is not None:
            classes = torch.where(classes == ignore_label, torch.zeros_like(classes), classes)
        ce = (F.cross_entropy(logits, classes, reduction="none") * mask[:, 0]).sum()
        prob = torch.softmax(logits, dim=1)[:, 1:] * mask
        onehot = F.one_hot(classes, logits.shape[1]).movedim(-1, 1)[:, 1:].float() * mask
        dims = (0, 2, 3, 4)
        sums = torch.cat([torch.stack([ce, mask.sum()]), (prob * onehot).sum(dims),
                          prob.sum(dims) + onehot.sum(dims)])
    if reduce is not None:
        sums = reduce(sums)
    k = (sums.numel() - 2) // 2
    inter, denom = sums[2:2 + k], sums[2 + k:]
    dice = 1.0 - ((2.0 * inter + smooth) / (denom + smooth)).mean()
    return bce_weight * sums[0] / sums[1].clamp_min(1.0) + dice_weight * dice


def dice_counts(prob: torch.Tensor, label: torch.Tensor, *, ignore_label: int | None = 2,
                threshold: float = 0.5) -> tuple[float, float, float]:
    """(intersection, predicted, true) foreground voxel counts for a hard Dice, ignore masked.

    ``prob`` is (N, 1, z, y, x) foreground probability, or (N, K, ...) class probabilities
    (foreground = argmax != 0). Sum the counts over batches and take
    ``2 * inter / (pred + true)`` for a global Dice.
    """
    mask = _mask(label, ignore_label).bool()
    if prob.shape[1] == 1:
        pred = prob > threshold
    else:
        pred = (prob.argmax(dim=1, keepdim=True) != 0)
    truth = (label != 0) & mask
    pred = pred & mask
    return (float((pred & truth).sum()), float(pred.sum()), float(truth.sum()))


def diffusion_loss(eps_pred: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Mean squared error between the predicted and the true noise (float32)."""
    return F.mse_loss(eps_pred.float(), eps.float())


def psnr(pred: torch.Tensor, target: torch.Tensor, data_range: float) -> float:
    """Peak signal-to-noise ratio in dB of ``pred`` vs ``target`` for a value range."""
    mse = float(torch.mean((pred.double() - target.double()) ** 2))
    if mse == 0.0:
        return float("inf")
    return float(10.0 * torch.log10(torch.tensor(data_range ** 2 / mse)))
