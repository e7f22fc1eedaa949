"""``volseg predict --stitch --postprocess LABELS``: predict, then clean the prediction, as one call."""

from __future__ import annotations

from volseg.errors import VolsegError


def check_outputs(run, volume, output, labels, settings, execution) -> None:
    """Refuse a bad ``-o`` or ``--postprocess`` before anything is read, fetched or created.

    ``settings`` is a :class:`~volseg.inference.settings.PredictSettings`, ``execution`` a
    :class:`~volseg.parallel.Execution`; ``labels`` (``--postprocess``) needs the whole stitched
    volume, so ``--stitch`` without ``--part``.
    """
    from volseg.inference.ensemble import run_list
    from volseg.inference.nnunet_setup import is_nnunet_folder
    from volseg.io.outputs import guard_output

    runs = run_list(run)
    if len(runs) == 1 and is_nnunet_folder(runs[0]):  # an nnU-Net folder always writes the blended volume
        settings = settings.replace(stitch=True)
    if labels is not None and (not settings.stitch or execution.part is not None):
        raise VolsegError("--postprocess", "needs the whole stitched volume: add --stitch and drop --part "
                          "(or run `volseg postprocess` once every part is done)")
    if settings.stitch:
        guard_output(output, inputs=[*runs, volume], kind="volume", overwrite=execution.overwrite)
    if labels is not None:
        guard_output(labels, inputs=[*runs, volume, output], kind="volume", overwrite=execution.overwrite,
                     option="--postprocess")


def predict_then_postprocess(run, volume, output, settings, output_options, execution, *, labels=None) -> dict:
    """:func:`volseg.inference.predict.predict`, then with ``labels`` :func:`volseg.postprocess.postprocess`
    of its output (default post-processing settings, the prediction's chunks) into ``labels``.

    Returns the predict summary, with the post-processing summary under ``"postprocess"``.

    Examples
    --------
    >>> from volseg.inference.settings import predict_options
    >>> settings, output_options, execution = predict_options(stitch=True)
    >>> predict_then_postprocess("runs/unet", "scroll.zarr", "prob.zarr", settings, output_options,
    ...                          execution, labels="labels.zarr")["postprocess"]["output"]  # doctest: +SKIP
    'labels.zarr'
    """
    from volseg.inference.predict import predict
    from volseg.postprocess.run import postprocess

    check_outputs(run, volume, output, labels, settings, execution)
    result = predict(run, volume, output, settings, output_options, execution)
    if labels is not None:
        box = {"roi": settings.roi} if settings.roi is not None else {}  # --roi: the box's chunks only
        result["postprocess"] = postprocess(result["output"], labels, chunks=settings.chunks, execution=execution,
                                            **box)
    return result
