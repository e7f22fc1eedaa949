"""Safety of outputs through the CLI, on real files in a sandbox with sentinel files.

Every refused command: exit 2, exactly one stderr line starting ``error:``, no traceback, and
the whole sandbox (inputs, run dir, sentinels, earlier good outputs) byte-for-byte unchanged,
with no new path anywhere (see :mod:`volseg.io.outputs`).
"""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from typer.testing import CliRunner

from cli_checks import tree
from volseg.inference.settings import predict_options
from volseg.cli import app
from volseg.models import build_model
from volseg.parallel import Execution

VOLSEG = str(Path(sys.executable).with_name("volseg"))
COMMON = ("--patch", "8", "--chunks", "8", "--device", "cpu", "--quiet")


@pytest.fixture(scope="session")
def base(tmp_path_factory):
    """A tiny world built once: run, img.npy, s.zarr (synth + labels), p.zarr (patches),
    pred.zarr (a good prediction), pstore.zarr (prediction patches), half.zarr / halfstore.zarr
    (one --part of two), sentinels (notes/, sentinel.txt, foreign.zarr, lnk -> s.zarr)."""
    from volseg.data.patchify import patchify
    from volseg.data.synth import write_synth
    from volseg.inference import predict

    root = tmp_path_factory.mktemp("world")
    torch.manual_seed(0)
    cfg = {"type": "unet", "in_channels": 1, "out_ch": 1, "ch": 4, "depth": 2}
    (root / "run").mkdir()
    torch.save({"format": "volseg-run", "version": 1, "model_config": cfg,
                "state_dict": build_model(cfg).state_dict()}, root / "run" / "model.pt")
    np.save(root / "img.npy", np.random.default_rng(0).normal(size=(16, 16, 16)).astype(np.float32))
    write_synth("scroll", root / "s.zarr", shape=16, chunks=8)
    patchify(root / "s.zarr", out=root / "p.zarr", patch=8)
    patchify(root / "img.npy", out=root / "halfp.zarr", patch=8, execution=Execution.parse(part=(0, 2)))
    kw = dict(patch=8, chunks=8, device="cpu", quiet=True)
    predict(root / "run", root / "img.npy", root / "pred.zarr", *predict_options(stitch=True, **kw))
    predict(root / "run", root / "img.npy", root / "pstore.zarr", *predict_options(**kw))
    predict(root / "run", root / "img.npy", root / "half.zarr", *predict_options(stitch=True, part="1/2", **kw))
    predict(root / "run", root / "img.npy", root / "halfstore.zarr", *predict_options(part="1/2", **kw))
    (root / "notes").mkdir()
    (root / "notes" / "keep.txt").write_text("precious\n")
    (root / "sentinel.txt").write_text("do not touch\n")
    (root / "old.json").write_text('{"dice": 0.5}\n')
    zarr.open_group(str(root / "foreign.zarr"), mode="w").create_array("a", shape=(4,), dtype="u1")
    os.symlink("s.zarr", root / "lnk")
    return root


@pytest.fixture()
def box(base, tmp_path, monkeypatch):
    """A private copy of the world as the working directory."""
    sandbox = tmp_path / "box"
    shutil.copytree(base, sandbox, symlinks=True)
    monkeypatch.chdir(sandbox)
    return sandbox


@pytest.fixture(scope="module")
def shared(base, tmp_path_factory):
    """One copy of the world for the refused commands (they change nothing, which each row checks)."""
    sandbox = tmp_path_factory.mktemp("shared") / "box"
    shutil.copytree(base, sandbox, symlinks=True)
    return sandbox


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_refused(result, fragment):
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2, (result.exit_code, result.stderr, result.stdout)
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert fragment in lines[0], lines[0]


PRED = ("predict", "run", "img.npy", "--patch", "8", "--chunks", "8", "--device", "cpu", "--quiet")
EVAL = ("evaluate", "pred.zarr", "s.zarr/labels/surface", "--quiet")

