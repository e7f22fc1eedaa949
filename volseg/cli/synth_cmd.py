"""``volseg synth scroll``, ``scan`` and ``brain``: synthetic volumes with ground truth."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import typer

from volseg.cli._app import app
from volseg.cli._bundles import Bundle, bundled
from volseg.cli._common import JsonOpt, OverwriteOpt, QuietOpt, done, guard_json, local_output

synth_app = typer.Typer(
    help="Synthetic data with ground truth: a rolled scroll with surface labels, a paired "
    "degraded / clean scan, or multi-contrast head scans with tumour labels.",
    no_args_is_help=True,
)
app.add_typer(synth_app, name="synth")

OutputOpt = Annotated[str, typer.Option("--output", "-o", callback=local_output,
                                        help="OME-Zarr group to write (OUT.zarr).")]


def _shape(default: str) -> Bundle:
    """``--shape`` with this command's default, and the options every synth command shares."""
    return Bundle((("shape", Annotated[str, typer.Option("--shape", help="N (a cube) or DxHxW in voxels, sides >= 16.")],
                    default),
                   ("seed", Annotated[int, typer.Option("--seed", min=0, help="Random seed (same seed, same volume).")], 0),
                   ("chunks", Annotated[str, typer.Option("--chunks", help="Chunk size: 64 or ZxYxX (voxels).")], "64"),
                   ("overwrite", OverwriteOpt, False), ("quiet", QuietOpt, False), ("json", JsonOpt, None)),
                  SynthOptions)


@dataclass(frozen=True)
class SynthOptions:
    """The options of every ``volseg synth`` command, as given (the library validates them)."""

    shape: str
    seed: int = 0
    chunks: str = "64"
    overwrite: bool = False
    quiet: bool = False
    json: str | None = None

    def write(self, kind: str, output: str, **more) -> dict:
        """Guard ``--json``, then write the synthetic volume(s) of ``kind`` (``cases=`` for brain)."""
        guard_json(self.json, outputs=[output])
        if kind == "brain":
            from volseg.data.brain import write_brain

            return write_brain(output, shape=self.shape, seed=self.seed, chunks=self.chunks,
                               overwrite=self.overwrite, quiet=self.quiet, **more)
        from volseg.data.synth import synth_summary, write_synth

        return synth_summary(write_synth(kind, output, shape=self.shape, seed=self.seed, chunks=self.chunks,
                                         overwrite=self.overwrite, quiet=self.quiet))

    def done(self, summary: dict, line: str) -> None:
        done(summary, self.json, line, quiet=self.quiet)


def _line(kind: str, summary: dict) -> str:
    if kind == "brain":
        return (f"wrote {summary['output']}: {len(summary['cases'])} case(s) of "
                f"{'x'.join(map(str, summary['shape']))} (seed {summary['seed']}), T1 / T2 (target) / FLAIR "
                "and labels/tumour each")
    figure = (f"label 1 {summary['foreground_fraction']:.1%}, ignore {summary['ignore_fraction']:.1%}"
              if kind == "scroll" else f"degraded PSNR {summary['psnr_db']:.1f} dB")
    second = summary.get("labels") or summary.get("target")
    return (f"wrote {summary['output']} ({'x'.join(map(str, summary['shape']))}, seed {summary['seed']}) "
            f"and {second}: {figure}")


def _command(kind: str, shape: str, doc: str, examples: tuple[str, ...]):
    """Register ``volseg synth KIND``: one volume (and its labels or target) from the seed."""

    @synth_app.command(kind, help=doc, epilog="Examples:\n\n" + "\n\n".join(f"  {e}" for e in examples))
    @bundled(options=_shape(shape))
    def command(output: OutputOpt, *, options: SynthOptions) -> None:
        options.done(summary := options.write(kind, output), _line(kind, summary))

    return command


scroll_cmd = _command("scroll", "160", """A CT-like carbonised scroll: papyrus sheets rolled in a spiral, with surface labels.

    Writes the CT (uint8) as the root image of OUT.zarr and the labels at OUT.zarr/labels/surface.

    Labels (uint8): 0 background, 1 papyrus sheet, 2 ignore (sheet boundaries, touching sheets).
    """, ("volseg synth scroll -o scroll.zarr",
          "volseg synth scroll -o scroll.zarr --shape 96x128x128 --seed 3 --chunks 64 --overwrite",
          "volseg synth scroll -o small.zarr --shape 64 --json -"))
scan_cmd = _command("scan", "96", """A paired low-dose / clean scan of a 3D head phantom, for diffusion (image translation).

    Writes the degraded scan (float32) as the root image of OUT.zarr, the clean one at OUT.zarr/target.
    """, ("volseg synth scan -o scan.zarr", "volseg synth scan -o scan.zarr --shape 64x96x96 --seed 1 --json scan.json"))


@synth_app.command("brain", epilog=(
    "Examples:\n\n"
    "  volseg synth brain -o brain.zarr --cases 8\n\n"
    "  volseg train brain.zarr/case_00[0-6] --val brain.zarr/case_007 --model diffusion -o runs/t1t2"))
@bundled(options=_shape("64"))
def brain_cmd(
    output: OutputOpt,
    cases: Annotated[int, typer.Option("--cases", min=1, max=999, help="Cases (anatomies) to write.")] = 1,
    *, options: SynthOptions,
) -> None:
    """Multi-contrast head scans (BraTS in miniature): T1, T2 and FLAIR of one anatomy per case.

    Writes OUT.zarr/case_NNN for each case: T1 (float32) as the root image, T2 at case_NNN/target,
    FLAIR at case_NNN/flair and the tumour labels at case_NNN/labels/tumour (uint8: 0 none,
    1 necrotic core, 2 oedema, 3 enhancing tumour).
    """
    options.done(summary := options.write("brain", output, cases=cases), _line("brain", summary))
