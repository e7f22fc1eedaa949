"""The ``volseg`` command line: a Typer app whose commands live one group per module.

Each command module registers its commands on :data:`app` when imported below. Command modules
import only typer/rich/stdlib at module level, so ``volseg --help`` is fast.
"""

from __future__ import annotations

from volseg.cli._app import app  # the Typer app the command modules register on


# Command modules register their commands on `app` when imported, in pipeline order.
from volseg.cli import prepare_cmd  # noqa: E402,F401  prepare
from volseg.cli import info_cmd  # noqa: E402,F401  info
from volseg.cli import synth_cmd  # noqa: E402,F401  synth scroll|scan
from volseg.cli import patchify_cmd  # noqa: E402,F401  patchify
from volseg.cli import train_cmd  # noqa: E402,F401  train
from volseg.cli import predict_cmd  # noqa: E402,F401  predict
from volseg.cli import stitch_cmd  # noqa: E402,F401  stitch
from volseg.cli import export_cmd  # noqa: E402,F401  export
from volseg.cli import evaluate_cmd  # noqa: E402,F401  evaluate
from volseg.cli import postprocess_cmd  # noqa: E402,F401  postprocess
from volseg.cli import bench_cmd  # noqa: E402,F401  bench-memory
from volseg.cli import demo_cmd  # noqa: E402,F401  demo


def main() -> None:
    """Console-script entry point: tunes the allocator (:mod:`volseg.allocator`), then runs the app."""
    from volseg.allocator import tune

    tune()  # before any worker thread allocates: glibc fixes its arena limit then
    app()
