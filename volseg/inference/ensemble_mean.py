"""How an ensemble averages its members' blended outputs: arithmetic or geometric mean.

Members' outputs are (C, z, y, x) float32 arrays of one chunk. The arithmetic mean is the
plain mean. The geometric mean treats them as class distributions: for several channels
(softmax) the per-class geometric means renormalised to sum 1; for one channel (sigmoid, the
foreground probability p of the two classes p and 1 - p) ``g(p) / (g(p) + g(1 - p))``, which is
the sigmoid of the mean logit. Probabilities are clipped to [1e-7, 1 - 1e-7] first so a member
that is certain does not veto the others.

Examples
--------
>>> import numpy as np
>>> a, b = np.full((1, 2), 0.2, np.float32), np.full((1, 2), 0.8, np.float32)
>>> combine([a, b], "arithmetic")[0, 0], round(float(combine([a, b], "geometric")[0, 0]), 6)
(np.float32(0.5), 0.5)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from volseg.errors import VolsegError

MEANS = ("arithmetic", "geometric")
_EPS = 1e-7


def parse_ensemble_mean(value) -> str:
    """``--ensemble-mean``: ``arithmetic`` or ``geometric``."""
    mean = str(value).strip().lower()
    if mean not in MEANS:
        raise VolsegError("--ensemble-mean", f"{value!r} is not a mean; use arithmetic or geometric")
    return mean


def combine(outputs: Sequence[np.ndarray], mean: str) -> np.ndarray:
    """The ``mean`` of the members' outputs (each (C, ...) float32), float32 (C, ...)."""
    if mean == "arithmetic":
        total = np.zeros_like(outputs[0], dtype=np.float64)
        for out in outputs:
            total += out
        return (total / len(outputs)).astype(np.float32)
    logs = np.mean([np.log(np.clip(out, _EPS, 1 - _EPS).astype(np.float64)) for out in outputs], axis=0)
    if logs.shape[0] == 1:
        rest = np.mean([np.log1p(-np.clip(out, _EPS, 1 - _EPS).astype(np.float64)) for out in outputs], axis=0)
        return (1.0 / (1.0 + np.exp(rest - logs))).astype(np.float32)
    g = np.exp(logs - logs.max(axis=0, keepdims=True))
    return (g / g.sum(axis=0, keepdims=True)).astype(np.float32)


__all__ = ["MEANS", "combine", "parse_ensemble_mean"]
