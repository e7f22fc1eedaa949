"""The output-guard table (issue 20, part A): every output option of every command, in every form
(a path, a ``file://`` URL, a symlink), aimed at what it must never write: an input, a sub-path
input, the Zarr store that holds it and that store's metadata, the run directory, the working
directory and its parents, and a file or folder volseg did not make.

Each row runs the real CLI (``typer.testing.CliRunner``) with ``--overwrite`` where the command
has it, in a real sandbox of Zarr stores and a run, from the sub-folder ``work/deep``: exit 2,
exactly one stderr line starting ``error:``, no traceback, and every file, folder and link of
the sandbox unchanged (so nothing was written under any name either). URL rows check the same
for ``s3://``/``http://`` inputs and outputs written differently. The issue's own commands run
once more in real processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import typer
import zarr
from typer.testing import CliRunner

from cli_checks import reuse_click_command, tree
from volseg.inference.settings import predict_options
from volseg.cli import app

VOLSEG = str(Path(sys.executable).with_name("volseg"))
SUB = "s.zarr/labels/surface"
CWD = "work/deep"
PRED = ("--patch", "8", "--chunks", "8", "--device", "cpu", "--quiet")


@pytest.fixture(autouse=True, scope="module")
def _one_command():
    """Build the Click command once for the whole table (CliRunner rebuilds it per call)."""
    with reuse_click_command(app):
        yield


@pytest.fixture(scope="module")
def world(tmp_path_factory, make_run):
    """``data/``: s.zarr (a synthetic scroll with labels/surface), run/, ps.zarr (patches),
    pp.zarr (prediction patches), pred.zarr (a stitched prediction), other.zarr (a Zarr group
    volseg did not make), keepdir/ and notes.txt (not volseg's), work/deep/ (the working
    directory). ``links/``: where the symlink rows put their links."""
    from volseg.data.patchify import patchify
    from volseg.data.synth import write_synth
    from volseg.inference import predict

    root = tmp_path_factory.mktemp("guards")
    data = root / "data"
    (data / CWD).mkdir(parents=True)
    (root / "links").mkdir()
    make_run(data / "run")
    write_synth("scroll", data / "s.zarr", shape=16, chunks=8)
    patchify(data / "s.zarr", out=data / "ps.zarr", patch=8)
    kw = dict(patch=8, chunks=8, device="cpu", quiet=True)
    predict(data / "run", data / "s.zarr", data / "pred.zarr", *predict_options(stitch=True, **kw))
    predict(data / "run", data / "s.zarr", data / "pp.zarr", *predict_options(**kw))
    zarr.open_group(str(data / "other.zarr"), mode="w").create_array("a", shape=(4,), dtype="u1")
    (data / "keepdir").mkdir()
    (data / "keepdir" / "keep.txt").write_text("precious\n")
    (data / "notes.txt").write_text("notes\n")
    try:  # an nnU-Net v2 model folder, made by nnU-Net's own trainer (dev extra)
        import shutil

        from nnunet_folder import dataset_for, make_folder, plans_for

        folder = make_folder(root / "nnunet-build", plans_for("CTNormalization", patch=(8, 8, 8)),
                             dataset_for(("fibre",)), folds=(0,))
        shutil.copytree(folder, data / "nnunet")
    except ImportError:
        pass
    return root


@pytest.fixture(scope="module")
def before(world):
    return tree(world / "data")


# command -> (its arguments with {x} = data/x, its inputs, its output options, --overwrite?)
COMMANDS = {
    "info": (["info", f"{{{SUB}}}"], [SUB], ["--json"], False),
    "evaluate": (["evaluate", "{pred.zarr}", f"{{{SUB}}}", "--quiet"], ["pred.zarr", SUB], ["--json", "--preview"], False),
    "predict": (["predict", "{run}", f"{{{SUB}}}", "--stitch", *PRED], ["run", SUB], ["-o", "--json", "--postprocess"], True),
    "patchify": (["patchify", f"{{{SUB}}}", "--patch", "8", "--quiet"], [SUB], ["-o", "--json"], True),
    "prepare": (["prepare", f"{{{SUB}}}", "--quiet"], [SUB], ["-o", "--json"], True),
    "stitch": (["stitch", "{pp.zarr}", "--quiet"], ["pp.zarr"], ["-o", "--json"], True),
    "postprocess": (["postprocess", "{pred.zarr}", "--quiet"], ["pred.zarr"], ["-o", "--json", "--topology-report"], True),
    "train": (["train", "{ps.zarr}", "--steps", "1", "--device", "cpu", "--quiet"], ["ps.zarr"], ["-o", "--json"], True),
    "export": (["export", "{run}", "--quiet"], ["run"], ["-o", "--json"], True),
    "export-nnunet": (["export", "{nnunet}", "--quiet"], ["nnunet"], ["-o", "--json"], True),
    "predict-nnunet": (["predict", "{nnunet}", f"{{{SUB}}}", "--quiet"], ["nnunet", SUB], ["-o", "--json", "--postprocess"],
                       True),
    "synth": (["synth", "scroll", "--shape", "16", "--quiet"], [], ["-o", "--json"], True),
    "demo": (["demo", "--fast", "--quiet"], [], ["-o", "--json"], False),
    "bench-memory": (["bench-memory", "--patch", "8", "--quiet"], [], ["--json"], False),
}
# the store that holds the sub-path input, and its metadata
STORE = ["s.zarr", "s.zarr/zarr.json", "s.zarr/labels/zarr.json", "s.zarr/new.zarr"]
RUN = ["run/model.pt"]
NNUNET = ["nnunet/plans.json", "nnunet/fold_0/checkpoint_final.pth"]
HERE = [".", "..", "../.."]  # the working directory work/deep and its parents
FOREIGN = ["keepdir", "notes.txt", "other.zarr/zarr.json"]
FORMS = ("path", "file", "link")
REFUSALS = ("is the input", "lies inside", "contains the", "is the working directory", "is a folder",
            "exists and is not", "is an existing file", "not a regular file", "cannot tell the format")


def _targets(inputs: list[str]) -> list[str]:
    out = list(inputs)
    if SUB in inputs:
        out += STORE
    if "run" in inputs:
        out += RUN
    if "nnunet" in inputs:
        out += NNUNET
    return out + HERE + FOREIGN


def _rows():
    rows = []
    for command, (_, inputs, options, _) in COMMANDS.items():
        for option in options:
            for target in _targets(inputs):
                for form in FORMS:
                    rows.append((command, option, target, form))
    return rows


ROWS = _rows()


def _aim(world: Path, target: str, form: str, row_id: str) -> str:
    """The output argument: ``target`` (under data/, or relative to the working directory) as
    a path, a file:// URL or a symlink in links/."""
    data, cwd = world / "data", world / "data" / CWD
    if target in HERE:
        absolute = os.path.join(cwd, target)  # kept with its "..": the guards must resolve it
        if form == "path":
            return target
    else:
        absolute = str(data / target)
        if form == "path":
            return absolute
    if form == "file":
        return f"file://{absolute}"
    link = world / "links" / (row_id + Path(target).suffix)
    if not link.is_symlink():
        link.symlink_to(absolute)
    return str(link)


