"""``volseg predict``: run a model over every patch of a whole volume (library: :func:`volseg.predict`)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from volseg.cli._app import app
from volseg.cli._bundles import (EXECUTION, REMOTE, Bundle, ChannelOpt, DtypeOpt, ThresholdOpt, bundled,
                                 explicit_values)
from volseg.cli._common import ChunksOpt, DeviceOpt, JsonOpt, NanValueOpt, done, guard_json, local_output, wrote

BlendOpt = Annotated[str, typer.Option("--blend", help="Blending window: gaussian, hann, constant or crop.")]


def _settings(config: str | None, **values):
    """defaults < ``--config`` file < the flags given on the command line."""
    from volseg.inference.settings import from_sources

    return from_sources(explicit_values(values), config=config)


#: Every option of ``volseg predict`` that is a setting, and ``--config`` -> (PredictSettings, OutputOptions).
SETTINGS = Bundle((
    ("config", Annotated[Optional[str], typer.Option(
        "--config", "-c", metavar="SETTINGS.yml", help="Predict settings (YAML; every OUT.zarr holds the ones it "
        "was made with as volseg-predict.yml); flags given here override it.")], None),
    ("patch", Annotated[Optional[str], typer.Option(
        "--patch", help="Patch size N or DxHxW (default: the run's, else 64).")], None),
    ("overlap", Annotated[float, typer.Option("--overlap", help="Fractional patch overlap in [0, 1).")], 0.5),
    ("batch_size", Annotated[str, typer.Option(
        "--batch-size", metavar="N|auto", help="Patches per forward pass, or auto: about 1M voxels per pass (4 patches of 64^3), "
        "within the memory guard.")], "auto"),
    ("runtime", Annotated[str, typer.Option(
        "--runtime", metavar="auto|torch|onnx", help="auto, torch or onnx (exports the run once to ONNX, cached per user by the "
        "checkpoint's SHA-256, and runs it with onnxruntime). auto: torch in channels-last for a run, the "
        "file's runtime for an exported model. Not part of the output's settings: outputs agree to float32 "
        "rounding whichever runs.")], "auto"),
    ("tta", Annotated[bool, typer.Option("--tta", help="Average over all 8 axis-flip combinations.")], False),
    ("amp", Annotated[bool, typer.Option("--amp", help="Mixed precision (bf16 on CPU, fp16 on CUDA).")], False),
    ("device", DeviceOpt, "auto"),
    ("stitch", Annotated[bool, typer.Option("--stitch", help="Stream straight into a blended output volume.")], False),
    ("blend", BlendOpt, "gaussian"),
    ("dtype", DtypeOpt, "float32"), ("threshold", ThresholdOpt, None), ("channel", ChannelOpt, None),
    ("skip_value", Annotated[Optional[float], typer.Option(
        "--skip-value", help="Patches whose input is all this value get the model's cached answer.")], None),
    ("chunks", ChunksOpt, "128"),
    ("pad", Annotated[bool, typer.Option("--pad/--no-pad", help="Mirror-pad axes shorter than the patch.")], True),
    ("sampling_steps", Annotated[Optional[int], typer.Option(
        "--sampling-steps", help="DDIM steps (diffusion; default the model's).")], None),
    ("eta", Annotated[float, typer.Option("--eta", help="DDIM eta (diffusion; 0 = deterministic).")], 0.0),
    ("seed", Annotated[int, typer.Option("--seed", min=0, help="Seed of the diffusion noise.")], 0),
    ("samples", Annotated[int, typer.Option(
        "--samples", help="Diffusion: average N samples (different seeded noise) and write their per-voxel "
        "standard deviation to OUT.zarr/uncertainty.")], 1),
    ("tile", Annotated[str, typer.Option(
        "--tile", help="With --stitch (and diffusion): process (y, x) column tiles of N or YxX voxels through "
        "all z (rounded down to whole chunks), bounding memory by the tile, not the scroll's plane; "
        "0 or none = one pass over the whole cross-section. Part of the output's settings.")], "1024"),
    ("nan_value", NanValueOpt, None),
), _settings)


@app.command("predict")
@bundled(request=SETTINGS, execution=EXECUTION, remote=REMOTE)
def predict_command(
    run: Annotated[str, typer.Argument(help="Run directory (or model.pt) of a trained model, or a model "
                                       "file from `volseg export` (.onnx, .pt2, .ts).")],
    volume: Annotated[str, typer.Argument(help="3D input volume (Zarr, OME-Zarr, TIFF, npy, NIfTI).")],
    output: Annotated[str, typer.Option("--output", "-o", callback=local_output,
                                        help="Patch store, or with --stitch an OME-Zarr volume.")],
    postprocess: Annotated[Optional[str], typer.Option(
        "--postprocess", metavar="OUT.zarr", callback=local_output,
        help="With --stitch: also write `volseg postprocess` labels (default settings) to OUT.zarr.")] = None,
    json_out: JsonOpt = None,
    *, request, execution, remote,
) -> None:
    """Run a trained model over every patch of VOLUME.

    Examples:

      volseg predict runs/unet scroll.zarr -o pred.zarr --stitch --threshold 0.5

      volseg predict runs/unet scroll.zarr -o patches.zarr && volseg stitch patches.zarr -o pred.zarr

      volseg predict runs/unet scroll.zarr -o pred.zarr --stitch --part 2/8   # job array share

      volseg predict runs/unet scroll.zarr -o pred.zarr --stitch --tile 2048   # more memory, less recompute

      volseg predict unet.onnx scroll.zarr -o pred.zarr --stitch   # an exported model, run by onnxruntime

      volseg predict runs/unet scroll.zarr -o again.zarr --config pred.zarr/volseg-predict.yml   # repeat a run

      volseg predict runs/unet scroll.zarr -o prob.zarr --stitch --postprocess labels.zarr
    """
    from volseg.postprocess.chain import check_outputs, predict_then_postprocess

    settings, output_options = request
    guard_json(json_out, inputs=[run, volume], outputs=[output, postprocess])
    check_outputs(run, volume, output, postprocess, settings, execution)  # before the cache folder is made
    remote.setup(inputs=[run, volume], outputs=[output, postprocess, json_out])
    result = predict_then_postprocess(run, remote.at_level(volume, checked=True), output, settings,
                                      output_options, execution, labels=postprocess)
    done(result, json_out, wrote(result), quiet=execution.quiet)