ROWS = [
    # item 1: outputs that are, contain or lie inside an input, the run dir or the working directory
    (PRED + ("-o", ".", "--stitch", "--overwrite"), "is the working directory"),
    (PRED + ("-o", "..", "--stitch", "--overwrite"), "contains the working directory"),
    (PRED + ("-o", "", "--stitch", "--overwrite"), "is empty"),
    (PRED + ("-o", "run", "--stitch", "--overwrite"), "is the input run"),
    (("predict", "run", "s.zarr", "-o", "s.zarr", "--stitch", "--overwrite") + COMMON, "is the input s.zarr"),
    (("predict", "run", "s.zarr", "-o", "s.zarr/labels/surface", "--stitch", "--overwrite") + COMMON,
     "lies inside the input s.zarr"),
    (("predict", "run", "s.zarr", "-o", "./s.zarr/../s.zarr", "--overwrite") + COMMON, "is the input s.zarr"),
    (("predict", "run", "s.zarr", "-o", "lnk", "--stitch", "--overwrite") + COMMON, "is the input s.zarr"),
    (("predict", "run", "s.zarr/labels/surface", "-o", "s.zarr", "--stitch", "--overwrite") + COMMON,
     "contains the input"),
    (PRED + ("-o", "notes", "--stitch", "--overwrite"), "not a volume (OME-Zarr) made by volseg"),
    (PRED + ("-o", "foreign.zarr", "--stitch", "--overwrite"), "made by volseg"),
    (PRED + ("-o", "sentinel.txt", "--stitch", "--overwrite"), "is an existing file"),
    (PRED + ("-o", "p.zarr", "--stitch", "--overwrite"), "not a volume (OME-Zarr) made by volseg"),
    (PRED + ("-o", "pred.zarr", "--overwrite"), "not a patch store made by volseg"),
    (("stitch", "pstore.zarr", "-o", "pstore.zarr", "--overwrite", "--quiet"), "is the input pstore.zarr"),
    (("stitch", "pstore.zarr", "-o", "pstore.zarr/sub.zarr", "--quiet"), "lies inside the input"),
    (("stitch", "pstore.zarr", "-o", ".", "--overwrite", "--quiet"), "is the working directory"),
    (("patchify", "s.zarr", "-o", "s.zarr", "--overwrite", "--patch", "8"), "is the input s.zarr"),
    (("patchify", "s.zarr", "-o", "s.zarr/sub.zarr", "--patch", "8"), "lies inside the input"),
    (("patchify", "img.npy", "-o", "", "--patch", "8"), "is empty"),
    (("patchify", "img.npy", "-o", ".", "--patch", "8", "--overwrite"), "is the working directory"),
    (("patchify", "img.npy", "-o", "pred.zarr", "--patch", "8", "--overwrite"), "not a patch store made by volseg"),
    (("prepare", "img.npy", "-o", "."), "is the working directory"),
    (("prepare", "img.npy", "-o", ""), "is empty"),
    (("prepare", "s.zarr", "-o", "s.zarr/copy.zarr"), "lies inside the input"),
    (("prepare", "img.npy", "-o", "notes", "--overwrite"), "made by volseg"),
    (("prepare", "img.npy", "-o", "sentinel.txt", "--overwrite"), "is an existing file"),
    (("synth", "scroll", "-o", ".", "--overwrite", "--shape", "16"), "is the working directory"),
    (("synth", "scroll", "-o", "", "--shape", "16"), "is empty"),
    (("synth", "scan", "-o", "notes", "--overwrite", "--shape", "16"), "made by volseg"),
    (("train", "p.zarr", "-o", ".", "--overwrite", "--steps", "1"), "is the working directory"),
    (("train", "p.zarr", "-o", "p.zarr", "--overwrite", "--steps", "1"), "is the input p.zarr"),
    (("train", "p.zarr", "-o", "notes", "--overwrite", "--steps", "1"), "not a run directory made by volseg"),
    (("train", "p.zarr", "-o", "s.zarr", "--overwrite", "--steps", "1"), "not a run directory made by volseg"),
    (("demo", "-o", ".", "--fast"), "is the working directory"),
    # item 6: unwritable outputs
    (PRED + ("-o", "sentinel.txt/o.zarr", "--stitch"), "is a file, not a folder"),
    (("prepare", "img.npy", "-o", "sentinel.txt/o.zarr"), "is a file, not a folder"),
    (("train", "p.zarr", "-o", "sentinel.txt/run", "--steps", "1"), "is a file, not a folder"),
    (EVAL + ("--json", "notes"), "is a folder"),
    # item 3: --json / --preview
    (("info", "img.npy", "--json", "img.npy"), "is the input img.npy"),
    (EVAL + ("--json", "s.zarr/labels/surface"), "is the input"),
    (EVAL + ("--json", "sentinel.txt"), "is not a JSON file"),
    (EVAL + ("--preview", "sentinel.txt"), "is not a PNG file"),
    (EVAL + ("--preview", "pred.zarr"), "is the input pred.zarr"),
    (PRED + ("-o", "o.zarr", "--stitch", "--json", "img.npy"), "is the input img.npy"),
    (PRED + ("-o", "o.zarr", "--stitch", "--json", "o.zarr"), "is the output o.zarr"),
    (("bench-memory", "--json", "sentinel.txt"), "is not a JSON file"),
    (("demo", "-o", "d", "--json", "sentinel.txt"), "is not a JSON file"),
    (("synth", "scroll", "-o", "n.zarr", "--json", "n.zarr/x.json"), "lies inside the output"),
    # item 5: incomplete inputs
    (("evaluate", "half.zarr", "s.zarr/labels/surface", "--quiet"), "4 of 8 chunks written; finish it"),
    (("stitch", "halfstore.zarr", "-o", "x.zarr", "--quiet"), "of 8 patch groups written"),
    (("train", "halfp.zarr", "-o", "r9", "--steps", "1", "--quiet"), "2 of 4 patch ranges written"),
]


