"""``volseg patchify``: cut a volume (and its labels) into a patch store."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from volseg.cli._app import app
from volseg.cli._bundles import EXECUTION, REMOTE, Bundle, bundled
from volseg.cli._common import JsonOpt, done, guard_json, local_output


def _grid(**values):
    from volseg.data.patchify_request import PatchGrid

    return PatchGrid(**values)


#: The options that shape the patches -> :class:`volseg.data.patchify_request.PatchGrid`.
GRID = Bundle((
    ("patch", Annotated[str, typer.Option("--patch", help="Patch size: 64 or DxHxW (voxels).")], "64"),
    ("stride", Annotated[Optional[str], typer.Option(
        "--stride", help="Grid step: N or DxHxW, each side in [1, patch] (default: the patch).")], None),
    ("samples", Annotated[Optional[int], typer.Option(
        "--samples", help="Random mode: this many patches at seeded random positions.")], None),
    ("foreground_fraction", Annotated[Optional[float], typer.Option(
        "--foreground-fraction", help="Random mode: share of patches that contain label 1, in [0, 1].")], None),
    ("seed", Annotated[int, typer.Option("--seed", min=0, help="Seed of the random positions.")], 0),
    ("pad", Annotated[bool, typer.Option("--pad", help="Allow a patch larger than the volume (zero padding).")], False),
), _grid)

VolumeArg = Annotated[Optional[str], typer.Argument(
    help="Volume: TIFF, slice folder, .npy, NIfTI, Zarr or OME-Zarr (or use --images/--list).")]
StoreOpt = Annotated[str, typer.Option("--output", "-o", callback=local_output, help="Patch store to write (PATCHES.zarr).")]
LabelsOpt = Annotated[Optional[str], typer.Option(
    "--labels", help="Label volume (uint8 0/1/2, same shape). Default: the image group's NGFF labels. "
    "With --images: the folder of label volumes.")]
ImagesOpt = Annotated[Optional[str], typer.Option(
    "--images", metavar="DIR", help="Folder of image volumes, paired with --labels DIR by file name.")]
ListOpt = Annotated[Optional[str], typer.Option(
    "--list", metavar="PAIRS.csv|yml", help="CSV rows `image,label` or YAML list of {image, label}.")]
PerVolumeOpt = Annotated[bool, typer.Option("--per-volume", help="With --images/--list: one store per pair, -o is a folder.")]


@app.command("patchify", epilog=(
    "Examples:\n\n"
    "  volseg patchify scroll.tif -o patches.zarr --patch 64\n\n"
    "  volseg patchify scroll.zarr -o patches.zarr --patch 32x64x64 --stride 16x32x32\n\n"
    "  volseg patchify scroll.zarr -o train.zarr --samples 2000 --foreground-fraction 0.5 --seed 1\n\n"
    "  volseg patchify scan.tif --labels labels.tif -o p.zarr --part 2/8 --scheduler processes\n\n"
    "  volseg patchify --images imagesTr/ --labels labelsTr/ -o train.zarr --patch 64\n\n"
    "  volseg patchify --list pairs.csv -o stores/ --per-volume --samples 200"))
@bundled(grid=GRID, execution=EXECUTION, remote=REMOTE)
def patchify_cmd(volume: VolumeArg = None, output: StoreOpt = ..., labels: LabelsOpt = None, images: ImagesOpt = None,
                 list_file: ListOpt = None, per_volume: PerVolumeOpt = False, json: JsonOpt = None,
                 *, grid, execution, remote) -> None:
    """Cut 3D patches from VOLUME into a patch store: a grid (--patch, --stride) or random,
    label-balanced samples (--samples, --foreground-fraction).

    Labels default to the first NGFF label image of an OME-Zarr VOLUME (volseg synth scroll),
    targets to VOLUME/target (volseg synth scan). A killed run resumes when rerun with the same
    options; --part I/N runs share one store and must all use the same options.
    """
    from volseg.data.patchify_request import patchify_request

    guard_json(json, inputs=[volume, labels], outputs=[output])
    remote.setup(inputs=[volume, labels, images, list_file], outputs=[output, json])
    summary = patchify_request(volume, output, labels=labels, images=images, list_file=list_file,
                               per_volume=per_volume, grid=grid, execution=execution, level=remote.level)
    done(summary, json, _line(summary, output, grid, execution.part), quiet=execution.quiet)


def _line(summary: dict, output: str, grid, part) -> str:
    """The summary line: patches written, and how close random sampling came to the foreground share."""
    if "volumes" in summary:
        return f"wrote {summary['patches']} patches of {summary['volumes']} volumes to {output}"
    share, asked = summary.get("foreground_fraction_actual"), grid.foreground_fraction
    extra = "" if share is None else f", {share:.1%} contain label 1"
    if share is not None and asked is not None and abs(share - asked) > 0.05:
        extra += (f" (asked for {asked:.0%}: the labels are too dense for patches without "
                  "label 1 of this size)" if share > asked else f" (asked for {asked:.0%})")
    done_part = f" (part {part[0] + 1}/{part[1]})" if part else ""
    return (f"wrote {summary['patches']} {summary['mode']} patches of {'x'.join(map(str, summary['patch']))} "
            f"to {summary.get('output', output)}{done_part}{extra}")
