"""``data.condition``: further images inside each training volume used as input channels
(e.g. the ``flair`` of a ``volseg synth brain`` case, stacked after its T1 root image)."""

from __future__ import annotations

from pathlib import Path

from volseg.errors import VolsegError


def refuse_condition(path, condition) -> None:
    """``data.condition`` names images inside streamed volumes; a patch store has its channels."""
    if condition:
        raise VolsegError(path, "is a patch store; data.condition adds images of streamed volumes as "
                          "channels (a patch store holds its channels already): drop data.condition or "
                          "train on the volumes")


def condition_paths(path: Path, condition, shape, read_meta) -> list[Path]:
    """The condition images ``path/<name>`` of ``data.condition``, each of the volume's shape."""
    out = []
    for name in condition or ():
        other = path / name
        if not other.exists():
            raise VolsegError(path, f"has no condition image {name!r} (expected {other}); every volume "
                              f"needs all of data.condition {list(condition)}")
        other_shape = tuple(int(s) for s in read_meta(other).shape)
        if other_shape != tuple(shape):
            raise VolsegError(other, f"has shape {other_shape} but the image has {tuple(shape)}; they must match")
        out.append(other)
    return out
