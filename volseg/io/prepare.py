"""``volseg prepare``: convert any supported volume to a chunked OME-Zarr, streamed.

The input is opened lazily (:func:`volseg.io.open_volume`) and written block by block
(:func:`volseg.io.write_volume`): memory is bounded by a few blocks of whole output chunks per
worker, never by the volume. Values and dtype are kept exactly unless ``dtype`` asks for a
conversion, which is checked block by block (values that do not fit are an error, not a wrap).
Voxel spacing and unit are carried over from inputs that record them (NIfTI, OME-Zarr).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from volseg.errors import VolsegError
from volseg.parallel import Execution


def prepare(input, output, *, chunks=128, levels=1, dtype="keep", channel: int | None = None,
            execution: Execution | None = None) -> dict:
    """Convert ``input`` to an OME-Zarr image group at ``output`` (atomically).

    Parameters
    ----------
    input : str or os.PathLike
        TIFF stack, folder of 2D TIFF slices, ``.npy``, NIfTI, Zarr or OME-Zarr.
    output : str or os.PathLike
        The OME-Zarr group to write (``OUT.zarr``). Must not exist unless ``overwrite``.
    chunks : int, str or tuple
        Chunk shape (z, y, x) in voxels: ``128`` or ``64x128x128``.
    levels : int
        Resolution levels of the pyramid (1 = full resolution only).
    dtype : str
        ``keep`` (default) or a dtype name (uint8, uint16, int16, float32, ...).
    channel : int, optional
        The channel of a 4D input.
    execution : volseg.parallel.Execution, optional
        Dask scheduler and workers, ``overwrite`` (replace an existing output) and ``quiet``
        (hide the progress bar); None: threads on every core, no overwrite, quiet.

    Returns
    -------
    dict
        ``input``, ``output``, ``format``, ``shape``, ``dtype``, ``chunks``, ``levels``,
        ``spacing``, ``unit``, ``seconds``.

    Raises
    ------
    VolsegError
        A bad option or input, an output that may not be written, or another volseg process
        writing ``output`` (its lock ``<output>.lock`` is held).

    Examples
    --------
    >>> import numpy as np
    >>> np.save("scan.npy", np.arange(4096, dtype=np.uint16).reshape(16, 16, 16))
    >>> summary = prepare("scan.npy", "scan.zarr", chunks=8)
    >>> summary["shape"], summary["chunks"], summary["dtype"]
    ([16, 16, 16], [8, 8, 8], 'uint16')
    """
    from volseg.io.atomic import check_output
    from volseg.io.omezarr import quiet_default, write_image
    from volseg.io.readers import _open
    from volseg.io.streaming import block_shape, parse_chunks, parse_dtype, parse_levels, same_path, write_budget

    from volseg.io.locks import claimed_output
    from volseg.io.outputs import guard_output
    from volseg.io.remote import is_url

    execution = quiet_default(execution)
    overwrite, quiet = execution.overwrite, execution.quiet
    output = guard_output(output, inputs=[input], kind="volume", overwrite=overwrite)
    input, output = (input if is_url(input) else Path(input)), Path(output)
    if not is_url(input) and input.exists() and same_path(input, output):
        raise VolsegError(output, f"overlaps the input {input}; choose another output name")
    chunks, levels = parse_chunks(chunks), parse_levels(levels)
    check_output(output, overwrite=overwrite)
    budget = write_budget(execution)
    data, meta = _open(input, channel, chunks=lambda shape, dt: block_shape(chunks, shape, dt.itemsize, budget))
    target = parse_dtype(dtype, meta.dtype)  # the input is checked (lazily opened) before anything is made
    start = time.perf_counter()
    with claimed_output(output, inputs=[input], kind="volume", overwrite=overwrite, quiet=quiet) as output:
        write_image(output, data, chunks=chunks, levels=levels, spacing=meta.spacing, unit=meta.unit,
                    dtype=target, execution=execution, ome={"name": _name(input)},
                    description=f"prepare {_name(input)}",
                    attrs={"command": "prepare", "source": os.fspath(input), "source_format": meta.format})
    return {"input": os.fspath(input), "output": os.fspath(output), "format": meta.format,
            "shape": list(meta.shape), "dtype": target.name, "chunks": [min(c, s) for c, s in zip(chunks, meta.shape)],
            "levels": levels, "spacing": list(meta.spacing), "unit": meta.unit,
            "seconds": round(time.perf_counter() - start, 3)}


def _name(input) -> str:
    """The last component of a path or URL."""
    return str(input).rstrip("/").rsplit("/", 1)[-1] if isinstance(input, str) else input.name