def _command_line(world: Path, command: str, option: str, aim: str) -> list[str]:
    args, _, options, overwrite = COMMANDS[command]
    data = world / "data"
    line = [str(data / a[1:-1]) if a.startswith("{") else a for a in args]
    line += [option, aim]
    if option != "-o" and "-o" in options:  # the command's main output: a fresh, valid name
        line += ["-o", str(data / ("fresh.onnx" if command.startswith("export") else "fresh.zarr"))]
    return line + (["--overwrite"] if overwrite else [])


def test_the_table_covers_every_output_option():
    assert len(ROWS) >= 500
    assert {(c, o) for c, o, _, _ in ROWS} == {(c, o) for c, v in COMMANDS.items() for o in v[2]}
    assert {f for *_, f in ROWS} == set(FORMS)


def _invoke(args: list[str]):
    return CliRunner().invoke(app, args)


def _check(result, world: Path, before: dict, links: dict) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2, (result.exit_code, result.stderr, result.stdout)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout and "internal" not in lines[0], lines[0]
    assert tree(world / "data") == before, "an input, the run or a prior output changed"
    assert tree(world / "links") == links, "a link was replaced"
    assert any(f in lines[0] for f in REFUSALS), lines[0]  # refused by a guard, not by a later failure


@pytest.mark.parametrize("command, option, target, form", ROWS,
                         ids=[f"{c}{o}={t}:{f}" for c, o, t, f in ROWS])
