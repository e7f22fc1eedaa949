"""volseg.cli._bundles: options defined once, parsed into one object inside the command's error boundary."""

from typing import Annotated

import pytest
import typer
from typer.testing import CliRunner

from volseg.cli import app
from volseg.cli._bundles import EXECUTION, OUTPUT, REMOTE, Bundle, bundled, explicit_values
from volseg.parallel import Execution


def _toy():
    toy = typer.Typer()
    seen = {}

    @toy.command("run")
    @bundled(execution=EXECUTION, remote=REMOTE.only("level"), output_options=OUTPUT,
             given=Bundle((("size", Annotated[int, typer.Option("--size")], 3),), lambda **v: explicit_values(v)))
    def run(store: Annotated[str, typer.Argument()], *, execution, remote, output_options, given) -> None:
        seen.update(store=store, execution=execution, remote=remote, output=output_options, given=given)

    @toy.command("other")
    def other() -> None:
        pass

    return toy, seen


def test_a_bundle_hands_the_command_one_parsed_object():
    toy, seen = _toy()
    r = CliRunner().invoke(toy, ["run", "s.zarr", "--part", "2/4", "--workers", "1", "-q", "--level", "1",
                                 "--threshold", "0.5"])
    assert r.exit_code == 0, r.output
    assert seen["execution"] == Execution("threads", 1, (1, 4), False, True)
    assert seen["remote"].level == 1 and seen["output"].threshold == 0.5 and seen["given"] == {}


def test_only_options_given_on_the_command_line_count_as_explicit():
    toy, seen = _toy()
    assert CliRunner().invoke(toy, ["run", "s", "--size", "3"]).exit_code == 0
    assert seen["given"] == {"size": 3}  # given, even though equal to the default


@pytest.mark.parametrize("args, needle", [(["--part", "5/4"], "--part"), (["--scheduler", "gpu"], "--scheduler"),
                                          (["--dtype", "int8"], "--dtype")])
def test_a_bad_value_is_one_error_line_and_exit_2(args, needle):
    toy, _ = _toy()
    r = CliRunner().invoke(toy, ["run", "s", *args])
    assert r.exit_code == 2 and r.stderr.startswith(f"error: {needle}") and len(r.stderr.splitlines()) == 1


def test_debug_shows_the_traceback():
    toy, _ = _toy()
    r = CliRunner().invoke(toy, ["run", "s", "--part", "0/1", "--debug"])
    assert r.exit_code == 2 and "Traceback" in r.stderr


@pytest.mark.parametrize("command", ["predict", "stitch", "patchify", "postprocess"])
def test_every_command_walking_a_volume_has_the_execution_options(command):
    r = CliRunner().invoke(app, [command, "--help"], terminal_width=200)
    assert r.exit_code == 0
    for option in ("--scheduler", "--workers", "--part", "--overwrite", "--quiet", "--debug"):
        assert option in r.stdout, (command, option)
