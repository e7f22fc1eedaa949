"""The ``volseg`` command line: a Typer app whose commands live one group per module.

Each command module registers its commands on :data:`app` when imported below. Command modules
import only typer/rich/stdlib at module level, so ``volseg --help`` is fast.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="volseg",
    help="Out-of-core 3D volume segmentation and translation: prepare, patchify, train, "
    "predict, stitch, evaluate. Run `volseg demo` for the whole journey on synthetic data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True),
) -> None:
    if version:
        from importlib.metadata import version as _v

        typer.echo(_v("volseg"))
        raise typer.Exit(0)


# Command modules (each adds its commands to `app`). Keep in pipeline order.
# (each command module appends its own import line here)


def main() -> None:
    """Console-script entry point."""
    app()
