"""``volseg predict`` and ``volseg stitch``: run a model over a whole volume, blend patches back."""

from __future__ import annotations

from typing import Annotated

import typer

from volseg.cli._app import app
from volseg.cli._remote import CacheOpt, CacheSizeOpt, LevelOpt, StorageOpt, at_level, remote_setup
from volseg.cli._common import (
    ChunksOpt,
    DebugOpt,
    DeviceOpt,
    JsonOpt,
    NanValueOpt,
    OverwriteOpt,
    PartOpt,
    QuietOpt,
    SchedulerOpt,
    WorkersOpt,
    cli_errors,
    console,
    emit_json,
    guard_json,
    local_output,
)

BlendOpt = Annotated[str, typer.Option("--blend", help="Blending window: gaussian, hann, constant or crop.")]
ThresholdOpt = Annotated[float | None, typer.Option(
    "--threshold", help="Write uint8 labels: 1 where the probability >= T.")]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="Output probabilities as float16 or float32.")]
ChannelOpt = Annotated[int | None, typer.Option(
    "--channel", help="Output the probability of this class (several classes default to argmax labels).")]


def _summary(result: dict, quiet: bool) -> None:
    out = console(quiet)
    done = result.get("chunks_done_before", result.get("groups_done_before", 0))
    out.print(f"wrote {result['output']} in {result.get('seconds', 0):.1f} s"
              + (f" (resumed: {done} blocks were already done)" if done else ""))


@app.command("predict")
def predict_command(
    run: Annotated[str, typer.Argument(help="Run directory (or model.pt) of a trained model, or a model "
                                       "file from `volseg export` (.onnx, .pt2, .ts).")],
    volume: Annotated[str, typer.Argument(help="3D input volume (Zarr, OME-Zarr, TIFF, npy, NIfTI).")],
    output: Annotated[str, typer.Option("--output", "-o", callback=local_output,
                                        help="Patch store, or with --stitch an OME-Zarr volume.")],
    patch: Annotated[str | None, typer.Option("--patch", help="Patch size N or DxHxW (default: the run's, else 64).")] = None,
    overlap: Annotated[float, typer.Option("--overlap", help="Fractional patch overlap in [0, 1).")] = 0.5,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Patches per forward pass.")] = 4,
    tta: Annotated[bool, typer.Option("--tta", help="Average over all 8 axis-flip combinations.")] = False,
    amp: Annotated[bool, typer.Option("--amp", help="Mixed precision (bf16 on CPU, fp16 on CUDA).")] = False,
    device: DeviceOpt = "auto",
    stitch: Annotated[bool, typer.Option("--stitch", help="Stream straight into a blended output volume.")] = False,
    blend: BlendOpt = "gaussian",
    dtype: DtypeOpt = "float32",
    threshold: ThresholdOpt = None,
    channel: ChannelOpt = None,
    skip_value: Annotated[float | None, typer.Option(
        "--skip-value", help="Patches whose input is all this value get the model's cached answer.")] = None,
    chunks: ChunksOpt = "128",
    pad: Annotated[bool, typer.Option("--pad/--no-pad", help="Mirror-pad axes shorter than the patch.")] = True,
    sampling_steps: Annotated[int | None, typer.Option("--sampling-steps", help="DDIM steps (diffusion; default the model's).")] = None,
    eta: Annotated[float, typer.Option("--eta", help="DDIM eta (diffusion; 0 = deterministic).")] = 0.0,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seed of the diffusion noise.")] = 0,
    samples: Annotated[int, typer.Option(
        "--samples", help="Diffusion: average N samples (different seeded noise) and write their per-voxel "
        "standard deviation to OUT.zarr/uncertainty.")] = 1,
    tile: Annotated[str, typer.Option(
        "--tile", help="With --stitch (and diffusion): process (y, x) column tiles of N or YxX voxels through "
        "all z (rounded down to whole chunks), bounding memory by the tile, not the scroll's plane; "
        "0 or none = one pass over the whole cross-section. Part of the output's settings.")] = "1024",
    postprocess: Annotated[str | None, typer.Option(
        "--postprocess", metavar="OUT.zarr", callback=local_output,
        help="With --stitch: also write `volseg postprocess` labels (default settings) to OUT.zarr.")] = None,
    scheduler: SchedulerOpt = "threads",
    workers: WorkersOpt = None,
    part: PartOpt = None,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
    level: LevelOpt = None,
    storage_options: StorageOpt = None,
    cache: CacheOpt = None,
    cache_size: CacheSizeOpt = None,
    debug: DebugOpt = False,
    json_out: JsonOpt = None,
    nan_value: NanValueOpt = None,
) -> None:
    """Run a trained model over every patch of VOLUME.

    Examples:

      volseg predict runs/unet scroll.zarr -o pred.zarr --stitch --threshold 0.5

      volseg predict runs/unet scroll.zarr -o patches.zarr && volseg stitch patches.zarr -o pred.zarr

      volseg predict runs/unet scroll.zarr -o pred.zarr --stitch --part 2/8   # job array share

      volseg predict runs/unet scroll.zarr -o pred.zarr --stitch --tile 2048   # more memory, less recompute

      volseg predict unet.onnx scroll.zarr -o pred.zarr --stitch   # an exported model, run by onnxruntime

      volseg predict runs/unet scroll.zarr -o prob.zarr --stitch --postprocess labels.zarr
    """
    with cli_errors(debug):
        guard_json(json_out, inputs=[run, volume], outputs=[output, postprocess])
        from volseg.errors import VolsegError
        from volseg.inference import predict

        if postprocess is not None and (not stitch or part is not None):
            raise VolsegError("--postprocess", "needs the whole stitched volume: add --stitch and drop --part "
                              "(or run `volseg postprocess` once every part is done)")
        from volseg.io.outputs import guard_output

        if stitch:  # -o before any input is opened (an unfinished-input check may read a URL)
            guard_output(output, inputs=[run, volume], kind="volume", overwrite=overwrite)
        if postprocess is not None:
            guard_output(postprocess, inputs=[run, volume, output], kind="volume", overwrite=overwrite,
                         option="--postprocess")
        remote_setup(storage_options, cache, cache_size, inputs=[run, volume],
                     outputs=[output, postprocess, json_out])
        from volseg.io.completion import check_complete

        if level is not None:  # the store itself; the library checks the level array it reads
            check_complete(volume)
        result = predict(run, at_level(volume, level), output, patch=patch, overlap=overlap, batch_size=batch_size, tta=tta,
                         amp=amp, device=device, stitch=stitch, blend=blend, dtype=dtype, threshold=threshold,
                         channel=channel, skip_value=skip_value, chunks=chunks, pad=pad,
                         sampling_steps=sampling_steps, eta=eta, seed=seed, samples=samples,
                         scheduler=scheduler, workers=workers, part=part, tile=tile, overwrite=overwrite, quiet=quiet,
                         nan_value=nan_value)
        if postprocess is not None:
            from volseg.parallel import Execution
            from volseg.postprocess import postprocess as clean

            result["postprocess"] = clean(result["output"], postprocess, chunks=chunks, execution=Execution.parse(
                scheduler=scheduler, workers=workers, overwrite=overwrite, quiet=quiet))
        emit_json(result, json_out)
        _summary(result, quiet or json_out == "-")