@pytest.mark.parametrize("args, fragment", ROWS, ids=[" ".join(r[0][:1] + r[0][3:6]) for r in ROWS])
def test_refused_and_nothing_changes(shared, monkeypatch, args, fragment):
    monkeypatch.chdir(shared)
    before = tree(shared)
    assert_refused(invoke(*args), fragment)
    assert tree(shared) == before


def test_refused_through_a_real_process(shared):
    """The data-loss cases of the issue, as a script would run them."""
    box = shared
    before = tree(box)
    r = subprocess.run([VOLSEG, "predict", "run", "img.npy", "-o", ".", "--stitch", "--overwrite"],
                       capture_output=True, text=True, cwd=box)
    assert r.returncode == 2 and r.stderr.startswith("error: -o .: is the working directory"), r.stderr
    assert r.stderr.count("\n") == 1
    assert tree(box) == before


# ----------------------------------------------------------------------------- item 2 and 8
def test_failing_stitch_overwrite_keeps_the_good_output(box):
    """A corrupt input chunk: stitch --overwrite fails, the existing output is untouched; a fresh
    output that got no block written is removed (item 8)."""
    good = invoke("stitch", "pstore.zarr", "-o", "out.zarr", "--chunks", "8", "--quiet")
    assert good.exit_code == 0, good.stderr
    saved = tree(box / "out.zarr")
    for chunk in (box / "pstore.zarr" / "patches").rglob("c/*/0/0/0/0"):
        chunk.write_bytes(b"garbage, not a zstd frame")
    r = invoke("stitch", "pstore.zarr", "-o", "out.zarr", "--chunks", "8", "--overwrite", "--quiet")
    assert r.exit_code != 0 and "Traceback" not in r.stderr
    assert tree(box / "out.zarr") == saved
    r = invoke("stitch", "pstore.zarr", "-o", "fresh.zarr", "--chunks", "8", "--quiet", "--workers", "1")
    assert r.exit_code != 0 and not (box / "fresh.zarr").exists()


def test_overwrite_recomputes_and_replaces_only_at_the_end(box):
    """Item 4: a changed input is refused without --overwrite; --overwrite computes it all again."""
    assert invoke(*PRED, "-o", "pred.zarr", "--stitch", "--overwrite").exit_code == 0  # made here
    old = zarr.open_array(str(box / "pred.zarr" / "0"))[:]
    np.save(box / "img.npy", np.random.default_rng(5).normal(size=(16, 16, 16)).astype(np.float32))
    r = invoke(*PRED, "-o", "pred.zarr", "--stitch")
    assert_refused(r, "earlier version of its input")
    r = invoke(*PRED, "-o", "pred.zarr", "--stitch", "--overwrite", "--part", "1/2")
    assert r.exit_code == 0, r.stderr
    np.testing.assert_array_equal(zarr.open_array(str(box / "pred.zarr" / "0"))[:], old)  # not yet replaced
    assert (box / "pred.zarr.new").is_dir()
    r = invoke(*PRED, "-o", "pred.zarr", "--stitch", "--overwrite", "--part", "2/2")
    assert r.exit_code == 0, r.stderr
    assert not (box / "pred.zarr.new").exists()
    new = zarr.open_array(str(box / "pred.zarr" / "0"))[:]
    assert not np.array_equal(new, old)
    assert zarr.open_group(str(box / "pred.zarr")).attrs["volseg"]["complete"] is True
    r = invoke("evaluate", "pred.zarr", "s.zarr/labels/surface", "--quiet", "--json", "-")
    assert r.exit_code == 0, r.stderr


def test_info_shows_completion(box):
    """Item 5: info says how far a block-wise output is."""
    r = invoke("info", "half.zarr", "--json", "-")
    assert r.exit_code == 0 and '"state": "4 of 8 chunks written"' in r.stdout
    r = invoke("info", "pred.zarr", "--json", "-")
    assert '"state": "complete"' in r.stdout


