"""Option bundles: options several commands share, defined once and handed over as one object.

A command declares the objects it wants as keyword-only parameters and the bundles that make
them in :func:`bundled`::

    @app.command("stitch")
    @bundled(execution=EXECUTION, output_options=OUTPUT)
    def stitch_command(store: ..., *, execution: Execution, output_options: OutputOptions): ...

The decorator replaces those parameters in the signature Typer reads by the bundle's options
(``--scheduler``, ``--workers``, ``--part``, ``--overwrite``, ``--quiet`` for :data:`EXECUTION`),
adds ``--debug``, and calls the command with the parsed object, inside
:func:`volseg.cli._common.cli_errors`, so a bad value is one ``error:`` line and exit 2.
Only typer and the standard library are imported here, so ``--help`` stays fast.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
from dataclasses import dataclass
from typing import Annotated, Any, Callable, Optional

import typer

from volseg.cli._common import (DebugOpt, OverwriteOpt, PartOpt, QuietOpt, SchedulerOpt, WorkersOpt,
                                cli_errors)
from volseg.cli._remote import CacheOpt, CacheSizeOpt, LevelOpt, StorageOpt


@dataclass(frozen=True)
class Bundle:
    """Options (name, ``Annotated`` type, default) and the function that builds one object of them."""

    options: tuple[tuple[str, Any, Any], ...]
    build: Callable[..., Any]

    def only(self, *names: str) -> "Bundle":
        """The same bundle with a subset of its options; the others keep their defaults."""
        missing = sorted(set(names) - {n for n, _, _ in self.options})
        if missing:
            raise ValueError(f"no option(s) {missing} in this bundle")
        return Bundle(tuple(o for o in self.options if o[0] in names), self.build)


def bundled(*, rank_zero: bool = False, **bundles: Bundle) -> Callable[[Callable], Callable]:
    """Decorate a Typer command: each ``name=bundle`` parameter becomes the bundle's options.

    The command body runs inside ``cli_errors(debug, rank_zero=...)`` (``--debug`` is added),
    so library errors become exit codes at this boundary.
    """

    def wrap(fn: Callable) -> Callable:
        sig = inspect.signature(fn, eval_str=True)
        kept = [p for name, p in sig.parameters.items() if name not in bundles and name != "debug"]
        added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=kind)
                 for bundle in bundles.values() for name, kind, default in bundle.options]
        added.append(inspect.Parameter("debug", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=DebugOpt))
        added.append(inspect.Parameter("typer_context", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context))
        params = sorted(kept + added, key=lambda p: p.kind == inspect.Parameter.KEYWORD_ONLY)
        taken = {name: [n for n, _, _ in bundle.options] for name, bundle in bundles.items()}

        @functools.wraps(fn)
        def command(**values):
            token = _CONTEXT.set(values.pop("typer_context", None))
            with cli_errors(values.pop("debug", False), rank_zero=rank_zero), _reset(token):
                for name, bundle in bundles.items():
                    values[name] = bundle.build(**{n: values.pop(n) for n in taken[name]})
                return fn(**values)

        command.__signature__ = sig.replace(parameters=params)  # what Typer reads
        command.__annotations__ = {p.name: p.annotation for p in params}
        del command.__wrapped__  # Typer must see the bundled signature, not the original
        return command

    return wrap


_CONTEXT: contextvars.ContextVar = contextvars.ContextVar("volseg_cli_context", default=None)


@contextlib.contextmanager
def _reset(token):
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def explicit_values(values: dict) -> dict:
    """The entries of ``values`` given on the command line (or by environment), not left at their
    default: what overrides a ``--config`` file. Called by a bundle's build inside its command."""
    ctx = _CONTEXT.get()
    if ctx is None:
        return dict(values)
    return {k: v for k, v in values.items()
            if getattr(ctx.get_parameter_source(k), "name", "DEFAULT") not in ("DEFAULT", "DEFAULT_MAP")}


def _execution(**values):
    from volseg.parallel import Execution

    return Execution.parse(**values)


#: ``--scheduler --workers --part --overwrite --quiet`` -> :class:`volseg.parallel.Execution`.
EXECUTION = Bundle((("scheduler", SchedulerOpt, "threads"), ("workers", WorkersOpt, None),
                    ("part", PartOpt, None), ("overwrite", OverwriteOpt, False), ("quiet", QuietOpt, False)),
                   _execution)


@dataclass(frozen=True)
class Remote:
    """``--level``, ``--storage-options``, ``--cache``, ``--cache-size`` of a command reading URLs."""

    level: int | None = None
    storage_options: str | None = None
    cache: str | None = None
    cache_size: str | None = None

    def setup(self, *, inputs=(), outputs=()) -> None:
        """Apply the options for this process and its workers (checks the cache folder first)."""
        from volseg.cli._remote import remote_setup

        remote_setup(self.storage_options, self.cache, self.cache_size, inputs=inputs, outputs=outputs)

    def at_level(self, volume: str | None, *, checked: bool = False) -> str | None:
        """``volume`` or the path/URL of its ``--level`` (checked to exist). ``checked``: with a
        level, refuse an unfinished store first (the library checks the level array it reads)."""
        from volseg.cli._remote import at_level

        if checked and volume is not None and self.level is not None:
            from volseg.io.completion import check_complete

            check_complete(volume)
        return at_level(volume, self.level)


#: The remote-input options -> :class:`Remote`.
REMOTE = Bundle((("level", LevelOpt, None), ("storage_options", StorageOpt, None), ("cache", CacheOpt, None),
                 ("cache_size", CacheSizeOpt, None)), Remote)


def _output_options(**values):
    from volseg.inference.output import OutputOptions

    return OutputOptions.parse(**values)


ThresholdOpt = Annotated[Optional[float], typer.Option(
    "--threshold", help="Write uint8 labels: 1 where the probability >= T.")]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="Output probabilities as float16 or float32.")]
ChannelOpt = Annotated[Optional[int], typer.Option(
    "--channel", help="Output the probability of this class (several classes default to argmax labels).")]

#: ``--dtype --threshold --channel`` -> :class:`volseg.inference.output.OutputOptions`.
OUTPUT = Bundle((("dtype", DtypeOpt, "float32"), ("threshold", ThresholdOpt, None), ("channel", ChannelOpt, None)),
                _output_options)
