"""``volseg info``: describe a volume (library: :func:`volseg.io.info.volume_info`)."""

from __future__ import annotations

from typing import Annotated

import typer

from volseg.cli._app import app
from volseg.cli._bundles import REMOTE, bundled
from volseg.cli._common import JsonOpt, QuietOpt, console, emit_json, guard_json
from volseg.cli.prepare_cmd import ChannelOpt


@app.command("info", epilog="Examples:\n\n  volseg info scroll.zarr\n\n  volseg info scan.nii.gz --json -")
@bundled(remote=REMOTE)
def info_cmd(
    volume: Annotated[str, typer.Argument(help="Any volume volseg reads (TIFF, folder, npy, NIfTI, Zarr).")],
    channel: ChannelOpt = None,
    quiet: QuietOpt = False,
    json: JsonOpt = None,
    *, remote,
) -> None:
    """Shape, dtype, chunks, levels, spacing and value range (sampled for large volumes)."""
    from volseg.io.info import volume_info

    guard_json(json, inputs=[volume])
    remote.setup(inputs=[volume], outputs=[json])
    info = volume_info(remote.at_level(volume), channel=channel)
    emit_json(info, json)
    if not (quiet or json == "-"):
        console().print(_table(info))


def _table(info: dict):
    """The rich table ``volseg info`` prints (lists joined with x, sampled ranges marked)."""
    from rich.table import Table

    table = Table(title=info["path"], show_header=False)
    for key, value in info.items():
        if key == "path":
            continue
        if key in ("min", "max") and info["range_sampled"]:
            key = f"{key} (sampled)"
        if isinstance(value, dict):  # made_by: the provenance of a prediction, one line per entry
            import json

            from rich.markup import escape

            value = escape("\n".join(f"{k}: {json.dumps(v)}" for k, v in value.items()))
        elif isinstance(value, list):
            value = " x ".join(map(str, value)) if key != "level_shapes" else \
                ", ".join("x".join(map(str, s)) for s in value)
        table.add_row(key, str(value))
    return table
