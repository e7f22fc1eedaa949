"""`volseg patchify` on the command line: outputs, JSON, and one clean error line per bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from typer.testing import CliRunner

from volseg.cli import app

runner = CliRunner()
VOLSEG = Path(sys.executable).with_name("volseg")


@pytest.fixture(scope="module")
def vols(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    data = np.random.default_rng(0).integers(0, 255, (20, 24, 24), dtype=np.uint8)
    tifffile.imwrite(d / "scroll.tif", data)
    tifffile.imwrite(d / "labels.tif", (data > 200).astype(np.uint8))
    tifffile.imwrite(d / "small.tif", np.zeros((20, 24, 23), np.uint8))
    tifffile.imwrite(d / "empty.tif", np.zeros(data.shape, np.uint8))
    return d, data


def test_grid_and_json(vols, tmp_path):
    d, data = vols
    out = tmp_path / "p.zarr"
    res = runner.invoke(app, ["patchify", str(d / "scroll.tif"), "-o", str(out), "--patch", "8x12x12",
                              "--stride", "6", "--json", "-", "--quiet"])
    assert res.exit_code == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["patches"] == 3 * 3 * 3 and summary["mode"] == "grid" and summary["patch"] == [8, 12, 12]
    g = zarr.open_group(str(out), mode="r")
    z, y, x = g["origins"][5]
    assert np.array_equal(g["patches"][5, 0], data[z:z + 8, y:y + 12, x:x + 12])
    assert g.attrs["volseg"]["command"].startswith("volseg patchify")


def test_random_labels_json_file(vols, tmp_path):
    d, _ = vols
    res = runner.invoke(app, ["patchify", str(d / "scroll.tif"), "--labels", str(d / "labels.tif"), "-o",
                              str(tmp_path / "r.zarr"), "--patch", "8", "--samples", "10",
                              "--foreground-fraction", "1", "--seed", "3", "--json", str(tmp_path / "s.json")])
    assert res.exit_code == 0, res.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["labels"] is True and summary["foreground_fraction_actual"] == 1.0


@pytest.mark.parametrize("args,where", [
    (["--patch", "32"], "--patch"),
    (["--patch", "8", "--stride", "0"], "--stride"),
    (["--patch", "8", "--stride", "-3"], "--stride"),
    (["--patch", "8", "--labels", "{d}/small.tif"], "small.tif"),
    (["--patch", "8", "--labels", "{d}/labels.tif", "--samples", "4", "--foreground-fraction", "1.2"],
     "--foreground-fraction"),
    (["--patch", "8", "--labels", "{d}/labels.tif", "--samples", "4", "--foreground-fraction", "-0.1"],
     "--foreground-fraction"),
    (["--patch", "8", "--labels", "{d}/empty.tif", "--samples", "4", "--foreground-fraction", "0.5"], "empty.tif"),
    (["--patch", "8", "--part", "4/3"], "--part"),
    (["--patch", "8", "--scheduler", "nope"], "--scheduler"),
])
def test_bad_inputs_exit_2_with_one_error_line(vols, tmp_path, args, where):
    d, _ = vols
    out = tmp_path / "bad.zarr"
    args = [a.replace("{d}", str(d)) for a in args]
    res = runner.invoke(app, ["patchify", str(d / "scroll.tif"), "-o", str(out)] + args)
    assert res.exit_code == 2, (res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and where in lines[0], res.stderr
    assert "Traceback" not in res.stderr
    assert not out.exists() and not list(tmp_path.glob("bad.zarr*"))


def test_existing_output_needs_overwrite(vols, tmp_path):
    d, _ = vols
    out = tmp_path / "p.zarr"
    base = ["patchify", str(d / "scroll.tif"), "-o", str(out), "--patch", "8", "-q"]
    assert runner.invoke(app, base).exit_code == 0
    res = runner.invoke(app, base)
    assert res.exit_code == 2 and "exists" in res.stderr and "--overwrite" in res.stderr
    assert runner.invoke(app, base + ["--overwrite"]).exit_code == 0


def test_real_subprocess(vols, tmp_path):
    d, _ = vols
    out = tmp_path / "p.zarr"
    ok = subprocess.run([str(VOLSEG), "patchify", str(d / "scroll.tif"), "-o", str(out), "--patch", "8",
                         "--samples", "6", "--labels", str(d / "labels.tif"), "--foreground-fraction", "0.5",
                         "--json", "-"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["patches"] == 6
    bad = subprocess.run([str(VOLSEG), "patchify", str(d / "scroll.tif"), "-o", str(tmp_path / "b.zarr"),
                          "--patch", "99"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("error: --patch:") and "--pad" in bad.stderr
    assert "Traceback" not in bad.stderr


@pytest.fixture(scope="module")
def half(vols, make_run, tmp_path_factory):
    """An unfinished output (one part of two of `predict --stitch`) of the scroll's shape."""
    d, _ = vols
    root = tmp_path_factory.mktemp("half")
    out = root / "half.zarr"
    r = runner.invoke(app, ["predict", str(make_run(root / "run")), str(d / "scroll.tif"), "-o", str(out),
                            "--patch", "8", "--stitch", "--chunks", "16", "--device", "cpu", "--quiet",
                            "--part", "1/2"])
    assert r.exit_code == 0, r.stderr
    return out


