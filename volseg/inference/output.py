"""How blended per-voxel model outputs become the output volume: ``--dtype``, ``--threshold``, ``--channel``.

:class:`OutputOptions` holds the options as given (validated alone, before the model is known);
:meth:`OutputOptions.spec` checks them against the model's output channels and gives the
:class:`OutputSpec` that converts each blended (C, z, y, x) block (predict, stitch, diffusion).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from volseg.errors import VolsegError
from volseg.io.finite import parse_finite, parse_whole

OUTPUT_DTYPES = ("float16", "float32")


@dataclass(frozen=True)
class OutputSpec:
    """How blended per-voxel outputs (C, z, y, x) become the output volume.

    * ``kind="probability"``: one class probability per voxel (``channel``, default 0 when the
      model has one output channel), stored as ``dtype``; with ``threshold`` T: uint8 labels
      ``1`` where the probability is >= T, else ``0``.
    * ``kind="labels"``: several classes and no ``channel``: the argmax class as uint8.
    * ``kind="image"``: diffusion output (one channel), stored as ``dtype``.
    """

    kind: str = "probability"
    dtype: str = "float32"
    threshold: float | None = None
    channel: int | None = None

    @property
    def out_dtype(self) -> np.dtype:
        if self.kind == "labels" or self.threshold is not None:
            return np.dtype("uint8")
        return np.dtype(self.dtype)

    def convert(self, values: np.ndarray) -> np.ndarray:
        """(C, z, y, x) float32 -> the (z, y, x) output block."""
        if self.kind == "labels":
            return np.argmax(values, axis=0).astype(np.uint8)
        v = values[self.channel or 0]
        if self.threshold is not None:
            return (v >= self.threshold).astype(np.uint8)
        return v.astype(self.out_dtype)

    def settings(self) -> dict:
        return {"kind": self.kind, "dtype": str(self.out_dtype), "threshold": self.threshold,
                "channel": self.channel}


def output_spec(channels: int, *, dtype: str = "float32", threshold: float | None = None,
                channel: int | None = None, image: bool = False) -> OutputSpec:
    """Validate ``--dtype``, ``--threshold`` and ``--channel`` against ``channels`` model outputs."""
    dtype = str(dtype).strip().lower()
    if dtype not in OUTPUT_DTYPES:
        raise VolsegError("--dtype", f"unsupported output dtype {dtype!r}; use float16 or float32")
    if channel is not None and not 0 <= int(channel) < channels:
        raise VolsegError("--channel", f"the model has {channels} output channel(s) (0..{channels - 1}), "
                          f"got {channel}")
    if threshold is not None:
        threshold = float(threshold)
        if image:
            raise VolsegError("--threshold", "applies to segmentation probabilities, not to an image "
                              "model's output (diffusion, or a UNet trained with loss.type l1/l2); drop --threshold")
        if not 0.0 < threshold < 1.0:
            raise VolsegError("--threshold", f"must be a probability in (0, 1), got {threshold}")
        if channels > 1 and channel is None:
            raise VolsegError("--threshold", f"the model has {channels} classes; pick one with --channel "
                              "or drop --threshold to get argmax labels")
    if image:
        return OutputSpec("image", dtype, None, 0 if channel is None else int(channel))
    if channels > 1 and channel is None:
        return OutputSpec("labels", "uint8", None, None)
    return OutputSpec("probability", dtype, threshold, 0 if channel is None else int(channel))


@dataclass(frozen=True)
class OutputOptions:
    """``--dtype``, ``--threshold`` and ``--channel`` before the model is known.

    :meth:`spec` checks them against the model's output channels and gives the
    :class:`OutputSpec` that converts blended values.
    """

    dtype: str = "float32"
    threshold: float | None = None
    channel: int | None = None

    @classmethod
    def parse(cls, *, dtype="float32", threshold=None, channel=None) -> "OutputOptions":
        text = str(dtype).strip().lower()
        if text not in OUTPUT_DTYPES:
            raise VolsegError("--dtype", f"unsupported output dtype {dtype!r}; use float16 or float32")
        threshold = None if threshold is None else parse_finite(threshold, "--threshold")
        channel = None if channel is None else parse_whole(channel, "--channel", low=0, fix="e.g. --channel 1")
        return cls(text, threshold, channel)

    def spec(self, channels: int, *, image: bool = False):
        """The :class:`OutputSpec` for ``channels`` model outputs."""
        return output_spec(channels, dtype=self.dtype, threshold=self.threshold, channel=self.channel, image=image)
