"""``volseg postprocess``: streamed clean-up of a prediction volume into uint8 labels (library:
:func:`volseg.postprocess.postprocess`)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from volseg.cli._app import app
from volseg.cli._bundles import EXECUTION, Bundle, bundled
from volseg.cli._common import ChunksOpt, JsonOpt, done, guard_json, local_output

_ELEMENT = "R|Z,Y,X|box:Z,Y,X"

#: The cleaning options, as given (the library validates them against the input's dtype).
CLEANING = Bundle((
    ("threshold", Annotated[Optional[float], typer.Option(
        "--threshold", help="Foreground where value >= T (float input default 0.5; integer: > 0).")], None),
    ("hysteresis", Annotated[Optional[str], typer.Option(
        "--hysteresis", metavar="LOW,HIGH",
        help="Keep weak (> LOW) 26-connected components that hold a strong (> HIGH) voxel.")], None),
    ("smooth", Annotated[Optional[float], typer.Option(
        "--smooth", metavar="SIGMA", help="Gaussian filter (sigma in voxels) of a probability map before the "
        "threshold: evens out voxel noise at sheet boundaries (float input default 1.0; 0 = off).")], None),
    ("close", Annotated[Optional[str], typer.Option(
        "--close", metavar=_ELEMENT, help="Binary closing of the kept components with a ball of "
        "radius R, an ellipsoid of radii Z,Y,X or a box of odd sides: closes holes through sheets up to "
        "~2R voxels (default 1,0,0: a line of 3 voxels along z; 0 = off).")], None),
    ("open", Annotated[Optional[str], typer.Option(
        "--open", metavar=_ELEMENT, help="Binary opening of the kept components before the "
        "closing, same forms: cuts bridges and spurs thinner than the element (default 1,0,0: bridges between "
        "wraps of a scroll rolled around z; 0 = off).")], None),
    ("plug_holes", Annotated[Optional[bool], typer.Option(
        "--plug-holes/--no-plug-holes", help="Plug one-voxel holes through sheets by a 2x2x2 lookup table, "
        "after the closing (default off).")], None),
    ("fill_sheet_holes", Annotated[Optional[str], typer.Option(
        "--fill-sheet-holes", metavar="N", help="Fill holes of at most N voxels of area through a sheet along "
        "its interpolated height map, after the plugging; never where two wraps meet the hole "
        "(default 0 = off).")], None),
    ("min_size", Annotated[Optional[int], typer.Option(
        "--min-size", help="Remove 26-connected components of fewer voxels, whole volume (default 200; 0 = off).")],
     None),
    ("fill_holes", Annotated[Optional[int], typer.Option(
        "--fill-holes", help="Fill cavities (6-connected background not touching the border) of at most N "
        "voxels, and 2D holes of at most N pixels in every z, y and x slice (default 16; 0 = off).")], None),
    ("fill_cavities", Annotated[Optional[int], typer.Option(
        "--fill-cavities", metavar="M", help="Then fill the cavities of at most M voxels of the hole-filled "
        "mask (slice holes can enclose new ones; default 0 = off).")], None),
    ("roi", Annotated[Optional[str], typer.Option(
        "--roi", metavar="Z0:Z1,Y0:Y1,X0:X1", help="Post-process only this box (voxels, half-open, as predict "
        "--roi): the labels of the prediction with every voxel outside the box read as 0, kept inside the box; "
        "0 outside, and only the chunks in the box are written.")], None),
), lambda **values: values)

ReportOpt = Annotated[Optional[str], typer.Option(
    "--topology-report", metavar="PATH", callback=local_output,
    help="Write a JSON list of the output chunks that, each taken alone, still hold tunnels (b1) or "
    "cavities (b2), with their z, y, x voxel coordinates, Euler characteristic and Betti numbers.")]


@app.command("postprocess")
@bundled(cleaning=CLEANING, execution=EXECUTION)
def postprocess_command(
    pred: Annotated[str, typer.Argument(help="Prediction volume: probabilities (float) or labels (integer).")],
    output: Annotated[str, typer.Option("--output", "-o", callback=local_output, help="Output OME-Zarr uint8 labels.")],
    topology_report: ReportOpt = None, chunks: ChunksOpt = "128", json_out: JsonOpt = None,
    *, cleaning: dict, execution,
) -> None:
    """Smooth and threshold a prediction, remove small components, open/close, fill small holes; streamed.

    Examples:

      volseg postprocess pred.zarr -o clean.zarr

      volseg postprocess prob.zarr -o clean.zarr --hysteresis 0.3,0.7 --smooth 0 --min-size 500 --fill-holes 0

      volseg postprocess prob.zarr -o clean.zarr --part 2/8 --scheduler processes

      volseg postprocess pred.zarr -o clean.zarr --open 0 --close 0   # as before the repairs

      volseg postprocess pred.zarr -o clean.zarr --plug-holes --topology-report left.json

      volseg postprocess roi.zarr -o clean.zarr --roi 1000:1512,2000:2512,:   # the box of predict --roi
    """
    from volseg.postprocess import postprocess

    guard_json(json_out, inputs=[pred], outputs=[output, topology_report])
    result = postprocess(pred, output, chunks=chunks, topology_report=topology_report, execution=execution,
                         **cleaning)
    done(result, json_out, _line(result), quiet=execution.quiet)


def _line(result: dict) -> str:
    line = (f"wrote {result['output']} in {result['seconds']:.1f} s: {result['components_removed']} of "
            f"{result['components']} components removed, {result['cavities_filled']} cavities filled")
    if "topology_report" in result:
        t = result["topology_report"]
        line += (f"\ntopology check: {t['tunnels']} tunnels in {t['blocks_with_tunnels']} chunks, {t['cavities']} "
                 f"cavities in {t['blocks_with_cavities']} chunks: {t['path']}")
    return line
