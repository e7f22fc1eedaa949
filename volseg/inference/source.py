"""The input volume as predict reads it, and the fixed forward batches of a patch group.

Shared by :mod:`volseg.inference.predict` and :mod:`volseg.inference.diffusion_sampling` (a lower module,
so neither imports the other for these).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_VOLUMES: dict = {}


def open_cached(path: str, nan_value: float | None = None):
    """``volseg.io.open_volume(path)``, opened once per process; float blocks are checked for
    NaN/Inf as they are read (replaced by ``nan_value`` when given, see :mod:`volseg.io.finite`)."""
    from volseg.io import open_volume
    from volseg.io.finite import guard

    if (path, nan_value) not in _VOLUMES:
        _VOLUMES[path, nan_value] = guard(open_volume(path), path, nan_value=nan_value)
    return _VOLUMES[path, nan_value]


def condition_patches(setup, origins: np.ndarray, lo, hi) -> list[np.ndarray]:
    """The further input channels of ``setup.conditions`` (a run trained with ``data.condition``)
    cut into the patches at ``origins`` of the box [lo, hi): one (patches, 1, *patch) float32 array
    per condition image."""
    from volseg.inference.plan import read_box

    P = setup.plan.patch
    out = []
    for path in setup.conditions:
        box, _ = read_box(open_cached(path, setup.nan_value), lo, hi, setup.plan.shape)
        out.append(np.stack([box[tuple(slice(o - a, o - a + p) for o, a, p in zip(origin, lo, P))]
                             for origin in origins])[:, None].astype(np.float32, copy=False))
    return out


def condition_volumes(volume, names, shape) -> list[str]:
    """``VOLUME/<name>`` for each condition image the model was trained with (``data.condition``)."""
    import os

    from volseg.errors import VolsegError
    from volseg.io import read_meta
    from volseg.io.remote import is_url, join

    out = []
    for name in names:
        path = join(str(volume), name) if is_url(str(volume)) else os.path.join(str(volume), name)
        try:
            other = tuple(int(s) for s in read_meta(path).shape)
        except VolsegError:
            raise VolsegError(volume, f"has no condition image {name!r} ({path}); the model was trained on "
                              f"the volume plus {names} as input channels") from None
        if other != tuple(int(s) for s in shape):
            raise VolsegError(path, f"has shape {other} but the volume has {tuple(shape)}; they must match")
        out.append(path)
    return out


def forward_batches(counts: Sequence[int], batch_size: int) -> list[np.ndarray]:
    """The fixed forward batches of a group owning ``counts`` (z, y, x) patches.

    Each batch is an array of flat C-order indices into the group's patches, taken in (y, x, z)
    order ``batch_size`` at a time. A pass runs the batches holding a patch it needs, each
    batch whole, so a patch's output never depends on which other patches a tile, part or
    resumed pass wants (a model's numerics may depend on the batch). z is innermost because
    column tiles never split z.
    """
    order = np.arange(int(np.prod(counts))).reshape(tuple(counts)).transpose(1, 2, 0).ravel()
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
