"""``volseg export``: write a trained UNet run or an nnU-Net v2 model folder as ONNX, torch.export
(.pt2) or TorchScript."""

from __future__ import annotations

from typing import Annotated

import typer

from volseg.cli._app import app
from volseg.cli._bundles import bundled
from volseg.cli._common import JsonOpt, OverwriteOpt, QuietOpt, done, guard_json, local_output


@app.command("export")
@bundled()
def export_command(
    run: Annotated[str, typer.Argument(help="Run directory (best.pt, else model.pt), a run checkpoint, or an "
                                            "nnU-Net v2 model folder (Trainer__Plans__configuration).")],
    output: Annotated[str, typer.Option("--output", "-o", callback=local_output,
                                        help="Model file: .onnx, .pt2 or .ts.")],
    fmt: Annotated[str | None, typer.Option(
        "--format", help="onnx, pt2 (torch.export) or torchscript (default: from the suffix of -o).")] = None,
    folds: Annotated[str | None, typer.Option(
        "--folds", help="nnU-Net folder: folds whose logits are averaged, e.g. 0,1 (default: every fold present).")] = None,
    checkpoint: Annotated[str, typer.Option(
        "--checkpoint", help="nnU-Net folder: checkpoint_final.pth (final) or checkpoint_best.pth (best).")] = "final",
    trust_checkpoint: Annotated[bool, typer.Option(
        "--trust-checkpoint", help="nnU-Net folder: unpickle checkpoints the weights-only loader refuses "
        "(runs code from the file: only for files you trust).")] = False,
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Export a trained UNet run (input normalisation included; batch and z, y, x dynamic).

    `volseg predict` accepts the exported file in place of the run (ONNX runs with onnxruntime:
    pip install "volseg\\[onnx]"). An nnU-Net folder exports its folds' mean logits, softmax and
    CT normalisation (no mirroring); `volseg predict FOLDER` is the nnU-Net-equal path.

    Examples:

      volseg export runs/unet -o unet.onnx

      volseg export nnUNetTrainer__nnUNetPlans__3d_fullres -o ink.onnx --folds 0,1

      volseg predict unet.onnx scroll.zarr -o pred.zarr --stitch
    """
    from volseg.inference.settings import parse_folds
    from volseg.models.nnunet.export import export_run_or_folder

    guard_json(json_out, inputs=[run], outputs=[output])
    result = export_run_or_folder(run, output, fmt=fmt, folds=parse_folds(folds), checkpoint=checkpoint,
                                  trust=trust_checkpoint, overwrite=overwrite)
    done(result, json_out, f"wrote {result['output']} ({result['format']}, {result['bytes'] / 1e6:.1f} MB) in "
         f"{result['seconds']:.1f} s; max |exported - torch| = {result['max_abs_diff']:.2e}", quiet=quiet)
