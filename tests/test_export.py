"""`volseg export`: ONNX (+ TorchScript, .pt2) equal to load_model on other shapes; predict with
the exported file equals predict with the run; bad inputs exit 2 with one error line."""

import json
import shutil
import sys

import numpy as np
import pytest
import torch
import zarr
from typer.testing import CliRunner

from volseg.cli import app
from volseg.models import build_model, load_model

torch.set_num_threads(1)
pytest.importorskip("onnxscript")
ort = pytest.importorskip("onnxruntime")
UNET = {"type": "unet", "in_channels": 1, "out_ch": 1, "ch": 4, "depth": 1,
        "norm_mean": 100.0, "norm_std": 20.0}


def _run(path, cfg, patch=(16, 16, 16)):
    path.mkdir()
    torch.manual_seed(0)
    model = build_model(cfg)
    with torch.no_grad():  # weights away from the initialisation, so the test is not trivial
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    torch.save({"format": "volseg-run", "version": 1, "model_config": cfg, "step": 7,
                "config": {"data": {"patch": list(patch)}}, "state_dict": model.state_dict()},
               path / "model.pt")
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from volseg.models.export import export_model

    root = tmp_path_factory.mktemp("export")
    _run(root / "run", UNET)
    rng = np.random.default_rng(0)
    np.save(root / "v.npy", (100 + 20 * rng.normal(size=(20, 28, 18))).astype(np.float32))
    result = export_model(root / "run", root / "unet.onnx")
    return root, result


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_onnx_equals_load_model_on_another_shape(files):
    root, result = files
    assert result["format"] == "onnx" and result["max_abs_diff"] < 1e-4
    session = ort.InferenceSession(str(root / "unet.onnx"), providers=["CPUExecutionProvider"])
    shape = session.get_inputs()[0].shape
    assert all(isinstance(s, str) for s in [shape[0], *shape[2:]]) and shape[1] == 1
    meta = json.loads(session.get_modelmeta().custom_metadata_map["volseg"])
    assert meta["patch"] == [16, 16, 16] and meta["out_channels"] == 1 and meta["depth"] == 1
    x = (100 + 20 * torch.randn(3, 1, 8, 12, 20, generator=torch.Generator().manual_seed(1)))
    with torch.no_grad():
        expected = load_model(root / "run")(x).numpy()
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert got.shape == expected.shape == (3, 1, 8, 12, 20)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_predict_with_the_onnx_model_equals_predict_with_the_run(files, tmp_path):
    root, _ = files
    outs = []
    for model in (root / "run", root / "unet.onnx"):
        out = tmp_path / f"{model.stem}.zarr"
        r = invoke("predict", model, root / "v.npy", "-o", out, "--stitch", "--chunks", "16",
                   "--device", "cpu", "--quiet")
        assert r.exit_code == 0, r.output
        outs.append(zarr.open_array(str(out / "0"))[:])
    assert outs[0].shape == (20, 28, 18)
    np.testing.assert_allclose(outs[1], outs[0], atol=1e-4, rtol=0)
    r = invoke("predict", root / "unet.onnx", root / "v.npy", "-o", tmp_path / "amp.zarr", "--amp")
    assert r.exit_code == 2 and r.stderr.startswith("error: --amp: ")
    assert not (tmp_path / "amp.zarr").exists()


def test_torchscript_export_round_trip(files, tmp_path):
    root, _ = files
    r = invoke("export", root / "run", "-o", tmp_path / "unet.ts", "--json", "-", "--quiet")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["max_abs_diff"] < 1e-5
    from volseg.models.exported import load_exported

    model = load_exported(tmp_path / "unet.ts")
    x = 100 + 20 * torch.randn(1, 1, 12, 8, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x), load_model(root / "run")(x), atol=1e-5, rtol=0)


@pytest.mark.slow
def test_pt2_export_and_predict(files, tmp_path):
    root, _ = files
    r = invoke("export", root / "run", "-o", tmp_path / "unet.pt2", "--quiet")
    assert r.exit_code == 0, r.output
    outs = []
    for model in (root / "run", tmp_path / "unet.pt2"):
        out = tmp_path / f"{model.stem}.zarr"
        r = invoke("predict", model, root / "v.npy", "-o", out, "--stitch", "--chunks", "16",
                   "--device", "cpu", "--quiet")
        assert r.exit_code == 0, r.output
        outs.append(zarr.open_array(str(out / "0"))[:])
    np.testing.assert_allclose(outs[1], outs[0], atol=1e-5, rtol=0)


