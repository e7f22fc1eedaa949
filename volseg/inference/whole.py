"""Predict with a run trained on whole resized volumes (``data.patch: null``, the seed's way).

Such a model has only seen cases resized to its training shape ``(data.depth, data.image_size,
data.image_size)``. :func:`predict_whole` therefore resizes the input (and its
``data.condition`` images) trilinearly to that shape, writes it to a private work folder next to
the output, runs the ordinary predict on it as one patch covering the whole resized volume
(diffusion sampling, ``--samples`` and its ``uncertainty`` included), resizes every output image
back to the input's shape (trilinear) and writes the result atomically under the output's name
(:func:`volseg.io.atomic_dir`): nothing half-written ever carries the final name, and the work
folder is removed whatever happens. Axis order (z, y, x), units voxels.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from volseg.errors import VolsegError
from volseg.parallel import Execution


def whole_shape(run) -> tuple[int, int, int] | None:
    """The training shape of a run trained on whole volumes (``data.patch: null``), else None."""
    from volseg.models import load_run
    from volseg.models.exported import exported_payload, is_exported

    payload = exported_payload(run) if is_exported(run) else load_run(run)
    data = (payload.get("config") or {}).get("data") or {}
    if not data.get("whole"):
        return None
    return (int(data["depth"]), int(data["image_size"]), int(data["image_size"]))


def _integer_cast(values: np.ndarray, dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    if dtype.kind in "iub":
        info = np.iinfo(dtype) if dtype.kind != "b" else None
        values = np.rint(values)
        if info is not None:
            values = np.clip(values, info.min, info.max)
    return values.astype(dtype)


def predict_whole(run, volume, output, shape, *, predict_once, patch=None, threshold=None, channel=None,
                  chunks=128, execution: Execution | None = None, **options) -> dict:
    """Resize ``volume`` to ``shape``, predict it in one pass, resize the output back.

    Parameters
    ----------
    run, volume, output
        As :func:`volseg.inference.predict.predict`.
    shape : (D, H, W)
        The run's training shape (:func:`whole_shape`).
    predict_once : callable
        :func:`volseg.inference.predict.predict` (passed in by it: this module sits below it).
    patch, threshold, channel
        Refused: the patch is the whole resized volume and the output is an image.
    chunks : int or (z, y, x)
        Chunk size of the written output.
    execution : volseg.parallel.Execution, optional
        Scheduler, workers and ``quiet`` of the one-pass predict; its ``overwrite`` replaces an
        existing output volseg made; a ``part`` is refused (the pass is one task). None: defaults.
    **options
        Passed to the one-pass predict (``samples``, ``sampling_steps``, ``eta``, ``seed``, ``device``,
        ``amp``, ``tta``, ``dtype``, ``nan_value``, ...).

    Returns
    -------
    dict
        The one-pass predict's summary with ``output``, ``whole_shape`` and ``volume_shape``.
    """
    import zarr

    from volseg.data.resize import resize_3d
    from volseg.io import atomic_dir, open_volume, read_meta, write_volume
    from volseg.io.completion import check_complete
    from volseg.io.outputs import guard_output

    execution = Execution.of(execution)
    part, overwrite = execution.part, execution.overwrite
    for option, value in (("--patch", patch), ("--part", part), ("--threshold", threshold),
                          ("--channel", channel)):
        if value is not None:
            raise VolsegError(option, f"{value}: this run was trained on whole volumes resized to "
                              f"{'x'.join(map(str, shape))} (data.patch: null), so predict runs it on the whole "
                              "resized volume in one pass and writes an image; drop the option")
    guard_output(output, inputs=[run, volume], kind="volume", overwrite=overwrite)
    check_complete(volume)
    meta = read_meta(volume)
    if len(meta.shape) != 3:
        raise VolsegError(volume, f"has {len(meta.shape)} dimensions {meta.shape}; predict needs a 3D "
                          "(z, y, x) volume")
    from volseg.models import load_run
    from volseg.models.exported import exported_payload, is_exported

    payload = exported_payload(run) if is_exported(run) else load_run(run)
    names = [str(n) for n in payload["model_config"].get("condition") or []]
    from volseg.inference.source import condition_volumes

    conditions = condition_volumes(volume, names, meta.shape)
    output = Path(output)
    work = output.parent / f"{output.name}.whole-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    try:
        small = work / "input.zarr"
        write_volume(small, resize_3d(np.asarray(open_volume(volume)[...]), shape, order=1), chunks=shape)
        for name, path in zip(names, conditions):
            write_volume(small / name, resize_3d(np.asarray(open_volume(path)[...]), shape, order=1),
                         chunks=shape)
        result = predict_once(run, str(small), str(work / "output.zarr"), patch=shape, overlap=0.0, stitch=True,
                         chunks=shape, tile=None, whole=False, scheduler=execution.scheduler,
                         workers=execution.workers, quiet=execution.quiet, **options)
        produced = zarr.open_group(str(work / "output.zarr"), mode="r")
        images = [""] + [k for k in ("uncertainty",) if k in produced]
        with atomic_dir(output, overwrite=overwrite) as tmp:
            for key in images:
                path = work / "output.zarr" / key if key else work / "output.zarr"
                small_out = np.asarray(open_volume(path)[...])
                back = resize_3d(small_out.astype(np.float32), meta.shape, order=1)
                write_volume(tmp / key if key else tmp, _integer_cast(back, small_out.dtype), chunks=chunks,
                             spacing=meta.spacing, unit=meta.unit)
            zarr.open_group(str(tmp), mode="r+").attrs["volseg"] = {
                "kind": "prediction", "whole_shape": list(shape),
                "volume_shape": list(meta.shape), "samples": result.get("samples", 1)}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result.update(output=str(output), whole_shape=list(shape), volume_shape=list(meta.shape))
    if "uncertainty" in result:
        result["uncertainty"] = os.path.join(str(output), "uncertainty")
    return result
