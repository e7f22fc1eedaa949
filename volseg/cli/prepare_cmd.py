"""``volseg prepare``: get a volume into chunked OME-Zarr (library: :func:`volseg.io.prepare.prepare`)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from volseg.cli._app import app
from volseg.cli._bundles import EXECUTION, REMOTE, bundled
from volseg.cli._common import JsonOpt, done, guard_json, local_output

ChannelOpt = Annotated[Optional[int], typer.Option(
    "--channel", min=0, help="Channel of a 4D input (4D NIfTI, (c, z, y, x) npy/Zarr).")]


@app.command("prepare", epilog=(
    "Examples:\n\n"
    "  volseg prepare scroll.tif -o scroll.zarr\n\n"
    "  volseg prepare slices/ -o scroll.zarr --chunks 64x128x128 --levels 3\n\n"
    "  volseg prepare brain.nii.gz -o brain.zarr --dtype float32 --overwrite"))
@bundled(execution=EXECUTION.only("scheduler", "workers", "overwrite", "quiet"), remote=REMOTE)
def prepare_cmd(
    input: Annotated[str, typer.Argument(
        help="Multi-page TIFF, folder of 2D TIFF slices, .npy, .nii/.nii.gz, Zarr or OME-Zarr.")],
    output: Annotated[str, typer.Option("--output", "-o", callback=local_output,
                                        help="OME-Zarr to write (OUT.zarr).")],
    chunks: Annotated[str, typer.Option("--chunks", help="Chunk size: 128 or ZxYxX (voxels).")] = "128",
    levels: Annotated[int, typer.Option("--levels", help="Pyramid levels (1 = full resolution only).")] = 1,
    dtype: Annotated[str, typer.Option("--dtype", help="keep, uint8, uint16, int16, float32, ...")] = "keep",
    channel: ChannelOpt = None,
    json: JsonOpt = None,
    *, execution, remote,
) -> None:
    """Convert a volume to chunked OME-Zarr (Zarr v3, NGFF 0.5), streamed block by block.

    Values and dtype are kept exactly; voxel spacing is kept where the input records it.
    """
    from volseg.io.prepare import prepare

    guard_json(json, inputs=[input], outputs=[output])
    remote.setup(inputs=[input], outputs=[output, json])
    summary = prepare(remote.at_level(input), output, chunks=chunks, levels=levels, dtype=dtype, channel=channel,
                      execution=execution)
    done(summary, json, f"wrote {summary['output']}: {'x'.join(map(str, summary['shape']))} {summary['dtype']}, "
         f"chunks {'x'.join(map(str, summary['chunks']))}, {summary['levels']} level(s), "
         f"from {summary['format']} in {summary['seconds']:.1f} s", quiet=execution.quiet)
