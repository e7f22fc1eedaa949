"""``volseg stitch``: blend a patch store of predictions into a volume (library: :func:`volseg.stitch`)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from volseg.cli._app import app
from volseg.cli._bundles import EXECUTION, OUTPUT, bundled
from volseg.cli._common import ChunksOpt, JsonOpt, done, guard_json, local_output, wrote


@app.command("stitch")
@bundled(output_options=OUTPUT, execution=EXECUTION)
def stitch_command(
    store: Annotated[str, typer.Argument(help="Patch store of predictions (from `volseg predict`).")],
    output: Annotated[str, typer.Option("--output", "-o", callback=local_output, help="Output OME-Zarr volume.")],
    blend: Annotated[Optional[str], typer.Option(
        "--blend", help="gaussian, hann, constant or crop (default: the store's, else gaussian).")] = None,
    chunks: ChunksOpt = "128",
    json_out: JsonOpt = None,
    *, output_options, execution,
) -> None:
    """Blend a patch store of predictions into a full volume, one task per output chunk.

    Examples:

      volseg stitch patches.zarr -o pred.zarr

      volseg stitch patches.zarr -o labels.zarr --blend crop --threshold 0.5 --part 1/4
    """
    from volseg.inference import stitch

    guard_json(json_out, inputs=[store], outputs=[output])
    result = stitch(store, output, blend=blend, chunks=chunks, output_options=output_options, execution=execution)
    done(result, json_out, wrote(result), quiet=execution.quiet)
