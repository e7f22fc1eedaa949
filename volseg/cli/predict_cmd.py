"""``volseg predict``: run a model over every patch of a whole volume (library: :func:`volseg.predict`)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from volseg.cli._app import app
from volseg.cli._bundles import (EXECUTION, REMOTE, Bundle, ChannelOpt, DtypeOpt, ThresholdOpt, bundled,
                                 explicit_values)
from volseg.cli._common import ChunksOpt, DeviceOpt, JsonOpt, NanValueOpt, done, guard_json, local_output, wrote

BlendOpt = Annotated[str, typer.Option("--blend", help="Blending window: gaussian, hann, constant or crop; nnunet "
                                      "(nnU-Net's grid and logit blending) for nnU-Net model folders, their default.")]


def _settings(config: str | None, **values):
    """defaults < ``--config`` file < the flags given on the command line."""
    from volseg.inference.settings import from_sources

    flags = explicit_values(values)
    if "ignore_spacing" in flags:
        flags["spacing"] = "ignore" if flags.pop("ignore_spacing") else "check"
    return from_sources(flags, config=config)


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
    ("tta_rotate", Annotated[float, typer.Option(
        "--tta-rotate", metavar="DEG", help="Also average over rotations by +DEG and -DEG degrees about z (in "
        "y/x; 0-45, e.g. 15): 3 forwards per patch, 24 with --tta.")], 0.0),
    ("ensemble_mean", Annotated[str, typer.Option(
        "--ensemble-mean", help="Several RUNs: average their probabilities as the arithmetic or geometric "
        "mean.")], "arithmetic"),
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
    # nnU-Net model folders (Trainer__Plans__configuration/ with plans.json, dataset.json, fold_K/)
    ("folds", Annotated[Optional[str], typer.Option(
        "--folds", help="nnU-Net folder: folds to ensemble, e.g. 0,1,4 (default: every fold present).")], None),
    ("checkpoint", Annotated[str, typer.Option(
        "--checkpoint", help="nnU-Net folder: checkpoint_final.pth (final) or checkpoint_best.pth (best).")], "final"),
    ("label", Annotated[Optional[str], typer.Option(
        "--label", metavar="NAME|argmax", help="nnU-Net folder: write this dataset.json label's probability "
        "(default the first foreground label), or argmax for nnU-Net's label map.")], None),
    ("trust_checkpoint", Annotated[bool, typer.Option(
        "--trust-checkpoint", help="nnU-Net folder: unpickle checkpoints the weights-only loader refuses "
        "(runs code from the file: only for files you trust).")], False),
    ("ignore_spacing", Annotated[bool, typer.Option(
        "--ignore-spacing", help="nnU-Net folder: predict even when the volume's spacing differs from the "
        "plans' target spacing.")], False),
    ("roi", Annotated[Optional[str], typer.Option(
        "--roi", metavar="Z0:Z1,Y0:Y1,X0:X1", help="Compute only this box (level-0 voxels, half-open; open or "
        "negative ends as Python slices) on the whole volume's patch grid: equal to the full run inside it, "
        "0 outside; the output keeps the volume's shape.")], None),
    ("mask", Annotated[Optional[str], typer.Option(
        "--mask", metavar="MASK[@LEVEL]", help="Run only the patches over nonzero voxels of this mask (any "
        "volume, or level LEVEL of an OME-Zarr pyramid, at an integer scale of the volume); the rest is 0.")],
     None),
    # ONNX files that `volseg export` did not write (volseg.models.foreign)
    ("normalize", Annotated[Optional[str], typer.Option(
        "--normalize", metavar="zscore|ct:LOW,HIGH,MEAN,STD|none", help="Foreign ONNX file: normalize the raw "
        "voxels before the graph: zscore (each patch and channel to mean 0, std 1), ct (clip to [LOW, HIGH], "
        "then (x - MEAN) / STD, as nnU-Net's CTNormalization) or none (default).")], None),
    ("activation", Annotated[Optional[str], typer.Option(
        "--activation", metavar="sigmoid|softmax|none", help="Foreign ONNX file: apply to the graph's output "
        "(softmax over channels); none (default) writes it as is.")], None),
), _settings)


@app.command("predict")
@bundled(request=SETTINGS, execution=EXECUTION, remote=REMOTE)
def predict_command(
    runs: Annotated[list[str], typer.Argument(metavar="RUN", help="Run directory, model.pt, `volseg export` file (.onnx, "
                                              ".pt2, .ts), other .onnx (see --normalize) or nnU-Net v2 folder; several UNet runs: an ensemble.")],
    volume: Annotated[str, typer.Argument(help="3D input volume (Zarr, OME-Zarr, TIFF, npy, NIfTI).")],
    output: Annotated[str, typer.Option("--output", "-o", callback=local_output,
                                        help="Patch store, or with --stitch an OME-Zarr volume.")],
    postprocess: Annotated[Optional[str], typer.Option(
        "--postprocess", metavar="OUT.zarr", callback=local_output,
        help="With --stitch: also write `volseg postprocess` labels (default settings) to OUT.zarr.")] = None,
    json_out: JsonOpt = None,
    *, request, execution, remote,
) -> None:
    """Run a trained model (or an ensemble of several) over every patch of VOLUME.

    Examples:

      volseg predict runs/unet scroll.zarr -o pred.zarr --stitch --threshold 0.5

      volseg predict runs/unet scroll.zarr -o pred.zarr --stitch --part 2/8   # job array share

      volseg predict runs/unet scroll.zarr -o again.zarr --config pred.zarr/volseg-predict.yml   # repeat a run

      volseg predict nnUNetTrainer__nnUNetPlans__3d_fullres scroll.zarr -o ink.zarr --folds 0,1 --tta

      volseg predict runs/unet scroll.zarr -o roi.zarr --stitch --roi 1000:1512,2000:2512,:   # one box

      volseg predict runs/unet scroll.zarr -o pred.zarr --stitch --mask papyrus.zarr@5   # masked patches only

      volseg predict runs/a runs/b scroll.zarr -o prob.zarr --stitch   # ensemble: mean probability

      volseg predict runs/unet scroll.zarr -o prob.zarr --stitch --tta --tta-rotate 15   # 24 views
    """
    from volseg.postprocess.chain import check_outputs, predict_then_postprocess

    settings, output_options = request
    run = runs[0] if len(runs) == 1 else runs
    guard_json(json_out, inputs=[*runs, volume], outputs=[output, postprocess])
    check_outputs(run, volume, output, postprocess, settings, execution)  # before the cache folder is made
    remote.setup(inputs=[*runs, volume], outputs=[output, postprocess, json_out])
    result = predict_then_postprocess(run, remote.at_level(volume, checked=True), output, settings,
                                      output_options, execution, labels=postprocess)
    done(result, json_out, wrote(result), quiet=execution.quiet)
