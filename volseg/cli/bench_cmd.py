"""``volseg bench-memory``: peak memory of a training step and of inference per patch size."""

from __future__ import annotations

import sys
from typing import Annotated, Any, Optional

import typer

from volseg.cli._app import app
from volseg.cli._bundles import bundled
from volseg.cli._common import DeviceOpt, JsonOpt, QuietOpt, console, emit_json, guard_json

_EPILOG = (
    "Examples:\n\n"
    "  volseg bench-memory --model unet --patch 32,64,96\n\n"
    "  volseg bench-memory --model unet --patch 64 --checkpoint --amp --budget 8GiB\n\n"
    "  volseg bench-memory --model diffusion --patch 32,64 --batch-size 2 --device cuda --json bench.json"
)


@app.command("bench-memory", epilog=_EPILOG)
@bundled()
def bench_memory_cmd(
    model: Annotated[str, typer.Option("--model", help="unet or diffusion (defaults of configs/*.yml).")] = "unet",
    patch: Annotated[str, typer.Option(
        "--patch", metavar="N,N,...", help="Cube patch sides in voxels, multiples of 2^depth "
        "(or one ZxYxX).")] = "32,64",
    amp: Annotated[Optional[bool], typer.Option(
        "--amp/--no-amp", help="Mixed precision only / never (default: both where amp pays off: CUDA, or a CPU with native bf16).")] = None,
    checkpoint: Annotated[Optional[bool], typer.Option(
        "--checkpoint/--no-checkpoint", help="Gradient checkpointing only / never (default: both).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Patches per step.")] = 1,
    budget: Annotated[Optional[str], typer.Option(
        "--budget", metavar="SIZE", help="Memory budget (8GiB, 512MB, 1.5G): report the largest "
        "patch that fits per combination.")] = None,
    device: DeviceOpt = "auto",
    json: JsonOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Peak memory of one training step (forward, backward, optimizer step) and of one inference step, for each patch size x amp off/on x checkpoint off/on (amp rows only where amp pays off: CUDA, or a CPU with native bf16; --amp forces them).

    On CUDA: torch.cuda.max_memory_allocated. On CPU: the bytes of the tensors saved for backward plus parameters, gradients and optimizer state, and the peak RSS of a fresh process per combination.
    """
    from volseg.bench.memory import bench_memory, parse_budget

    guard_json(json)
    parse_budget(budget)
    result = bench_memory(model=model, patches=patch, amp=amp, checkpoint=checkpoint,
                          batch_size=batch_size, budget=budget, device=device, quiet=quiet)
    emit_json(result, json)
    _print(result, quiet=quiet or json == "-")
    if not quiet:
        for note in result.get("notes", []):
            print(f"note: {note}", file=sys.stderr)


def _size(n: Any) -> str:
    if n is None:
        return "-"
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _print(result: dict, *, quiet: bool) -> None:
    from rich.table import Table

    cpu = result["device"] == "cpu"
    table = Table(title=f"volseg bench-memory ({result['device']})")
    for name in ("model", "patch", "amp", "ckpt", "activations", "train peak", "train s",
                 "infer peak" if not cpu else "infer RSS +", "infer s"):
        table.add_column(name, justify="left" if name in ("model", "patch") else "right")
    for row in result["rows"]:
        infer = row.get("infer_rss_bytes") if cpu else row.get("infer_peak_bytes")
        table.add_row(row["model"], "x".join(map(str, row["patch"])), "on" if row["amp"] else "off",
                      "on" if row["checkpoint"] else "off", _size(row["activation_bytes"]),
                      _size(row["peak_bytes"]), f"{row['seconds']:.2f}", _size(infer),
                      f"{row['infer_seconds']:.2f}")
    out = console(quiet)
    out.print(table)
    if result.get("budget"):
        budget = result["budget"]
        for fit in budget["fits"]:
            measured = "x".join(map(str, fit["measured"])) if fit["measured"] else "none measured"
            extra = "x".join(map(str, fit["extrapolated"])) if fit["extrapolated"] else "none"
            out.print(f"budget {_size(budget['bytes'])}: {fit['model']} amp {'on' if fit['amp'] else 'off'}, "
                      f"checkpoint {'on' if fit['checkpoint'] else 'off'}: largest measured patch "
                      f"{measured}, extrapolated {extra}")