# ----------------------------------------------------------------------------- item 3
def test_json_goes_through_links_and_to_devices(box):
    os.symlink("old.json", box / "link.json")
    r = invoke("info", "img.npy", "--json", "link.json", "--quiet")
    assert r.exit_code == 0, r.stderr
    assert (box / "link.json").is_symlink() and '"shape"' in (box / "old.json").read_text()
    assert invoke("info", "img.npy", "--json", "/dev/null").exit_code == 0
    assert Path("/dev/null").is_char_device()
    r = invoke("info", "img.npy", "--json", "/dev/full")
    assert_refused(r, "the disk is full")
    r = invoke(*EVAL, "--preview", "view.png", "--json", "scores.json")
    assert r.exit_code == 0, r.stderr
    assert (box / "view.png").read_bytes()[:4] == b"\x89PNG"
    assert invoke(*EVAL, "--preview", "view.png", "--json", "scores.json").exit_code == 0  # own files replaced
    assert not [p for p in box.iterdir() if ".tmp-" in p.name]


# ----------------------------------------------------------------------------- items 7 and 9
def test_a_second_writer_is_refused_and_a_dead_ones_lock_taken_over(box):
    child = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from volseg.io.locks import output_lock\n"
        "with output_lock('q.zarr'):\n    print('locked', flush=True); time.sleep(60)")],
        cwd=box, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "locked"
        before = tree(box)
        assert_refused(invoke("patchify", "img.npy", "-o", "q.zarr", "--patch", "8", "--quiet"),
                       f"another volseg (pid {child.pid}) is writing it")
        assert tree(box) == before
    finally:
        child.kill()
        child.wait()
    assert (box / "q.zarr.lock").exists()  # left by the killed process, no longer locked
    r = invoke("patchify", "img.npy", "-o", "q.zarr", "--patch", "8", "--quiet")
    assert r.exit_code == 0, r.stderr
    assert not (box / "q.zarr.lock").exists()


def test_two_trainers_of_one_run_dir(box):
    from volseg.io.locks import output_lock

    with output_lock(box / "r2"):
        assert_refused(invoke("train", "p.zarr", "-o", "r2", "--steps", "1", "--quiet"),
                       f"another volseg (pid {os.getpid()})")
    assert not (box / "r2").exists()


def test_stale_temp_folders_of_dead_processes_are_removed(box):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = box / f"n.zarr.tmp-{dead.pid}"
    (stale / "0").mkdir(parents=True)
    mine = box / f"n.zarr.tmp-{os.getpid()}-other"  # not a temp name: kept
    mine.mkdir()
    r = invoke("synth", "scroll", "-o", "n.zarr", "--shape", "16")
    assert r.exit_code == 0, r.stderr
    assert not stale.exists() and mine.exists()
    assert "removed 1 stale temporary folder" in r.stderr
    (stale / "0").mkdir(parents=True)
    r = invoke("prepare", "img.npy", "-o", "n2.zarr", "--quiet")
    assert r.exit_code == 0 and stale.exists() and r.stderr == ""  # another output's temp is kept


def test_torch_save_failure_names_the_path_and_bytes():
    from volseg.training.run_dir import _save_error

    err = _save_error(RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter "
                                   "failed writing file data/3: file write failed"), Path("/tmp/r/model.pt"),
                      {"state_dict": {"w": torch.zeros(1000)}})
    assert "model.pt" in str(err) and "4,000 bytes needed" in str(err)


def test_guard_api():
    from volseg.errors import VolsegError
    from volseg.io.outputs import guard_output

    assert guard_output(None, kind="json") is None and guard_output("-", kind="json") == "-"
    with pytest.raises(VolsegError, match="unknown output kind"):
        guard_output("x", kind="table")
    with pytest.raises(VolsegError, match="is the input"):
        guard_output("s3://b/x.zarr", inputs=["s3://b/x.zarr/"], kind="volume")
    t0 = time.perf_counter()
    guard_output("new.zarr", inputs=["a.npy", None], kind="volume")
    assert time.perf_counter() - t0 < 0.5


@pytest.mark.slow
def test_unreachable_scheduler_leaves_no_output(box):
    """Item 8: a failed start (no cluster at tcp://127.0.0.1:1, found after ~20 s) removes the
    output it created."""
    before = tree(box)
    r = invoke(*PRED, "-o", "o.zarr", "--stitch", "--scheduler", "tcp://127.0.0.1:1")
    assert r.exit_code == 2 and r.stderr.startswith("error:"), r.stderr
    assert tree(box) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_is_refused_before_any_work(box):
    """Item 6: a read-only folder as the parent of -o, --json or --preview."""
    (box / "ro").mkdir()
    (box / "ro").chmod(0o555)
    try:
        before = tree(box)
        for args in ((*PRED, "-o", "ro/o.zarr", "--stitch"), ("patchify", "img.npy", "-o", "ro/p.zarr"),
                     ("train", "p.zarr", "-o", "ro/run", "--steps", "1"), ("info", "img.npy", "--json", "ro/i.json"),
                     (*EVAL, "--preview", "ro/v.png")):
            assert_refused(invoke(*args), "is read-only")
        assert tree(box) == before
    finally:
        (box / "ro").chmod(0o755)
