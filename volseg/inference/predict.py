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
An nnU-Net model folder runs :func:`volseg.inference.nnunet_pass.predict_nnunet` instead
(always the blended volume, nnU-Net's crop, grid, gaussian and float16 sums).
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
    run : path or sequence of paths
        Run directory (or ``model.pt``) of a trained UNet or diffusion model, a model file
        from ``volseg export``, or an nnU-Net v2 model folder (plans.json, dataset.json,
        fold_K/): that one always writes the blended volume on nnU-Net's grid, equal to
        nnU-Net's predictor (:mod:`volseg.inference.nnunet_pass`; ``settings.folds``,
        ``checkpoint``, ``label``, ``trust_checkpoint``, ``spacing`` apply to it only).
        Several UNet runs form an ensemble (with ``settings.stitch``): their probabilities are
        averaged (:mod:`volseg.inference.ensemble`).
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
    from volseg.inference.ensemble import predict_ensemble, run_list
    from volseg.inference.setup import prepare
    from volseg.inference.whole import predict_whole, whole_shape
    from volseg.io.completion import check_complete
    from volseg.io.identity import local_path
    from volseg.io.outputs import guard_output

    from volseg.inference.nnunet_setup import is_nnunet_folder

    settings = settings or PredictSettings()
    output_options = output_options or OutputOptions()
    execution = Execution.of(execution)
    t0 = time.perf_counter()
    output = local_path(output)  # file://: the local path, with every local guard and rename
    runs = run_list(run)
    if len(runs) == 1 and is_nnunet_folder(runs[0]):
        return _predict_nnunet(runs[0], volume, output, settings, output_options, execution, t0)
    if any(is_nnunet_folder(r) for r in runs):
        raise VolsegError(next(r for r in runs if is_nnunet_folder(r)), "an nnU-Net folder cannot be a member "
                          "of an ensemble of runs; it ensembles its own folds (--folds)")
    check_volseg_run(settings)
    if settings.stitch:  # refuse a bad -o before loading anything (the kind is checked again below)
        guard_output(output, inputs=[*runs, volume], kind="volume", overwrite=execution.overwrite)
    check_complete(volume)  # an unfinished output (killed, one --part) is no input: its gaps read as 0
    if len(runs) > 1:
        return predict_ensemble(runs, volume, output, settings, output_options, execution)
    run = runs[0]
    shape = whole_shape(run) if settings.whole else None
    if shape is not None:
        if settings.roi is not None or settings.mask is not None:
            raise VolsegError("--roi" if settings.roi is not None else "--mask", f"{run} was trained on whole "
                              "resized volumes and predicts the whole volume at once; --roi and --mask select "
                              "patches of a patch-wise run (set `whole: false` in --config to run it patch-wise)")
        return predict_whole(run, volume, output, shape, settings, output_options, execution, predict_once=predict)
    setup = prepare(run, volume, settings, workers=execution.workers, scheduler=execution.scheduler)
    guard_output(output, inputs=[run, volume], overwrite=execution.overwrite,
                 kind="volume" if settings.stitch or setup.info.kind == "diffusion" else "patches")
    record = settings_text(setup.settings, output_options, run=str(run), volume=str(volume))
    result = _run_pass(setup, output, output_options, execution, record)
    result.update(setup.run_facts())
    result["seconds"] = round(time.perf_counter() - t0, 3)
    nbytes = int(np.prod(setup.meta.shape)) * setup.meta.dtype.itemsize
    result["input_bytes_read_per_byte"] = round(result.get("input_bytes_read", 0) / max(1, nbytes), 4)
    return result


def check_volseg_run(settings: PredictSettings) -> None:
    """Refuse the nnU-Net-only settings (``--folds``, ``--label``, ``--blend nnunet``, ...) for a volseg run."""
    for option, value in settings.nnunet_options().items():
        raise VolsegError(option, f"{value!r}: applies to nnU-Net model folders (plans.json, dataset.json, "
                          "fold_K/); a volseg run has no folds, labels or checkpoints to choose: drop it")
    if settings.blend == "nnunet":
        raise VolsegError("--blend", "nnunet reproduces nnU-Net's grid and applies to nnU-Net model folders; "
                          "a volseg run blends with gaussian, hann, constant or crop")


def _predict_nnunet(run, volume, output, settings, output_options, execution, t0) -> dict:
    """An nnU-Net model folder: always the blended volume (``--stitch`` implied), on nnU-Net's grid."""
    from volseg.inference.nnunet_pass import nnunet_spec, predict_nnunet
    from volseg.inference.nnunet_setup import prepare_nnunet
    from volseg.io.completion import check_complete
    from volseg.io.outputs import guard_output

    guard_output(output, inputs=[run, volume], kind="volume", overwrite=execution.overwrite)
    check_complete(volume)
    with execution.executor() as executor:  # one executor: the streamed passes, then the prediction
        job, fingerprint, resolved, tile, meta = prepare_nnunet(run, volume, settings, output_options, execution,
                                                                executor)
        spec = nnunet_spec(job, output_options)
        guard_output(output, inputs=[run, volume], kind="volume", overwrite=execution.overwrite)
        record = settings_text(resolved, output_options, run=str(run), volume=str(volume))
        result = predict_nnunet(job, fingerprint, tile, meta, output, spec, execution, executor, record=record)
    result["seconds"] = round(time.perf_counter() - t0, 3)
    return result


def _run_pass(setup, output, output_options: OutputOptions, execution: Execution, record: str) -> dict:
    """The pass for this model and these settings: DDIM sampling, fused stitch or a patch store."""
    from volseg.inference.passes import predict_fused, predict_store

    settings = setup.settings
    if setup.info.kind == "diffusion":
        if setup.support is not None:
            raise VolsegError("--roi" if settings.roi is not None else "--mask", "applies to UNet predictions; "
                              "diffusion sampling runs over the whole volume, drop it")
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
