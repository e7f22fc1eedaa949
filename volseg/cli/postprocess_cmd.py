"""``volseg postprocess``: streamed clean-up of a prediction volume into uint8 labels."""

from __future__ import annotations

from typing import Annotated

import typer

from volseg.cli._app import app
from volseg.cli._common import (ChunksOpt, DebugOpt, JsonOpt, OverwriteOpt, PartOpt, QuietOpt, SchedulerOpt,
                                WorkersOpt, cli_errors, console, emit_json, guard_json, local_output)


@app.command("postprocess")
def postprocess_command(
    pred: Annotated[str, typer.Argument(help="Prediction volume: probabilities (float) or labels (integer).")],
    output: Annotated[str, typer.Option("--output", "-o", callback=local_output,
                                        help="Output OME-Zarr uint8 labels.")],
    threshold: Annotated[float | None, typer.Option(
        "--threshold", help="Foreground where value >= T (float input default 0.5; integer: > 0).")] = None,
    hysteresis: Annotated[str | None, typer.Option(
        "--hysteresis", metavar="LOW,HIGH",
        help="Keep weak (> LOW) 26-connected components that hold a strong (> HIGH) voxel.")] = None,
    smooth: Annotated[float | None, typer.Option(
        "--smooth", metavar="SIGMA", help="Gaussian filter (sigma in voxels) of a probability map before the "
        "threshold: evens out voxel noise at sheet boundaries (float input default 1.0; 0 = off).")] = None,
    close: Annotated[str | None, typer.Option(
        "--close", metavar="R|Z,Y,X|box:Z,Y,X", help="Binary closing of the kept components with a ball of "
        "radius R, an ellipsoid of radii Z,Y,X or a box of odd sides: closes holes through sheets up to "
        "~2R voxels (default 1,0,0: a line of 3 voxels along z; 0 = off).")] = None,
    open_: Annotated[str | None, typer.Option(
        "--open", metavar="R|Z,Y,X|box:Z,Y,X", help="Binary opening of the kept components before the "
        "closing, same forms: cuts bridges and spurs thinner than the element (default 1,0,0: bridges between "
        "wraps of a scroll rolled around z; 0 = off).")] = None,
    plug_holes: Annotated[bool | None, typer.Option(
        "--plug-holes/--no-plug-holes", help="Plug one-voxel holes through sheets by a 2x2x2 lookup table, "
        "after the closing (default off).")] = None,
    min_size: Annotated[int | None, typer.Option(
        "--min-size", help="Remove 26-connected components of fewer voxels, whole volume (default 200; 0 = off).")] = None,
    fill_holes: Annotated[int | None, typer.Option(
        "--fill-holes", help="Fill cavities (6-connected background not touching the border) of at most N "
        "voxels, and 2D holes of at most N pixels in every z, y and x slice (default 16; 0 = off).")] = None,
    fill_cavities: Annotated[int | None, typer.Option(
        "--fill-cavities", metavar="M", help="Then fill the cavities of at most M voxels of the hole-filled "
        "mask (slice holes can enclose new ones; default 0 = off).")] = None,
    topology_report: Annotated[str | None, typer.Option(
        "--topology-report", metavar="PATH", callback=local_output,
        help="Write a JSON list of the output chunks that, each taken alone, still hold tunnels (b1) or "
        "cavities (b2), with their z, y, x voxel coordinates, Euler characteristic and Betti numbers.")] = None,
    chunks: ChunksOpt = "128",
    scheduler: SchedulerOpt = "threads",
    workers: WorkersOpt = None,
    part: PartOpt = None,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
    json_out: JsonOpt = None,
) -> None:
    """Smooth and threshold a prediction, remove small components, open/close, fill small holes; streamed.

    Examples:

      volseg postprocess pred.zarr -o clean.zarr

      volseg postprocess prob.zarr -o clean.zarr --hysteresis 0.3,0.7 --smooth 0 --min-size 500 --fill-holes 0

      volseg postprocess prob.zarr -o clean.zarr --part 2/8 --scheduler processes

      volseg postprocess pred.zarr -o clean.zarr --open 0 --close 0   # as before the repairs

      volseg postprocess pred.zarr -o clean.zarr --plug-holes --topology-report left.json
    """
    with cli_errors(debug):
        guard_json(json_out, inputs=[pred], outputs=[output, topology_report])
        from volseg.postprocess import postprocess

        result = postprocess(pred, output, threshold=threshold, hysteresis=hysteresis, smooth=smooth,
                             close=close, min_size=min_size, fill_holes=fill_holes, open=open_,
                             plug_holes=plug_holes, fill_cavities=fill_cavities,
                             topology_report=topology_report, chunks=chunks,
                             scheduler=scheduler, workers=workers,
                             part=part, overwrite=overwrite, quiet=quiet)
        emit_json(result, json_out)
        console(quiet or json_out == "-").print(
            f"wrote {result['output']} in {result['seconds']:.1f} s: {result['components_removed']} of "
            f"{result['components']} components removed, {result['cavities_filled']} cavities filled")
        if "topology_report" in result:
            t = result["topology_report"]
            console(quiet or json_out == "-").print(
                f"topology check: {t['tunnels']} tunnels in {t['blocks_with_tunnels']} chunks, {t['cavities']} "
                f"cavities in {t['blocks_with_cavities']} chunks: {t['path']}")
