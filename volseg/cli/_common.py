"""Conventions shared by every command: options, exit codes, error lines, JSON output.

Exit codes: 0 success, 2 bad usage or bad input (one ``error: <path>: <what>`` line on stderr,
no traceback unless ``--debug``), 1 internal failure, 130 interrupted.
Only typer, rich and the standard library are imported here so ``--help`` stays fast.
"""

from __future__ import annotations

import contextlib
import sys
import traceback
from typing import Annotated, Any, Iterator, Optional

import typer

def local_output(value: str | None) -> str | None:
    """Typer callback of every output option (``-o``, ``--json``, ``--preview``, ...): a
    ``file://`` URL becomes the local path it names, once, at the command boundary, so every
    local guard, lock, atomic rename and completion marker applies to it
    (:func:`volseg.io.identity.local_path`). Anything else passes unchanged."""
    if not (isinstance(value, str) and value[:7].lower() == "file://"):
        return value
    from volseg.errors import VolsegError
    from volseg.io.identity import local_path

    try:
        return local_path(value)
    except VolsegError as exc:
        raise typer.BadParameter(exc.message) from None


QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or tables.")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")]
JsonOpt = Annotated[Optional[str], typer.Option(
    "--json", metavar="PATH", callback=local_output,
        help="Write the figures as one JSON object to PATH ('-' = stdout).")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")]
SchedulerOpt = Annotated[str, typer.Option(
    "--scheduler", metavar="NAME",
    help="threads, processes, distributed (a local cluster) or tcp://HOST:PORT (an existing Dask cluster).")]
WorkersOpt = Annotated[Optional[int], typer.Option(
    "--workers", min=1, help="Worker threads/processes (default: all cores).")]
PartOpt = Annotated[Optional[str], typer.Option(
    "--part", metavar="I/N", help="Run only part I of N of the blocks (job arrays; I is 1-based).")]
NanValueOpt = Annotated[Optional[float], typer.Option(
    "--nan-value", metavar="V",
    help="Read NaN/Inf voxels of float inputs as V and warn with their count (default: refuse them).")]
ChunksOpt = Annotated[str, typer.Option(
    "--chunks", help="Output chunk size (N or ZxYxX); one task per chunk.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]


def fail(message: str, code: int = 2) -> "typer.Exit":
    """Print ``error: <message>`` on stderr and return the exit to raise."""
    print(f"error: {message}", file=sys.stderr)
    return typer.Exit(code)


@contextlib.contextmanager
def cli_errors(debug: bool = False, *, rank_zero: bool = False) -> Iterator[None]:
    """Turn library errors into the CLI's exit codes at the command boundary.

    ``VolsegError`` -> exit 2 with its one-line message; ``KeyboardInterrupt`` -> 130;
    any other exception -> exit 1 (``error: internal: ...``), with the traceback under ``--debug``.
    ``rank_zero`` (``volseg train``): under torchrun/srun only rank 0 prints the error line, the
    other ranks exit with the same code silently, a few seconds later (every rank checks the
    same input, and torchrun stops all ranks once one has exited).
    """
    from volseg.errors import VolsegError

    if debug:  # log lines of the library (e.g. retried remote requests) on stderr
        import logging

        logging.basicConfig(format="%(name)s: %(message)s")
        logging.getLogger("volseg").setLevel(logging.DEBUG)
    try:
        yield
    except typer.Exit:
        raise
    except VolsegError as exc:
        if debug:
            traceback.print_exc()
        if rank_zero and _secondary_rank(exc):
            import time

            from volseg.ddp_env import secondary_exit_delay

            time.sleep(secondary_exit_delay())  # let rank 0 print before torchrun stops it
            raise typer.Exit(2) from None
        raise fail(str(exc), 2) from None
    except OSError as exc:  # permissions, a full disk, a read-only folder: the user's to fix
        from volseg.io.outputs import is_user_os_error, os_error

        if debug:
            traceback.print_exc()
        if not is_user_os_error(exc):
            raise fail(_internal(exc), 1) from None
        raise fail(str(os_error(exc)), 2) from None
    except KeyboardInterrupt:
        raise fail("interrupted; rerun the same command to resume", 130) from None
    except Exception as exc:  # an internal failure: say so, keep the traceback for --debug
        if debug:
            traceback.print_exc()
        raise fail(_internal(exc), 1) from None


def _internal(exc: BaseException) -> str:
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return f"internal: {text} (rerun with --debug for the traceback)"


def guard_json(dest: str | None, *, inputs=(), outputs=()) -> None:
    """Before any work: refuse a ``--json`` PATH that is an input or output of the command, or an
    existing file that is not JSON (see :func:`volseg.io.outputs.guard_output`)."""
    if dest is not None:
        from volseg.io.outputs import guard_output

        guard_output(dest, inputs=inputs, outputs=outputs, kind="json", option="--json")


def _secondary_rank(exc: Exception) -> bool:
    """True in ranks other than 0 of a distributed launch, for errors every rank shares."""
    from volseg.ddp_env import RankError, is_secondary_rank

    return is_secondary_rank() and not isinstance(exc, RankError)


def emit_json(obj: Any, dest: str | None) -> None:
    """Write ``obj`` as one JSON object to ``dest`` (a path, or '-' for stdout); None: nothing."""
    if dest is not None:
        from volseg.jsonout import write_json

        write_json(obj, dest)


def done(result: Any, json_out: str | None, summary: str, *, quiet: bool = False) -> None:
    """A command's ending: ``result`` as JSON to ``--json`` (if given), then the one-line ``summary``
    on stdout unless ``--quiet`` or the JSON goes to stdout."""
    emit_json(result, json_out)
    console(quiet or json_out == "-").print(summary, soft_wrap=True)


def wrote(result: dict) -> str:
    """``wrote OUT in S s``, with how many blocks a resumed run found done (predict, stitch)."""
    before = result.get("chunks_done_before", result.get("groups_done_before", 0))
    return (f"wrote {result['output']} in {result.get('seconds', 0):.1f} s"
            + (f" (resumed: {before} blocks were already done)" if before else ""))


def console(quiet: bool = False):
    """A rich Console on stdout for tables and summaries (quiet: one that prints nothing)."""
    from rich.console import Console

    return Console(quiet=quiet, highlight=False)
