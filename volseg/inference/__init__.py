"""Inference: run a model over every patch of a volume and blend the patches back seamlessly.

* :func:`predict` (``volseg predict``): patch store of predictions, or fused streaming into a
  volume (``stitch=True``); DDIM sampling for diffusion runs.
* :func:`stitch` (``volseg stitch``): blend a patch store into a volume, one task per chunk.
* :mod:`~volseg.inference.blend` (windows), :mod:`~volseg.inference.plan` (patch groups and
  chunks), :mod:`~volseg.inference.engine` (the fused task graph),
  :mod:`~volseg.inference.column_tiles` (column tiles bounding the fused pass's memory by
  ``--tile``), :mod:`~volseg.inference.runner` (batching, AMP, TTA),
  :mod:`~volseg.inference.diffusion_sampling` (DDIM sampling of a diffusion run over a volume).
* Resuming outputs (markers, settings fingerprints) lives in :mod:`volseg.io.resume` and
  :mod:`volseg.io.markers`.
"""

from volseg.inference.blend import BLEND_MODES, Blender, window
from volseg.inference.predict import predict
from volseg.inference.stitch import stitch

__all__ = ["BLEND_MODES", "Blender", "predict", "stitch", "window"]
