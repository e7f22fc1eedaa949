"""``volseg evaluate PRED GT``: segmentation and intensity metrics, streamed chunk by chunk."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from volseg.cli._app import app
from volseg.cli._bundles import EXECUTION, REMOTE, bundled
from volseg.cli._common import JsonOpt, NanValueOpt, console, emit_json, guard_json, local_output

_EPILOG = (
    "Examples:\n\n"
    "  volseg evaluate pred.zarr scroll.zarr/labels/surface\n\n"
    "  volseg evaluate pred.zarr scroll.zarr/labels/surface --image scroll.zarr --preview preview.png\n\n"
    "  volseg evaluate pred.zarr gt.tif --metrics dice,surface_dice,score --tolerance 1 --json -\n\n"
    "  volseg evaluate denoised.zarr scan.zarr/target --metrics psnr,ssim --data-range 1.0\n\n"
    "  volseg evaluate pred.zarr gt.zarr --scheduler distributed --workers 8 --json scores.json"
)


ImageOpt = Annotated[Optional[str], typer.Option("--image", help="Input image, shown in --preview.")]
MetricsOpt = Annotated[Optional[str], typer.Option(
    "--metrics", metavar="A,B,...",
    help="From dice, surface_dice, voi, betti, topology, betti_matching, score, psnr, ssim. "
    "Default: dice, surface_dice, voi, betti, topology, score when GT is an integer label "
    "volume; psnr, ssim when GT is float. betti_matching (the leaderboard's topology, "
    "persistent homology) reads both volumes whole: at most 320^3 voxels.")]
ThresholdOpt = Annotated[float, typer.Option(
    "--threshold", help="Float (probability) volumes are foreground where > threshold.")]
ToleranceOpt = Annotated[float, typer.Option("--tolerance", help="Surface Dice tolerance in voxels.")]
IgnoreOpt = Annotated[str, typer.Option(
    "--ignore-label", metavar="LABEL",
    help="GT voxels with this label are background in both volumes before every metric; 'none' disables.")]
RangeOpt = Annotated[Optional[float], typer.Option(
    "--data-range", help="PSNR/SSIM data range (default: the dtype's range for integer GT, else GT max - min).")]
BlockOpt = Annotated[Optional[str], typer.Option(
    "--block", metavar="N|ZxYxX", help="Block size in voxels (default: the GT's chunks).")]
PreviewOpt = Annotated[Optional[str], typer.Option(
    "--preview", metavar="PNG", callback=local_output,
    help="Write orthogonal slices of image, prediction, truth and an overlay.")]
SliceOpt = Annotated[Optional[str], typer.Option(
    "--slice", metavar="Z,Y,X", help="Voxel the preview planes pass through (default: centre).")]


@app.command("evaluate", epilog=_EPILOG)
@bundled(execution=EXECUTION.only("scheduler", "workers", "quiet"), remote=REMOTE)
def evaluate_cmd(
    pred: Annotated[str, typer.Argument(metavar="PRED", help="Prediction volume (probabilities, labels or intensities).")],
    gt: Annotated[str, typer.Argument(metavar="GT", help="Ground-truth volume (labels 0/1/2 or intensities).")],
    image: ImageOpt = None, metrics: MetricsOpt = None, threshold: ThresholdOpt = 0.5, tolerance: ToleranceOpt = 2.0,
    ignore_label: IgnoreOpt = "2", data_range: RangeOpt = None, block: BlockOpt = None, preview: PreviewOpt = None,
    slice_: SliceOpt = None, nan_value: NanValueOpt = None, json: JsonOpt = None,
    *, execution, remote,
) -> None:
    """Score PRED against GT: Dice, surface Dice, VOI, Betti numbers, topology, combined score, PSNR, 3D SSIM.

    Streams block by block with Dask, so a whole scroll is scored without loading it. Segmentation metrics threshold probability maps at --threshold and need label volumes holding only 0, 1 and the ignore label.

    topology counts features per tile of the leaderboard's 2x2x2 tiles and sums them before the F1s (JSON topology_counts); betti is the whole volume's. score = 0.30 topology + 0.35 surface_dice + 0.35 / (1 + 0.3 voi); voi is in bits, over the union foreground of the 26-connected components. topology_f1 is the F1 per Betti dimension (b0 components, b1 tunnels, b2 cavities; - where neither side has any); voi_split (H(P|G), false splits) + voi_merge (H(G|P), false merges) = voi.
    """
    from volseg.metrics.evaluate import evaluate
    from volseg.metrics.preview import Preview

    guard_json(json, inputs=[pred, gt, image], outputs=[preview])
    remote.setup(inputs=[pred, gt, image], outputs=[json, preview])
    pred, gt, image = (remote.at_level(v) for v in (pred, gt, image))
    values = evaluate(pred, gt, metrics=metrics, threshold=threshold, tolerance=tolerance, ignore_label=ignore_label,
                      data_range=data_range, block=block, execution=execution, image=image,
                      preview=None if preview is None else Preview(preview, slice_), nan_value=nan_value)
    emit_json(values, json)
    _print_table(values, preview, quiet=execution.quiet or json == "-")


def _print_table(values: dict[str, Any], preview: str | None, *, quiet: bool) -> None:
    from rich.table import Table

    table = Table(title="volseg evaluate")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in values.items():
        if name == "betti":
            text = (f"pred {tuple(value['pred'])}  truth {tuple(value['truth'])}")
        elif name == "topology_counts":
            text = (f"matched {tuple(value['matched'])} of pred {tuple(value['pred'])}, "
                    f"truth {tuple(value['truth'])} in {'x'.join(map(str, value['tiles']))} tiles")
        elif name == "topology_f1":
            text = "  ".join(f"b{k} {'-' if f is None else f'{f:.4f}'}" for k, f in enumerate(value))
        elif name == "betti_matching":
            text = (f"{value['topology']:.4f} (matched {tuple(value['matched'])} of pred "
                    f"{tuple(value['pred'])}, truth {tuple(value['truth'])})")
        elif name == "psnr":
            text = f"{value:.3f} dB"
        else:
            text = f"{value:.4f}"
        table.add_row(name, text)
    out = console(quiet)
    out.print(table)
    if preview:
        out.print(f"preview: {preview}")
