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


# Command modules register their commands on `app` when imported, in pipeline order.
from volseg.cli import io_cmds  # noqa: E402,F401  prepare, info
from volseg.cli import synth_cmd  # noqa: E402,F401  synth scroll|scan
from volseg.cli import patchify_cmd  # noqa: E402,F401  patchify
from volseg.cli import train_cmd  # noqa: E402,F401  train
from volseg.cli import predict_cmd  # noqa: E402,F401  predict, stitch
from volseg.cli import evaluate_cmd  # noqa: E402,F401  evaluate
from volseg.cli import postprocess_cmd  # noqa: E402,F401  postprocess
from volseg.cli import bench_cmd  # noqa: E402,F401  bench-memory
from volseg.cli import demo_cmd  # noqa: E402,F401  demo


def main() -> None:
    """Console-script entry point."""
    app()
