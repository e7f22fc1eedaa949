"""``volseg demo``: the whole journey on a synthetic scroll, with a rich summary."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from volseg.cli._app import app
from volseg.cli._bundles import bundled
from volseg.cli._common import JsonOpt, QuietOpt, WorkersOpt, console, emit_json, guard_json, local_output

_SCORES = (("dice", "Dice"), ("surface_dice", "Surface Dice (tol 2)"), ("voi", "VOI (bits, lower is better)"),
           ("topology", "Topology score"), ("score", "Leaderboard-style score"))

#: Rows from ``evaluate``'s ``betti_matching`` object (the exact leaderboard topology).
_BETTI_MATCHING = (("betti_matching.topology", "Topology (Betti matching)"),
                   ("betti_matching.score", "Score with Betti matching"))


def _score(scores: dict, key: str):
    """``scores[key]``, or ``scores[a][b]`` for a dotted key; None where absent."""
    value = scores
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


@app.command()
@bundled()
def demo(
    out: Annotated[str, typer.Option("--out", "-o", callback=local_output,
                                     help="Folder for all outputs (replaced).")] = "volseg-demo",
    shape: Annotated[Optional[int], typer.Option(help="Side of the synthetic scroll (default 160; --fast 64).")] = None,
    fast: Annotated[bool, typer.Option("--fast", help="A tiny version of the same journey (seconds).")] = False,
    steps: Annotated[Optional[int], typer.Option(help="Training steps (default 200; --fast 30).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of data, sampling, initialisation.")] = 0,
    workers: WorkersOpt = None,
    quiet: QuietOpt = False,
    json_out: JsonOpt = None,
) -> None:
    """Synthesise a scroll, patchify, train UNet3D (--amp --checkpoint), predict + stitch, post-process, evaluate.

    Examples:

        volseg demo                      # about 5 minutes on 2 CPU cores

        volseg demo --fast --out /tmp/d  # the same journey in under a minute

        volseg demo --quiet --json -     # only the summary, as JSON
    """
    from volseg.demo import run_demo

    out_console = console(quiet or json_out == "-")

    def on_stage(name: str, seconds: float) -> None:
        out_console.print(f"[green]done[/green] {name:<9} {seconds:7.1f} s")

    guard_json(json_out, outputs=[out])
    summary = run_demo(out, shape=shape, fast=fast, seed=seed, steps=steps, workers=workers,
                       quiet=quiet or json_out == "-", on_stage=on_stage)
    _print_summary(out_console, summary)
    emit_json(summary, json_out)


def _print_summary(out_console, summary: dict) -> None:
    from rich.table import Table

    scores = Table(title="volseg demo: scores against the synthetic truth", show_header=True)
    scores.add_column("metric")
    raw = summary.get("raw_scores") or summary["scores"]
    if raw is not summary["scores"]:
        scores.add_column("raw", justify="right")
    scores.add_column("post-processed" if raw is not summary["scores"] else "value", justify="right")
    for key, label in _SCORES + _BETTI_MATCHING:
        value = _score(summary["scores"], key)
        if value is not None:
            values = [value] if raw is summary["scores"] else [_score(raw, key), value]
            scores.add_row(label, *("-" if v is None else f"{v:.4f}" for v in values))
    times = Table(title="time per stage", show_header=True)
    times.add_column("stage")
    times.add_column("seconds", justify="right")
    for stage, seconds in summary["seconds"].items():
        times.add_row(stage, f"{seconds:.1f}")
    out_console.print(scores)
    out_console.print(times)
    paths = summary["paths"]
    out_console.print(f"scroll      {paths['scroll']}  (labels: {paths['labels']})")
    out_console.print(f"model       {paths['run']}/model.pt")
    out_console.print(f"prediction  {paths['prediction']}")
    if "postprocessed" in paths:
        out_console.print(f"labels      {paths['postprocessed']}  (volseg postprocess)")
    out_console.print(f"preview     {paths['preview']}")
    out_console.print(f"scores      {paths['scores']}")
