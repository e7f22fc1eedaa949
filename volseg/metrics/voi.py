"""Variation of information between the connected components of two segmentations.

As in the Vesuvius surface-detection metric: both binary masks are labelled into 26-connected
components (scikit-image ``label(connectivity=3)``), and the variation of information
VOI = H(G|P) + H(P|G) is computed over the voxels of the union foreground (P or G), where a
voxel outside one mask carries that mask's background label 0. Entropies are in bits, as
:func:`skimage.metrics.variation_of_information`, which computes them here from the contingency
table. H(P|G) measures false splits, H(G|P) false merges. The leaderboard's
VOI score = 1 / (1 + 0.3 VOI).

Chunk-wise, every chunk contributes the counts of its (truth component, prediction component)
pairs; once the chunked labelling has merged the components across faces, the pairs are
renamed to global components and summed into one contingency table.
"""

from __future__ import annotations

import numpy as np

VOI_ALPHA = 0.3


def pair_counts(truth_labels: np.ndarray, pred_labels: np.ndarray) -> np.ndarray:
    """Contingency counts of one block over its union foreground.

    Returns an (K, 3) int64 array of rows (truth label, prediction label, voxel count), labels
    as given (0 = background of that mask).
    """
    union = (truth_labels > 0) | (pred_labels > 0)
    if not union.any():
        return np.zeros((0, 3), dtype=np.int64)
    keys = np.stack([truth_labels[union].astype(np.int64), pred_labels[union].astype(np.int64)], 1)
    pairs, counts = np.unique(keys, axis=0, return_counts=True)
    return np.concatenate([pairs, counts[:, None].astype(np.int64)], axis=1)


def voi_from_pairs(pairs: np.ndarray) -> tuple[float, float]:
    """(H(P|G), H(G|P)) in bits from (truth, prediction, count) rows; repeated pairs add up.

    Returns (0.0, 0.0) when the union foreground is empty.
    """
    from scipy.sparse import csr_array
    from skimage.metrics import variation_of_information

    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 3)
    total = pairs[:, 2].sum() if len(pairs) else 0
    if total == 0:
        return 0.0, 0.0
    _, rows = np.unique(pairs[:, 0], return_inverse=True)
    _, cols = np.unique(pairs[:, 1], return_inverse=True)
    table = csr_array((pairs[:, 2] / total, (rows.ravel(), cols.ravel())))
    table.sum_duplicates()
    # scikit-image checks the (unused) images' shapes even when given a table: pass two dummies.
    dummy = np.zeros(1, dtype=np.int64)
    split, merge = variation_of_information(dummy, dummy, table=table)
    return float(split), float(merge)


def voi_score(voi: float, *, alpha: float = VOI_ALPHA) -> float:
    """Leaderboard VOI score 1 / (1 + alpha VOI), in (0, 1]."""
    return 1.0 / (1.0 + alpha * float(voi))


def variation_of_information(pred, truth) -> float:
    """VOI (bits) between the 26-connected components of two masks, over their union foreground.

    Whole volume in memory; :func:`volseg.metrics.evaluate.evaluate` computes the same streamed.

    Parameters
    ----------
    pred, truth : array_like of bool, shape (z, y, x)
    """
    from skimage.measure import label

    pred, truth = np.asarray(pred, dtype=bool), np.asarray(truth, dtype=bool)
    pairs = pair_counts(label(truth, connectivity=3), label(pred, connectivity=3))
    return float(sum(voi_from_pairs(pairs)))