@app.command("stitch")
def stitch_command(
    store: Annotated[str, typer.Argument(help="Patch store of predictions (from `volseg predict`).")],
    output: Annotated[str, typer.Option("--output", "-o", callback=local_output,
                                        help="Output OME-Zarr volume.")],
    blend: Annotated[str | None, typer.Option(
        "--blend", help="gaussian, hann, constant or crop (default: the store's, else gaussian).")] = None,
    chunks: ChunksOpt = "128",
    dtype: DtypeOpt = "float32",
    threshold: ThresholdOpt = None,
    channel: ChannelOpt = None,
    scheduler: SchedulerOpt = "threads",
    workers: WorkersOpt = None,
    part: PartOpt = None,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
    json_out: JsonOpt = None,
) -> None:
    """Blend a patch store of predictions into a full volume, one task per output chunk.

    Examples:

      volseg stitch patches.zarr -o pred.zarr

      volseg stitch patches.zarr -o labels.zarr --blend crop --threshold 0.5 --part 1/4
    """
    with cli_errors(debug):
        guard_json(json_out, inputs=[store], outputs=[output])
        from volseg.inference import stitch
        from volseg.parallel import Execution

        result = stitch(store, output, blend=blend, chunks=chunks, dtype=dtype, threshold=threshold,
                        channel=channel, execution=Execution.parse(scheduler=scheduler, workers=workers, part=part,
                                                                   overwrite=overwrite, quiet=quiet))
        emit_json(result, json_out)
        _summary(result, quiet or json_out == "-")