def test_refused_and_nothing_changes(world, before, monkeypatch, command, option, target, form):
    if "nnunet" in command and not (world / "data" / "nnunet").exists():
        pytest.skip("nnunetv2 (dev extra) makes the model folder")
    monkeypatch.chdir(world / "data" / CWD)
    aim = _aim(world, target, form, f"{command}{option}-{target.replace('/', '_')}")
    links = tree(world / "links")
    _check(_invoke(_command_line(world, command, option, aim)), world, before, links)


# Remote inputs and outputs written differently; refused before any request is made.
URL_ROWS = [
    ("s3-same-key", ["predict", "{run}", "s3://bucket/scroll.zarr", "-o", "s3://bucket//scroll.zarr/", "--stitch"],
     "is the input s3://bucket/scroll.zarr"),
    ("s3-dot-segments", ["predict", "{run}", "s3://bucket/a/scroll.zarr", "-o", "s3://BUCKET/a/./b/../scroll.zarr",
                         "--stitch"], "is the input"),
    ("s3-inside-input", ["predict", "{run}", "s3://bucket/scroll.zarr", "-o", "s3://bucket/scroll.zarr/pred",
                         "--stitch"], "lies inside the input"),
    ("s3-input-store", ["predict", "{run}", "s3://bucket/scroll.zarr/labels/surface", "-o",
                        "s3://bucket/scroll.zarr/pred.zarr", "--stitch"], "lies inside the Zarr store"),
    ("s3-contains-input", ["predict", "{run}", "s3://bucket/x/scroll.zarr", "-o", "s3://bucket/x", "--stitch"],
     "contains the input"),
    ("gcs-is-gs", ["predict", "{run}", "gs://bucket/scroll.zarr", "-o", "gcs://bucket/scroll.zarr", "--stitch"],
     "is the input"),
    ("http-default-port", ["predict", "{run}", "http://127.0.0.1:80/s.zarr", "-o", "http://127.0.0.1/s.zarr/",
                           "--stitch"], "is the input"),
    ("https-default-port", ["stitch", "https://Example.org:443/pp.zarr", "-o", "https://example.org/pp.zarr"],
     "is the input"),
    ("file-input-local-output", ["predict", "{run}", "file://{s.zarr}", "-o", "{s.zarr}", "--stitch"],
     "is the input"),
    ("file-input-local-json", ["info", "file://{s.zarr}/labels/surface", "--json", "{s.zarr}/zarr.json"],
     "lies inside the Zarr store"),
    ("file-localhost", ["predict", "{run}", "{s.zarr}", "-o", "file://localhost{s.zarr}", "--stitch"],
     "is the input"),
]


@pytest.mark.parametrize("row_id, args, fragment", URL_ROWS, ids=[r[0] for r in URL_ROWS])
def test_urls_are_compared_by_one_identity(world, before, monkeypatch, row_id, args, fragment):
    monkeypatch.chdir(world / "data" / CWD)
    data = world / "data"
    line = []
    for a in args:
        for name in ("run", "s.zarr"):
            a = a.replace(f"{{{name}}}", str(data / name))
        line.append(a)
    links = tree(world / "links")
    r = _invoke(line + (["--quiet"] if line[0] == "info" else ["--overwrite", "--quiet"]))
    _check(r, world, before, links)
    assert fragment in r.stderr, r.stderr


