"""nnU-Net v2 model folders: read, validate, build and run them as patch models.

``NnunetModel(folder, folds=..., checkpoint="final"|"best", tta=True)`` loads a trained folder
``Trainer__Plans__configuration/`` (``plans.json``, ``dataset.json``, ``fold_K/checkpoint_*.pth``)
and exposes what a tiler needs: ``in_channels``, ``labels``, ``patch_size``, ``spacing``,
``transpose_forward``/``transpose_backward``, ``normalise(array, stats)``, ``logits(batch)``,
``activation(logits)`` and ``probabilities(batch)``. nnU-Net's grid (steps, gaussian, padding,
nonzero crop box) is in :mod:`volseg.inference.nnunet_grid`. Needs the optional extra
``volseg[nnunet]`` (dynamic-network-architectures), imported when a folder is loaded.
"""

from volseg.models.nnunet.model import NnunetModel
from volseg.models.nnunet.normalization import ChannelStats, block_stats, combine_stats

__all__ = ["ChannelStats", "NnunetModel", "block_stats", "combine_stats"]
