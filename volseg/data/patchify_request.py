"""What ``volseg patchify`` does with its arguments: one volume, or many pairs (``--images``/``--list``).

:func:`patchify_request` checks the output before any input is read, picks the mode, cuts the
patches (:func:`volseg.data.patchify.patchify` or :func:`volseg.data.patchify_many.patchify_many_cli`)
and returns the store's summary figures; :class:`PatchGrid` holds the options that shape the
patches. Axis order (z, y, x); sizes in voxels.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from volseg.errors import VolsegError


@dataclass(frozen=True)
class PatchGrid:
    """How patches are cut: a grid (``patch``, ``stride``) or ``samples`` random, label-balanced
    positions (``foreground_fraction``, ``seed``); ``pad`` allows a patch larger than the volume.
    Values as given (text or numbers); :func:`volseg.data.patchify.patchify` validates them."""

    patch: str = "64"
    stride: str | None = None
    samples: int | None = None
    foreground_fraction: float | None = None
    seed: int = 0
    pad: bool = False

    def options(self) -> dict:
        return {"patch": self.patch, "stride": self.stride, "samples": self.samples,
                "foreground_fraction": self.foreground_fraction, "seed": self.seed, "pad": self.pad}

    def command_line(self, volume, output, labels) -> str:
        """The producing command as recorded in the store (options that shape the patches)."""
        words = ["volseg", "patchify", volume, "-o", output, "--patch", self.patch]
        for flag, value in (("--labels", labels), ("--stride", self.stride), ("--samples", self.samples),
                            ("--foreground-fraction", self.foreground_fraction)):
            if value is not None:
                words += [flag, str(value)]
        if self.samples is not None:
            words += ["--seed", str(self.seed)]
        if self.pad:
            words.append("--pad")
        return shlex.join(str(w) for w in words)


def patchify_request(volume, output, *, labels=None, images=None, list_file=None, per_volume: bool = False,
                     grid: PatchGrid | None = None, execution=None, level: int | None = None) -> dict:
    """Cut ``volume`` (at pyramid ``level``) or the pairs of ``images``/``labels`` or ``list_file``.

    Returns the summary of the written store (``volseg.data.patchstore.store_summary``; with
    several pairs also ``volumes``, and per store with ``per_volume``).

    Examples
    --------
    >>> from volseg.data.synth import write_synth
    >>> import tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> _ = write_synth("scroll", os.path.join(d, "s.zarr"), shape=(32, 32, 32), quiet=True)
    >>> patchify_request(os.path.join(d, "s.zarr"), os.path.join(d, "p.zarr"), grid=PatchGrid(patch="16"))["patches"]
    8
    """
    from volseg.data.patchify import patchify
    from volseg.data.patchstore import store_summary
    from volseg.io.completion import check_complete
    from volseg.io.outputs import guard_output
    from volseg.parallel import Execution

    grid, execution = grid or PatchGrid(), Execution.of(execution)
    if images is not None or list_file is not None:
        from volseg.data.patchify_many import patchify_many_cli

        return patchify_many_cli(volume, images=images, labels=labels, list_file=list_file, out=output,
                                 per_volume=per_volume, execution=execution, **grid.options())
    guard_output(output, inputs=[volume, labels], kind="patches", overwrite=execution.overwrite)  # before any read
    if volume is None:
        raise VolsegError("VOLUME", "missing; give a volume, or --images DIR --labels DIR, or --list FILE")
    if per_volume:
        raise VolsegError("--per-volume", "applies to --images/--list only")
    if level is not None:  # the store itself; patchify checks the level array and the labels
        from volseg.io.levels import resolve_level

        check_complete(volume)
        volume_at = resolve_level(volume, level)
    else:
        volume_at = volume
    out = patchify(volume_at, out=output, labels=labels, execution=execution,
                   command=grid.command_line(volume, output, labels), **grid.options())
    return store_summary(out)