@pytest.mark.parametrize("args, fragment", [
    (["predict", "../../run", "../../s.zarr", "-o", "file://{data}/s.zarr", "--stitch", "--overwrite"],
     "is the input ../../s.zarr"),
    (["predict", "../../run", "../../s.zarr", "-o", "file://{data}/run", "--overwrite"], "is the input ../../run"),
    (["predict", "../../run", "../../s.zarr", "-o", "file://{data}/keepdir", "--stitch", "--overwrite"],
     "is not a volume (OME-Zarr) made by volseg"),
    (["synth", "scroll", "-o", "file://{data}/work/deep/..", "--overwrite"], "contains the working directory"),
    (["info", "../../s.zarr/labels/surface", "--json", "../../s.zarr/zarr.json"], "lies inside the Zarr store"),
])
def test_the_issue_commands_in_a_real_process(world, before, args, fragment):
    links = tree(world / "links")
    line = [a.replace("{data}", str(world / "data")) for a in args]
    proc = subprocess.run([VOLSEG, *line], cwd=world / "data" / CWD, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [proc.stderr.strip()] and fragment in proc.stderr, proc.stderr
    assert tree(world / "data") == before and tree(world / "links") == links


def test_file_url_outputs_work_end_to_end(tmp_path, monkeypatch, make_run):
    """synth, prepare, patchify, predict (patches and --stitch), stitch, export and --json to
    file:// URLs write the same local outputs as plain paths, which `info` then reads."""
    monkeypatch.chdir(tmp_path)
    make_run(tmp_path / "run")
    url = f"file://{tmp_path}"
    steps = [
        ["synth", "scroll", "-o", f"{url}/s.zarr", "--shape", "16", "--chunks", "8", "--json", f"{url}/synth.json"],
        ["prepare", f"{url}/s.zarr/0", "-o", f"{url}/p.zarr", "--chunks", "8"],
        ["patchify", "s.zarr", "-o", f"{url}/ps.zarr", "--patch", "8"],
        ["predict", "run", "p.zarr", "-o", f"{url}/pred.zarr", "--stitch", *PRED],
        ["predict", "run", "p.zarr", "-o", f"{url}/pp.zarr", *PRED],
        ["stitch", f"{url}/pp.zarr", "-o", f"{url}/st.zarr", "--chunks", "8"],
        ["predict", "run", "p.zarr", "-o", f"{url}/pred.zarr", "--stitch", *PRED],  # resumed: nothing to do
    ]
    for args in steps:
        r = _invoke([*args, "--quiet"] if "--quiet" not in args else args)
        assert r.exit_code == 0, (args, r.output)
    r = _invoke(["info", f"{url}/pred.zarr", "--json", f"{url}/info.json"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "synth.json").is_file() and (tmp_path / "info.json").is_file()
    assert not (tmp_path / "file:").exists()
    pred = zarr.open_array(str(tmp_path / "pred.zarr" / "0"))[:]
    st = zarr.open_array(str(tmp_path / "st.zarr" / "0"))[:]
    assert pred.shape == (16, 16, 16) and np.isfinite(pred).all()
    np.testing.assert_allclose(st, pred, atol=1e-3)  # the patch store holds float16
    info = json.loads((tmp_path / "info.json").read_text())
    assert info["format"] == "ome-zarr" and info["shape"] == [16, 16, 16]
    for name in ("s.zarr", "p.zarr", "pred.zarr", "st.zarr"):  # volseg's marks, as for local paths
        attrs = json.loads((tmp_path / name / "zarr.json").read_text())["attributes"]["volseg"]
        assert attrs.get("complete", True) is True, name
    assert not [p.name for p in tmp_path.iterdir() if ".new" in p.name or ".tmp-" in p.name]