@pytest.mark.parametrize("mode", ["volume", "labels", "list", "images"])
def test_an_unfinished_output_is_refused_as_input(vols, half, tmp_path, mode):
    d, _ = vols
    out = tmp_path / "p.zarr"
    if mode == "volume":
        args = [str(half)]
    elif mode == "labels":
        args = [str(d / "scroll.tif"), "--labels", str(half)]
    elif mode == "list":
        (tmp_path / "pairs.csv").write_text(f"image,label\n{d / 'scroll.tif'},{d / 'labels.tif'}\n"
                                            f"{half},{d / 'labels.tif'}\n")
        args = ["--list", str(tmp_path / "pairs.csv")]
    else:
        (tmp_path / "im").mkdir()
        (tmp_path / "lb").mkdir()
        (tmp_path / "im" / "a.zarr").symlink_to(half, target_is_directory=True)
        (tmp_path / "lb" / "a.tif").symlink_to(d / "labels.tif")
        args = ["--images", str(tmp_path / "im"), "--labels", str(tmp_path / "lb")]
    r = runner.invoke(app, ["patchify", *args, "-o", str(out), "--patch", "8", "--quiet"])
    assert r.exit_code == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.stderr, r.stderr
    assert "half.zarr" in lines[0] or "a.zarr" in lines[0], lines[0]
    assert "chunks written; finish it with the same command" in lines[0], lines[0]
    assert not out.exists() and not list(tmp_path.glob("p.zarr*"))


def test_two_many_pairs_runs_to_one_output_started_together(vols, tmp_path):
    """One writes the merged store; the other is refused with one line (the lock is held, or the
    store exists) instead of racing on the shared work folders."""
    d, _ = vols
    (tmp_path / "pairs.csv").write_text("".join(f"{d / 'scroll.tif'},{d / 'labels.tif'}\n" for _ in range(3)))
    out = tmp_path / "p.zarr"
    cmd = [str(VOLSEG), "patchify", "--list", str(tmp_path / "pairs.csv"), "-o", str(out), "--patch", "8",
           "--quiet"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    assert sorted(p.returncode for p in procs) == [0, 2], errs
    err = next(e for p, e in zip(procs, errs) if p.returncode == 2).strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {out}: "), err
    assert "another volseg (pid " in err[0] or "exists" in err[0], err
    assert zarr.open_group(str(out), mode="r")["patches"].shape[0] == 3 * 27  # 3x3x3 padded patches per pair
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.zarr", "pairs.csv"]
