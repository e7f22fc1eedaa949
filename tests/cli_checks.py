"""Assertions shared by the CLI tests (imported as a sibling module, like ``remote_servers``)."""

import hashlib
import os
from pathlib import Path


def tree(root: Path) -> dict:
    """Every path under ``root`` -> a hash of its bytes (files), its target (links) or 'dir'."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "link:" + os.readlink(p)
            elif p.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out



def one_error_line(result, *needles):
    """A CliRunner result exited 2 with exactly one ``error:`` line holding every needle, no traceback."""
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert "Traceback" not in result.stderr + result.stdout


def reuse_click_command(app):
    """Context manager: every ``CliRunner().invoke(app, ...)`` inside reuses one Click command
    (CliRunner rebuilds it per call otherwise, which dominates a long table of quick calls)."""
    import contextlib

    import pytest
    import typer.main
    import typer.testing

    command = typer.main.get_command(app)

    @contextlib.contextmanager
    def patched():
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(typer.testing, "_get_command", lambda a: command if a is app else typer.main.get_command(a))
            yield

    return patched()
