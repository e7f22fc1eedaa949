"""`volseg prepare` and `volseg info` through the CLI: exit codes, one error line, nothing left behind."""

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from test_io_readers import BAD, _bad_inputs, make_volume, write_input
from cli_checks import one_error_line
from volseg.cli import app
from volseg.io import open_volume

runner = CliRunner()
VOLSEG = [sys.executable, "-c", "from volseg.cli import main; main()"]
SCRIPT = Path(sys.executable).parent / "volseg"


def _tree(path):
    return sorted((p.relative_to(path).as_posix(), p.read_bytes()) for p in path.rglob("*") if p.is_file())


def test_prepare_and_info_end_to_end(tmp_path):
    vol = make_volume("int16")
    src = write_input("nifti", tmp_path, vol, spacing=(2.0, 1.0, 0.5))
    out = tmp_path / "out.zarr"
    result = runner.invoke(app, ["prepare", str(src), "-o", str(out), "--chunks", "16", "--levels", "2",
                                 "--json", str(tmp_path / "p.json")])
    assert result.exit_code == 0, result.stderr
    assert "wrote" in result.stdout
    summary = json.loads((tmp_path / "p.json").read_text())
    assert summary["shape"] == [37, 53, 29] and summary["levels"] == 2 and summary["format"] == "nifti"
    np.testing.assert_array_equal(open_volume(out).compute(), vol)

    result = runner.invoke(app, ["info", str(out), "--json", "-"])
    assert result.exit_code == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["shape"] == [37, 53, 29] and info["dtype"] == "int16" and info["levels"] == 2
    assert info["spacing"] == [2.0, 1.0, 0.5] and info["chunks"] == [16, 16, 16]
    assert info["min"] == int(vol.min()) and info["max"] == int(vol.max()) and info["range_sampled"] is False

    table = runner.invoke(app, ["info", str(out)])
    assert table.exit_code == 0 and "range_sampled" in table.stdout and "int16" in table.stdout


@pytest.mark.parametrize("case", BAD)
def test_prepare_bad_input_exit_2_nothing_left(case, tmp_path):
    src = _bad_inputs(tmp_path)[case]
    out = tmp_path / "out" / "vol.zarr"
    result = runner.invoke(app, ["prepare", str(src), "-o", str(out)])
    one_error_line(result, src.name)
    assert not out.parent.exists() or not list(out.parent.iterdir())


@pytest.mark.parametrize("case", ["missing", "corrupt-tiff", "4d-nifti", "group"])
def test_info_bad_input_exit_2(case, tmp_path):
    src = _bad_inputs(tmp_path)[case]
    one_error_line(runner.invoke(app, ["info", str(src)]), src.name)


def test_existing_output_without_overwrite_is_untouched(tmp_path):
    src = write_input("npy", tmp_path, make_volume("uint8"))
    out = tmp_path / "out.zarr"
    assert runner.invoke(app, ["prepare", str(src), "-o", str(out), "-q"]).exit_code == 0
    before = _tree(out)
    np.save(src, make_volume("uint8", seed=9))
    one_error_line(runner.invoke(app, ["prepare", str(src), "-o", str(out)]), "out.zarr")
    assert "--overwrite" in runner.invoke(app, ["prepare", str(src), "-o", str(out)]).stderr
    assert _tree(out) == before
    result = runner.invoke(app, ["prepare", str(src), "-o", str(out), "--overwrite", "-q"])
    assert result.exit_code == 0 and result.stdout == ""
    np.testing.assert_array_equal(open_volume(out).compute(), make_volume("uint8", seed=9))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.zarr", "vol.npy"]


def test_bad_values_for_dtype_leave_nothing(tmp_path):
    src = write_input("npy", tmp_path, make_volume("uint16"))
    result = runner.invoke(app, ["prepare", str(src), "-o", str(tmp_path / "o.zarr"), "--dtype", "uint8"])
    one_error_line(result, "--dtype")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vol.npy"]


@pytest.mark.parametrize("args,word", [
    (["--chunks", "0"], "--chunks"), (["--chunks", "a"], "--chunks"), (["--levels", "0"], "--levels"),
    (["--dtype", "bogus"], "--dtype"), (["--scheduler", "nope"], "--scheduler"),
])
def test_bad_options(args, word, tmp_path):
    src = write_input("npy", tmp_path, make_volume("uint8"))
    result = runner.invoke(app, ["prepare", str(src), "-o", str(tmp_path / "o.zarr"), *args])
    one_error_line(result, word)
    assert not (tmp_path / "o.zarr").exists()


def test_debug_shows_the_traceback(tmp_path):
    result = runner.invoke(app, ["prepare", str(tmp_path / "missing.tif"), "-o", str(tmp_path / "o.zarr"), "--debug"])
    assert result.exit_code == 2 and "Traceback" in result.stderr


def _run(args):
    cmd = [str(SCRIPT)] if SCRIPT.exists() or shutil.which(str(SCRIPT)) else VOLSEG
    start = time.perf_counter()
    proc = subprocess.run(cmd + args, capture_output=True, text=True, timeout=120)
    return proc, time.perf_counter() - start


def test_help_is_fast_in_a_subprocess():
    for args in (["--help"], ["prepare", "--help"], ["info", "--help"]):
        proc, seconds = _run(args)
        assert proc.returncode == 0 and "Usage" in proc.stdout, proc.stderr
        assert seconds < 3.0, f"volseg {' '.join(args)} took {seconds:.2f}s"
    assert "--levels" in _run(["prepare", "--help"])[0].stdout


def test_real_subprocess_prepare_and_bad_input(tmp_path):
    src = write_input("tiff", tmp_path, make_volume("uint16", (9, 8, 7)))
    proc, _ = _run(["prepare", str(src), "-o", str(tmp_path / "o.zarr"), "-q"])
    assert proc.returncode == 0, proc.stderr
    proc, _ = _run(["prepare", str(tmp_path / "o.zarr"), "-o", str(tmp_path / "o.zarr")])
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ")
    corrupt = tmp_path / "c.tif"
    corrupt.write_bytes(b"not a tiff at all")
    proc, _ = _run(["prepare", str(corrupt), "-o", str(tmp_path / "c.zarr")])
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    assert not (tmp_path / "c.zarr").exists()
