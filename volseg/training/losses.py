"""Training losses and validation scores (torch).

Segmentation: binary cross-entropy + soft Dice (one class) or cross-entropy + soft Dice over the
foreground classes (several), with voxels of the ignore label masked out of both terms.
Optional topology term: skeleton recall (Kirchhoff et al., "Skeleton Recall Loss for
Connectivity Conserving and Resource Efficient Segmentation of Thin Tubular Structures", ECCV
2024): the truth's foreground is skeletonised (:func:`skimage.morphology.skeletonize` of every
axis-aligned 2D slice, united: the medial surface of a sheet; scikit-image's 3D thinning reduces
a plate to a curve or nothing), dilated by a ball into a tube and kept inside the foreground;
the term is ``1 - soft recall`` of the predicted foreground probability on that tube, ignore label excluded. It punishes a cut
through a thin sheet far more than a Dice term does. Skeletons are computed on the fly on the
CPU from each label patch. Or soft clDice (Shit et al., "clDice - a Novel Topology-Preserving
Loss Function for Tubular Structure Segmentation", CVPR 2021): soft skeletons of both the
predicted probability and the truth by iterated min/max pooling (:func:`soft_skeleton`), and
``1 - F1`` of topology precision (the predicted skeleton inside the truth) and topology
sensitivity (the truth's skeleton covered by the prediction); differentiable on both sides,
on the device, no scikit-image.
Diffusion: MSE between the true and the predicted noise.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F


def _mask(label: torch.Tensor, ignore_label: int | None) -> torch.Tensor:
    if ignore_label is None:
        return torch.ones_like(label, dtype=torch.float32)
    return (label != ignore_label).float()


def tubed_skeleton(label: torch.Tensor, *, radius: int = 1) -> torch.Tensor:
    """The tubed skeleton of the foreground (label 1) of each patch, as float32 (N, 1, z, y, x).

    Each patch's foreground is skeletonised slice by slice along z, y and x with
    :func:`skimage.morphology.skeletonize` (2D) and the three results united: for a sheet this
    is its medial surface (the 3D thinning of scikit-image, Lee 1994, keeps only curves and
    erases a plate). The skeleton is dilated with :func:`skimage.morphology.ball` of ``radius``
    voxels (0: the bare skeleton) and intersected with the foreground. Computed with numpy on
    the CPU, returned on ``label``'s device.
    """
    from scipy.ndimage import binary_dilation
    from skimage.morphology import ball, skeletonize

    fg = (label[:, 0] == 1).cpu().numpy()
    tubes = np.zeros(fg.shape, dtype=np.float32)
    footprint = ball(int(radius)).astype(bool) if radius > 0 else None
    for i, mask in enumerate(fg):
        if not mask.any():
            continue
        skel = np.zeros_like(mask)
        for axis in range(3):
            for k in range(mask.shape[axis]):
                plane = np.take(mask, k, axis=axis)
                if plane.any():
                    index = [slice(None)] * 3
                    index[axis] = k
                    skel[tuple(index)] |= skeletonize(plane)
        if footprint is not None:
            skel = binary_dilation(skel, footprint)
        tubes[i] = skel & mask
    return torch.from_numpy(tubes)[:, None].to(label.device)


def _neighbours(x: torch.Tensor, axes, pad: float) -> list[torch.Tensor]:
    """``x`` and its two neighbours along each of ``axes`` (2-4), the volume padded with ``pad``."""
    spec = [0] * 6
    for axis in axes:
        spec[2 * (4 - axis)] = spec[2 * (4 - axis) + 1] = 1
    padded = F.pad(x, spec, value=pad)
    centre = [slice(None), slice(None)] + [slice(1, -1) if a in axes else slice(None) for a in (2, 3, 4)]
    out = [padded[tuple(centre)]]
    for axis in axes:
        for start in (0, 2):
            index = list(centre)
            index[axis] = slice(start, start + x.shape[axis])
            out.append(padded[tuple(index)])
    return out


def _soft_erode(x: torch.Tensor) -> torch.Tensor:
    """Minimum over the 6-neighbourhood cross (MONAI/clDice: three 3-voxel min-pools). Written as
    one ``min`` over the 7 shifted views: its backward routes each gradient to the one winning
    voxel, several times faster on CPU than ``max_pool3d``'s or ``torch.minimum``'s."""
    return torch.stack(_neighbours(x, (2, 3, 4), float("inf"))).min(0).values


def _soft_open(x: torch.Tensor) -> torch.Tensor:
    """Erosion, then the 3x3x3 maximum (separable: a 3-voxel maximum along each axis)."""
    x = _soft_erode(x)
    for axis in (2, 3, 4):
        x = torch.stack(_neighbours(x, (axis,), -float("inf"))).max(0).values
    return x


def soft_skeleton(x: torch.Tensor, *, iters: int = 3) -> torch.Tensor:
    """Soft morphological skeleton of a (N, 1, z, y, x) map in [0, 1] (Shit et al., CVPR 2021).

    ``skel = relu(x - open(x))``, then ``iters`` times: erode ``x`` and add what the opening of
    the eroded map removes (``relu(delta - skel * delta)``). Structures up to about ``2 * iters
    + 1`` voxels thick are thinned to their medial surface/axis; on binary input it is a binary
    skeleton. Differentiable (min/max pooling), on ``x``'s device.
    """
    skel = F.relu(x - _soft_open(x))
    for _ in range(int(iters)):
        x = _soft_erode(x)
        delta = F.relu(x - _soft_open(x))
        skel = skel + F.relu(delta - skel * delta)
    return skel


def skeleton_recall(prob: torch.Tensor, tube: torch.Tensor, mask: torch.Tensor, *,
                    smooth: float = 1.0) -> torch.Tensor:
    """``1 - sum(prob * tube) / sum(tube)`` over voxels where ``mask`` is 1 (smoothed)."""
    tube = tube * mask
    return 1.0 - ((prob * tube).sum() + smooth) / (tube.sum() + smooth)


def segmentation_loss(logits: torch.Tensor, label: torch.Tensor, *,
                      ignore_label: int | None = 2, bce_weight: float = 1.0,
                      dice_weight: float = 1.0, skeleton_recall_weight: float = 0.0,
                      skeleton_tube_radius: int = 1, cldice_weight: float = 0.0,
                      cldice_iters: int = 3, smooth: float = 1.0,
                      reduce: Callable[[torch.Tensor], torch.Tensor] | None = None
                      ) -> torch.Tensor:
    """BCE (or CE) + soft Dice (+ skeleton recall, + soft clDice) on the batch, ignoring ``ignore_label``.

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
    bce_weight, dice_weight, skeleton_recall_weight, cldice_weight : float
        Weights of the terms (skeleton recall: off at 0, see :func:`tubed_skeleton`; soft
        clDice: off at 0, see :func:`soft_skeleton`).
    skeleton_tube_radius : int
        Radius in voxels of the ball that dilates the skeleton into a tube.
    cldice_iters : int
        Erosions of the soft skeleton (thinner than ~2 * iters + 1 voxels: thinned fully).
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
        fg_prob, fg_true = prob, target
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
        fg_prob = (1.0 - torch.softmax(logits, dim=1)[:, :1]) * mask
        fg_true = (classes != 0)[:, None].float() * mask
    k = (sums.numel() - 2) // 2
    if skeleton_recall_weight:  # recall on the tube is a ratio of sums too: reduced with the rest
        tube = tubed_skeleton(label, radius=skeleton_tube_radius) * mask
        sums = torch.cat([sums, torch.stack([(fg_prob * tube).sum(), tube.sum()])])
    if cldice_weight:  # the two ratios of sums, reduced with the rest
        skel_pred = soft_skeleton(fg_prob, iters=cldice_iters) * mask
        skel_true = soft_skeleton(fg_true, iters=cldice_iters) * mask
        sums = torch.cat([sums, torch.stack([(skel_pred * fg_true).sum(), skel_pred.sum(),
                                             (skel_true * fg_prob).sum(), skel_true.sum()])])
    if reduce is not None:
        sums = reduce(sums)
    inter, denom = sums[2:2 + k], sums[2 + k:2 + 2 * k]
    dice = 1.0 - ((2.0 * inter + smooth) / (denom + smooth)).mean()
    loss = bce_weight * sums[0] / sums[1].clamp_min(1.0) + dice_weight * dice
    extra = 2 + 2 * k
    if skeleton_recall_weight:
        hit, tube_sum = sums[extra], sums[extra + 1]
        loss = loss + skeleton_recall_weight * (1.0 - (hit + smooth) / (tube_sum + smooth))
        extra += 2
    if cldice_weight:
        precision = (sums[extra] + smooth) / (sums[extra + 1] + smooth)
        sensitivity = (sums[extra + 2] + smooth) / (sums[extra + 3] + smooth)
        loss = loss + cldice_weight * (1.0 - 2.0 * precision * sensitivity / (precision + sensitivity))
    return loss


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


def regression_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    """Mean absolute (``l1``) or squared (``l2``) error, in float32: the UNet image baseline."""
    if kind == "l1":
        return F.l1_loss(pred.float(), target.float())
    return F.mse_loss(pred.float(), target.float())
