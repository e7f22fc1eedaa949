"""``volseg patchify``: cut a volume (and its labels) into a patch store."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from volseg.cli._app import app
from volseg.cli._remote import CacheOpt, CacheSizeOpt, LevelOpt, StorageOpt, at_level, remote_setup
from volseg.cli._common import (DebugOpt, JsonOpt, OverwriteOpt, PartOpt, QuietOpt, SchedulerOpt, WorkersOpt,
                                cli_errors, console, emit_json, guard_json, local_output)


@app.command("patchify", epilog=(
    "Examples:\n\n"
    "  volseg patchify scroll.tif -o patches.zarr --patch 64\n\n"
    "  volseg patchify scroll.zarr -o patches.zarr --patch 32x64x64 --stride 16x32x32\n\n"
    "  volseg patchify scroll.zarr -o train.zarr --samples 2000 --foreground-fraction 0.5 --seed 1\n\n"
    "  volseg patchify scan.tif --labels labels.tif -o p.zarr --part 2/8 --scheduler processes\n\n"
    "  volseg patchify --images imagesTr/ --labels labelsTr/ -o train.zarr --patch 64\n\n"
    "  volseg patchify --list pairs.csv -o stores/ --per-volume --samples 200"))
def patchify_cmd(
    volume: Annotated[Optional[str], typer.Argument(
        help="Volume: TIFF, slice folder, .npy, NIfTI, Zarr or OME-Zarr (or use --images/--list).")] = None,
    output: Annotated[str, typer.Option("--output", "-o", callback=local_output,
                                        help="Patch store to write (PATCHES.zarr).")] = ...,
    labels: Annotated[Optional[str], typer.Option(
        "--labels", help="Label volume (uint8 0/1/2, same shape). Default: the image group's NGFF labels. "
        "With --images: the folder of label volumes.")] = None,
    images: Annotated[Optional[str], typer.Option(
        "--images", metavar="DIR", help="Folder of image volumes, paired with --labels DIR by file name.")] = None,
    list_file: Annotated[Optional[str], typer.Option(
        "--list", metavar="PAIRS.csv|yml", help="CSV rows `image,label` or YAML list of {image, label}.")] = None,
    per_volume: Annotated[bool, typer.Option(
        "--per-volume", help="With --images/--list: one store per pair, -o is a folder.")] = False,
    patch: Annotated[str, typer.Option("--patch", help="Patch size: 64 or DxHxW (voxels).")] = "64",
    stride: Annotated[Optional[str], typer.Option(
        "--stride", help="Grid step: N or DxHxW, each side in [1, patch] (default: the patch).")] = None,
    samples: Annotated[Optional[int], typer.Option(
        "--samples", help="Random mode: this many patches at seeded random positions.")] = None,
    foreground_fraction: Annotated[Optional[float], typer.Option(
        "--foreground-fraction", help="Random mode: share of patches that contain label 1, in [0, 1].")] = None,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seed of the random positions.")] = 0,
    pad: Annotated[bool, typer.Option("--pad", help="Allow a patch larger than the volume (zero padding).")] = False,
    scheduler: SchedulerOpt = "threads",
    workers: WorkersOpt = None,
    part: PartOpt = None,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
    json: JsonOpt = None,
    level: LevelOpt = None,
    storage_options: StorageOpt = None,
    cache: CacheOpt = None,
    cache_size: CacheSizeOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Cut 3D patches from VOLUME into a patch store: a grid (--patch, --stride) or random,
    label-balanced samples (--samples, --foreground-fraction).

    Labels default to the first NGFF label image of an OME-Zarr VOLUME (volseg synth scroll),
    targets to VOLUME/target (volseg synth scan). A killed run resumes when rerun with the same
    options; --part I/N runs share one store and must all use the same options.
    """
    with cli_errors(debug):
        guard_json(json, inputs=[volume, labels], outputs=[output])
        from volseg.data.patchify import patchify
        from volseg.data.patchstore import store_summary
        from volseg.errors import VolsegError
        from volseg.parallel import Execution

        remote_setup(storage_options, cache, cache_size, inputs=[volume, labels, images, list_file],
                     outputs=[output, json])
        from volseg.io.completion import check_complete

        if images is None and list_file is None:  # -o before any input is opened (URLs are read)
            from volseg.io.outputs import guard_output

            guard_output(output, inputs=[volume, labels], kind="patches", overwrite=overwrite)
        if level is not None:  # the store itself; the library checks the level array and the labels
            check_complete(volume)
        execution = Execution.parse(scheduler=scheduler, workers=workers, part=part, overwrite=overwrite, quiet=quiet)
        if images is not None or list_file is not None:
            from volseg.data.patchify_many import patchify_many_cli

            summary = patchify_many_cli(
                volume, images=images, labels=labels, list_file=list_file, out=output,
                per_volume=per_volume, execution=execution, patch=patch, stride=stride, samples=samples,
                foreground_fraction=foreground_fraction, seed=seed, pad=pad)
            emit_json(summary, json)
            console(quiet or json == "-").print(
                f"wrote {summary['patches']} patches of {summary['volumes']} volumes to {output}")
            return
        if volume is None:
            raise VolsegError("VOLUME", "missing; give a volume, or --images DIR --labels DIR, or --list FILE")
        if per_volume:
            raise VolsegError("--per-volume", "applies to --images/--list only")
        out = patchify(at_level(volume, level), out=output, labels=labels, patch=patch, stride=stride, samples=samples,
                       foreground_fraction=foreground_fraction, seed=seed, pad=pad, execution=execution,
                       command=_command_line(volume, output, labels, patch, stride, samples,
                                             foreground_fraction, seed, pad))
        summary = store_summary(out)
        emit_json(summary, json)
        share = summary.get("foreground_fraction_actual")
        extra = "" if share is None else f", {share:.1%} contain label 1"
        if share is not None and foreground_fraction is not None and abs(share - foreground_fraction) > 0.05:
            extra += (f" (asked for {foreground_fraction:.0%}: the labels are too dense for patches without "
                      "label 1 of this size)" if share > foreground_fraction else
                      f" (asked for {foreground_fraction:.0%})")
        done = f" (part {part})" if part else ""
        console(quiet or json == "-").print(
            f"wrote {summary['patches']} {summary['mode']} patches of {'x'.join(map(str, summary['patch']))} "
            f"to {out}{done}{extra}")


def _command_line(volume, output, labels, patch, stride, samples, fraction, seed, pad) -> str:
    """The producing command as recorded in the store (options that shape the patches)."""
    import shlex

    words = ["volseg", "patchify", volume, "-o", output, "--patch", patch]
    for flag, value in (("--labels", labels), ("--stride", stride), ("--samples", samples),
                        ("--foreground-fraction", fraction)):
        if value is not None:
            words += [flag, str(value)]
    if samples is not None:
        words += ["--seed", str(seed)]
    if pad:
        words.append("--pad")
    return shlex.join(str(w) for w in words)
