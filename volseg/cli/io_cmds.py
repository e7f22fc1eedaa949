"""``volseg prepare`` and ``volseg info``: get volumes into chunked OME-Zarr and describe them."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from volseg.cli._app import app
from volseg.cli._remote import CacheOpt, CacheSizeOpt, LevelOpt, StorageOpt, at_level, remote_setup
from volseg.cli._common import (DebugOpt, JsonOpt, OverwriteOpt, QuietOpt, SchedulerOpt, WorkersOpt,
                                cli_errors, console, emit_json, guard_json, local_output)

ChannelOpt = Annotated[Optional[int], typer.Option(
    "--channel", min=0, help="Channel of a 4D input (4D NIfTI, (c, z, y, x) npy/Zarr).")]


@app.command("prepare", epilog=(
    "Examples:\n\n"
    "  volseg prepare scroll.tif -o scroll.zarr\n\n"
    "  volseg prepare slices/ -o scroll.zarr --chunks 64x128x128 --levels 3\n\n"
    "  volseg prepare brain.nii.gz -o brain.zarr --dtype float32 --overwrite"))
def prepare_cmd(
    input: Annotated[str, typer.Argument(
        help="Multi-page TIFF, folder of 2D TIFF slices, .npy, .nii/.nii.gz, Zarr or OME-Zarr.")],
    output: Annotated[str, typer.Option("--output", "-o", callback=local_output,
                                        help="OME-Zarr to write (OUT.zarr).")],
    chunks: Annotated[str, typer.Option("--chunks", help="Chunk size: 128 or ZxYxX (voxels).")] = "128",
    levels: Annotated[int, typer.Option("--levels", help="Pyramid levels (1 = full resolution only).")] = 1,
    dtype: Annotated[str, typer.Option("--dtype", help="keep, uint8, uint16, int16, float32, ...")] = "keep",
    channel: ChannelOpt = None,
    overwrite: OverwriteOpt = False,
    scheduler: SchedulerOpt = "threads",
    workers: WorkersOpt = None,
    quiet: QuietOpt = False,
    json: JsonOpt = None,
    level: LevelOpt = None,
    storage_options: StorageOpt = None,
    cache: CacheOpt = None,
    cache_size: CacheSizeOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Convert a volume to chunked OME-Zarr (Zarr v3, NGFF 0.5), streamed block by block.

    Values and dtype are kept exactly; voxel spacing is kept where the input records it.
    """
    with cli_errors(debug):
        guard_json(json, inputs=[input], outputs=[output])
        from volseg.io.prepare import prepare
        from volseg.parallel import Execution

        remote_setup(storage_options, cache, cache_size, inputs=[input], outputs=[output, json])
        summary = prepare(at_level(input, level), output, chunks=chunks, levels=levels, dtype=dtype, channel=channel,
                          execution=Execution.parse(scheduler=scheduler, workers=workers, overwrite=overwrite,
                                                    quiet=quiet))
        emit_json(summary, json)
        console(quiet or json == "-").print(
            f"wrote {summary['output']}: {'x'.join(map(str, summary['shape']))} {summary['dtype']}, "
            f"chunks {'x'.join(map(str, summary['chunks']))}, {summary['levels']} level(s), "
            f"from {summary['format']} in {summary['seconds']:.1f} s")


@app.command("info", epilog="Examples:\n\n  volseg info scroll.zarr\n\n  volseg info scan.nii.gz --json -")
def info_cmd(
    volume: Annotated[str, typer.Argument(help="Any volume volseg reads (TIFF, folder, npy, NIfTI, Zarr).")],
    channel: ChannelOpt = None,
    quiet: QuietOpt = False,
    json: JsonOpt = None,
    level: LevelOpt = None,
    storage_options: StorageOpt = None,
    cache: CacheOpt = None,
    cache_size: CacheSizeOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Shape, dtype, chunks, levels, spacing and value range (sampled for large volumes)."""
    with cli_errors(debug):
        guard_json(json, inputs=[volume])
        from volseg.io.info import volume_info

        remote_setup(storage_options, cache, cache_size, inputs=[volume], outputs=[json])
        info = volume_info(at_level(volume, level), channel=channel)
        emit_json(info, json)
        if quiet or json == "-":
            return
        from rich.table import Table

        table = Table(title=info["path"], show_header=False)
        for key, value in info.items():
            if key == "path":
                continue
            if key in ("min", "max") and info["range_sampled"]:
                key = f"{key} (sampled)"
            if isinstance(value, list):
                value = " x ".join(map(str, value)) if key != "level_shapes" else \
                    ", ".join("x".join(map(str, s)) for s in value)
            table.add_row(key, str(value))
        console().print(table)
