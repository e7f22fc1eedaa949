"""``volseg export``: write a trained UNet as ONNX, torch.export (.pt2) or TorchScript."""

from __future__ import annotations

from typing import Annotated

import typer

from volseg.cli._app import app
from volseg.cli._bundles import bundled
from volseg.cli._common import JsonOpt, OverwriteOpt, QuietOpt, done, guard_json, local_output


@app.command("export")
@bundled()
def export_command(
    run: Annotated[str, typer.Argument(help="Run directory (best.pt, else model.pt) or a run checkpoint.")],
    output: Annotated[str, typer.Option("--output", "-o", callback=local_output,
                                        help="Model file: .onnx, .pt2 or .ts.")],
    fmt: Annotated[str | None, typer.Option(
        "--format", help="onnx, pt2 (torch.export) or torchscript (default: from the suffix of -o).")] = None,
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Export a trained UNet run (input normalisation included; batch and z, y, x dynamic).

    `volseg predict` accepts the exported file in place of the run (ONNX runs with onnxruntime:
    pip install "volseg\\[onnx]").

    Examples:

      volseg export runs/unet -o unet.onnx

      volseg export runs/unet -o unet.pt2

      volseg predict unet.onnx scroll.zarr -o pred.zarr --stitch
    """
    from volseg.models.export import export_model

    guard_json(json_out, inputs=[run], outputs=[output])
    result = export_model(run, output, fmt=fmt, overwrite=overwrite)
    done(result, json_out, f"wrote {result['output']} ({result['format']}, {result['bytes'] / 1e6:.1f} MB) in "
         f"{result['seconds']:.1f} s; max |exported - torch| = {result['max_abs_diff']:.2e}", quiet=quiet)
