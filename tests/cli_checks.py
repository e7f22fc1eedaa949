"""Assertions shared by the CLI tests (imported as a sibling module, like ``remote_servers``)."""


def one_error_line(result, *needles):
    """A CliRunner result exited 2 with exactly one ``error:`` line holding every needle, no traceback."""
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert "Traceback" not in result.stderr + result.stdout
