"""Typer/Click usage errors in the CLI's one-line format.

Click prints usage errors (``--workers 0``, an unknown option, a missing argument or command)
as a boxed multi-line panel. :class:`VolsegGroup` runs the app in Click's non-standalone mode and
turns every such error into exactly one line ``error: <option>: <what>`` on stderr with exit 2,
the same contract as :func:`volseg.cli._common.cli_errors`. ``--help`` and ``--version`` still
print and exit 0; Ctrl-C still exits 130.
"""

from __future__ import annotations

import sys
from typing import Any

from typer import exceptions as typer_exc
from typer._click import exceptions as click
from typer.core import TyperGroup


def usage_line(exc: click.ClickException) -> str:
    """The one-line ``<option>: <what>`` text for a Click exception (without ``error: ``)."""
    message = " ".join(exc.format_message().split()).rstrip(".")
    if isinstance(exc, click.NoSuchOption):
        hint = f" (did you mean {', '.join(exc.possibilities)}?)" if exc.possibilities else ""
        return f"{exc.option_name}: no such option{hint}; see --help"
    if isinstance(exc, click.MissingParameter):
        param = exc.param
        if param is not None and param.param_type_name == "argument":
            name = (param.metavar or param.name or "argument").upper()
            return f"{name}: missing argument; see --help"
        name = param.opts[0] if param is not None and param.opts else "option"
        return f"{name}: missing option; see --help"
    if isinstance(exc, click.BadParameter):
        param = exc.param
        if param is not None:
            name = param.opts[0] if param.param_type_name == "option" and param.opts else \
                (param.metavar or param.name or "argument").upper()
            detail = " ".join(str(exc.message).split()).rstrip(".")
            detail = detail[:1].lower() + detail[1:]
            errors = getattr(exc.__cause__, "errors", None)  # typer's pydantic coercion keeps the input
            if callable(errors):
                try:
                    detail = f"{errors()[0]['input']!r}: {detail}"
                except (LookupError, TypeError):
                    pass
            return f"{name}: {detail}"
        return message
    if isinstance(exc, click.UsageError) and message.startswith("No such command"):
        name = message.split("'")[1] if "'" in message else "command"
        _, _, guess = message.partition("Did you mean ")
        hint = f"did you mean {guess.rstrip('?')}?" if guess else "run volseg --help for the list"
        return f"{name}: no such command; {hint}"
    return message


class VolsegGroup(TyperGroup):
    """The root command group: Click usage errors become one ``error:`` line and exit 2."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        try:
            rv = super().main(args=args, prog_name=prog_name, complete_var=complete_var,
                              standalone_mode=False, **extra)
        except click.NoArgsIsHelpError as exc:
            print(f"error: {usage_line_missing(exc)}", file=sys.stderr)
            code = 2
        except click.ClickException as exc:
            print(f"error: {usage_line(exc)}", file=sys.stderr)
            code = exc.exit_code if exc.exit_code else 2
        except typer_exc.Abort:
            print("error: interrupted; rerun the same command to resume", file=sys.stderr)
            code = 130
        else:
            code = rv if isinstance(rv, int) else 0
        if not standalone_mode:
            return code
        sys.exit(code)


def usage_line_missing(exc: click.NoArgsIsHelpError) -> str:
    """``volseg`` or ``volseg GROUP`` without a command."""
    name = exc.ctx.command_path if exc.ctx is not None else "volseg"
    return f"{name}: missing command; run {name} --help for the list"