def test_bad_exports_exit_2_with_one_error_line(files, tmp_path):
    root, _ = files
    diff = {"type": "diffusion", "in_channels": 2, "out_ch": 1, "ch": 8, "ch_mult": [1, 2],
            "attn": False}
    _run(tmp_path / "ddpm", diff)
    existing = tmp_path / "old.onnx"
    existing.write_bytes(b"keep me")
    cases = [
        (("export", tmp_path / "missing", "-o", tmp_path / "a.onnx"), f"{tmp_path / 'missing'}: does not exist"),
        (("export", tmp_path / "ddpm", "-o", tmp_path / "a.onnx"), f"{tmp_path / 'ddpm'}: is a diffusion run"),
        (("export", root / "run", "-o", existing), f"{existing}: exists and is not a model volseg exported"),
        (("export", root / "run", "-o", existing, "--overwrite"), f"{existing}: exists and is not a model volseg exported"),
        (("export", root / "run", "-o", ""), "-o: is empty"),
        (("export", root / "run", "-o", tmp_path / "sentinel.txt", "--format", "onnx"), "must be named *.onnx"),
        (("export", root / "run", "-o", tmp_path / "a.bin"), "cannot tell the format"),
        (("export", root / "run", "-o", tmp_path / "a.onnx", "--format", "tflite"), "--format: unknown format"),
        (("export", root / "run", "-o", root / "run" / "m.onnx"), "lies inside the run"),
        (("predict", tmp_path / "none.onnx", root / "v.npy", "-o", tmp_path / "o.zarr"), "none.onnx: does not exist"),
        (("predict", existing.with_suffix(".ts"), root / "v.npy", "-o", tmp_path / "o.zarr"), None),
    ]
    existing.with_suffix(".ts").write_bytes(b"not a model")
    for args, message in cases:
        r = invoke(*args)
        assert r.exit_code == 2, (args, r.output)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
        assert message is None or message in lines[0], lines[0]
    assert existing.read_bytes() == b"keep me"
    assert not (tmp_path / "a.onnx").exists() and not (tmp_path / "o.zarr").exists()
    assert not list(tmp_path.glob("*.tmp-*"))


def test_onnx_without_onnxruntime_exits_2_with_an_install_hint(files, tmp_path, monkeypatch):
    root, _ = files
    model = shutil.copy(root / "unet.onnx", tmp_path / "copy.onnx")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    r = invoke("predict", model, root / "v.npy", "-o", tmp_path / "o.zarr", "--device", "cpu")
    assert r.exit_code == 2
    assert r.stderr.strip() == f"error: {model}: running an ONNX model needs onnxruntime: pip install 'volseg[onnx]'"


def test_overwrite_replaces_only_files_volseg_exported(files, tmp_path):
    from volseg.models.exported import export_mark

    root, _ = files
    notes = tmp_path / "notes.onnx"
    notes.write_text("notes\n")
    sentinel = tmp_path / "sentinel.txt"
    sentinel.write_text("keep")
    link = tmp_path / "link.onnx"
    link.symlink_to(notes)
    refused = [((notes,), "is not a model volseg exported"), ((f"file://{notes}",), "is not a model volseg exported"),
               ((link,), "is not a model volseg exported"), ((sentinel, "--format", "onnx"), "must be named *.onnx"),
               ((root / "run" / "model.pt",), "lies inside the run"), ((tmp_path,), "is not a regular file")]
    for args, message in refused:
        r = invoke("export", root / "run", "-o", *args, "--overwrite")
        lines = r.stderr.strip().splitlines()
        assert r.exit_code == 2 and len(lines) == 1 and message in lines[0], (args, r.output)
    assert notes.read_text() == "notes\n" and sentinel.read_text() == "keep" and link.is_symlink()
    mine = shutil.copy(root / "unet.onnx", tmp_path / "mine.onnx")
    assert export_mark(mine)["export_format"] == "onnx" and export_mark(notes) is None
    r = invoke("export", root / "run", "-o", f"file://{mine}", "--overwrite", "--quiet")
    assert r.exit_code == 0, r.output
    assert export_mark(mine)["source"] == str(root / "run" / "model.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.onnx", "mine.onnx", "notes.onnx", "sentinel.txt"]
