"""Shared CLI conventions: JSON output, exit codes, error lines."""

import json

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from volseg.cli._common import cli_errors, emit_json
from volseg.errors import VolsegError


def test_emit_json_file_is_strict_and_atomic(tmp_path):
    out = tmp_path / "m.json"
    emit_json({"psnr": float("inf"), "dice": np.float32(0.5), "shape": (1, 2), "b": np.int64(3)}, str(out))
    assert json.loads(out.read_text()) == {"psnr": None, "dice": 0.5, "shape": [1, 2], "b": 3}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_emit_json_stdout(capsys):
    emit_json({"a": 1}, "-")
    assert json.loads(capsys.readouterr().out) == {"a": 1}


def _app(exc):
    app = typer.Typer()

    @app.command()
    def run(debug: bool = False):
        with cli_errors(debug):
            raise exc

    return app


@pytest.mark.parametrize("exc,code,line", [
    (VolsegError("in.tif", "corrupt"), 2, "error: in.tif: corrupt"),
    (RuntimeError("boom"), 1, "error: internal: RuntimeError: boom (rerun with --debug for the traceback)"),
])
def test_cli_errors_exit_codes(exc, code, line):
    result = CliRunner().invoke(_app(exc), [])
    assert result.exit_code == code
    assert result.stderr.strip() == line
    assert "Traceback" not in result.output


def test_cli_errors_debug_shows_traceback():
    result = CliRunner().invoke(_app(VolsegError("x", "bad")), ["--debug"])
    assert result.exit_code == 2
    assert "Traceback" in result.stderr


COMMANDS = [["prepare"], ["info"], ["synth", "scroll"], ["synth", "scan"], ["patchify"], ["train"],
            ["predict"], ["stitch"], ["evaluate"], ["bench-memory"], ["demo"]]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c))
def test_every_command_has_help_with_examples(command):
    from volseg.cli import app

    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    assert "Example" in result.output and "volseg " in result.output
