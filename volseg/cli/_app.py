"""The root Typer app (``volseg``); command modules register their commands on :data:`app`.

Kept apart from ``volseg/cli/__init__.py`` (which imports the command modules) so that no
command module imports the package that imports it.
"""

from __future__ import annotations

import typer

from volseg.cli._usage import VolsegGroup

app = typer.Typer(
    cls=VolsegGroup,
    name="volseg",
    help="Out-of-core 3D volume segmentation and translation: prepare, patchify, train, "
    "predict, stitch, evaluate. Run `volseg demo` for the whole journey on synthetic data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version as _v

        typer.echo(_v("volseg"))
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit.",
                                 is_eager=True, callback=_print_version),
) -> None:
    """Out-of-core 3D volume segmentation and translation."""
