"""``volseg predict``: run a trained model over every patch of a volume.

Axis order (z, y, x), sizes in voxels. The patch grid covers the volume with ``--patch`` every
``patch * (1 - overlap)`` voxels, the last patch flush with the far border. Padding policy: an
axis shorter than the patch is mirrored (``numpy.pad(mode="reflect")``) at its far end up to
the patch size and the outputs are cropped back, so the output always has the input's shape;
``pad=False`` (``--no-pad``) refuses such volumes instead.

Two outputs (:mod:`volseg.inference.passes`):

* default: a patch store of the raw per-patch outputs (float16, ``kind: "predictions"``, with
  the blend settings) for ``volseg stitch``. Tasks are the patch groups of
  :mod:`volseg.inference.plan` (patches owned by one output-sized block), each writing its own
  contiguous range of patch rows and then its marker.
* ``stitch=True``: fused streaming into an OME-Zarr volume (:mod:`volseg.inference.engine`),
  one pass per (y, x) column tile of ``--tile`` voxels through all z
  (:mod:`volseg.inference.column_tiles`, default 1024, rounded down to whole chunks). Memory is bounded
  by the tile's cross-section (its wavefront of overlap slabs), not by the volume's depth or
  plane; patches straddling a tile border are computed by both tiles (about
  ``(patch - stride) / tile`` extra forwards per axis for a tile that is a multiple of the stride). The output does not depend on the tile
  (same patches, same batches, same summation order per chunk). ``--part I/N`` takes a
  contiguous share of the chunks in tile order, so ``--tile`` is part of the output's settings.

Both resume from their markers (same settings), honour ``--part`` and any Dask scheduler.
Diffusion runs are handed to :func:`volseg.inference.diffusion_sampling.sample_volume`; runs trained on
whole resized volumes to :func:`volseg.inference.whole.predict_whole`. Every new output holds
its resolved settings as ``volseg-predict.yml``, which ``--config`` reads back.
"""

from __future__ import annotations

import time

import numpy as np

from volseg.errors import VolsegError
from volseg.inference.settings import OutputOptions, PredictSettings, settings_text
from volseg.parallel import Execution


def predict(run, volume, output, settings: PredictSettings | None = None,
            output_options: OutputOptions | None = None, execution: Execution | None = None) -> dict:
    """Predict a whole volume patch by patch (see the module docstring).

    Parameters
    ----------
    run : path
        Run directory (or ``model.pt``) of a trained UNet or diffusion model, or a model file
        from ``volseg export``.
    volume : path or URL
        Any 3D volume :func:`volseg.io.open_volume` reads, (z, y, x).
    output : path or URL
        Patch store (default) or, with ``settings.stitch``, an OME-Zarr volume of the input's shape.
    settings : PredictSettings, optional
        How to predict (patch, overlap, blend, batch, TTA, device, chunks, tile, ...; default
        :class:`~volseg.inference.settings.PredictSettings` ``()``).
    output_options : OutputOptions, optional
        ``dtype``, ``threshold``, ``channel`` of the blended output (checked against the model).
    execution : Execution, optional
        Scheduler, workers, ``--part``, ``--overwrite``, ``--quiet`` (default: threads, all cores).

    Returns
    -------
    dict
        Summary: output path, counts of patches/chunks computed and skipped, seconds,
        input bytes read per input byte.

    Examples
    --------
    >>> from volseg.inference.settings import predict_options
    >>> predict("runs/unet", "scroll.zarr", "pred.zarr",
    ...         *predict_options(patch=64, stitch=True, threshold=0.5))  # doctest: +SKIP
    {'output': 'pred.zarr', 'complete': True, 'mode': 'stitch', ...}
    """
    from volseg.inference.setup import prepare
    from volseg.inference.whole import predict_whole, whole_shape
    from volseg.io.completion import check_complete
    from volseg.io.identity import local_path
    from volseg.io.outputs import guard_output

    settings = settings or PredictSettings()
    output_options = output_options or OutputOptions()
    execution = Execution.of(execution)
    t0 = time.perf_counter()
    output = local_path(output)  # file://: the local path, with every local guard and rename
    if settings.stitch:  # refuse a bad -o before loading anything (the kind is checked again below)
        guard_output(output, inputs=[run, volume], kind="volume", overwrite=execution.overwrite)
    check_complete(volume)  # an unfinished output (killed, one --part) is no input: its gaps read as 0
    shape = whole_shape(run) if settings.whole else None
    if shape is not None:
        return predict_whole(run, volume, output, shape, settings, output_options, execution, predict_once=predict)
    setup = prepare(run, volume, settings, workers=execution.workers)
    guard_output(output, inputs=[run, volume], overwrite=execution.overwrite,
                 kind="volume" if settings.stitch or setup.info.kind == "diffusion" else "patches")
    record = settings_text(setup.settings, output_options, run=str(run), volume=str(volume))
    result = _run_pass(setup, output, output_options, execution, record)
    result.update(setup.run_facts())
    result["seconds"] = round(time.perf_counter() - t0, 3)
    nbytes = int(np.prod(setup.meta.shape)) * setup.meta.dtype.itemsize
    result["input_bytes_read_per_byte"] = round(result.get("input_bytes_read", 0) / max(1, nbytes), 4)
    return result


def _run_pass(setup, output, output_options: OutputOptions, execution: Execution, record: str) -> dict:
    """The pass for this model and these settings: DDIM sampling, fused stitch or a patch store."""
    from volseg.inference.passes import predict_fused, predict_store

    settings = setup.settings
    if setup.info.kind == "diffusion":
        from volseg.inference.diffusion_sampling import sample_volume

        return sample_volume(setup, output, output_options.spec(setup.info.out_channels, image=True),
                             execution, record=record)
    if settings.diffusion.samples != 1:
        raise VolsegError("--samples", f"{settings.diffusion.samples}: averaging samples applies to diffusion "
                          "runs; a UNet is deterministic, drop --samples (or use --tta)")
    if settings.stitch:
        spec = output_options.spec(setup.info.out_channels, image=setup.info.output == "image")
        return predict_fused(setup, output, spec, execution, record=record)
    for option, value in (("--threshold", output_options.threshold), ("--channel", output_options.channel)):
        if value is not None:
            raise VolsegError(option, "applies to the blended volume: add --stitch, or pass it to "
                              "`volseg stitch` when stitching this patch store")
    return predict_store(setup, output, execution, record=record)
