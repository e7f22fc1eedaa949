"""Foreign ONNX files (no ``volseg`` metadata) through ``volseg predict --stitch`` (volseg.models.foreign).

A tiny torch Conv3d network is exported with ``torch.onnx.export`` (fixed and dynamic input
shapes); the CLI's stitched output equals that network's sliding window over volseg's patch grid
and gaussian blend, with ``--normalize ct:...`` and ``--activation sigmoid`` applied around it.
"""

import hashlib
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from typer.testing import CliRunner

from volseg.cli import app

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")

PATCH = 16
CT = (-1000.0, 1000.0, 40.0, 300.0)


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.Conv3d(4, 2, 3, padding=1)).eval()


def _export(net, path: Path, *, dynamic: bool) -> None:
    example = torch.zeros(1, 1, PATCH, PATCH, PATCH)
    if dynamic:
        from torch.export import Dim

        example = torch.zeros(2, 1, PATCH, PATCH, PATCH)  # a batch of 1 would be specialized to 1
        shapes = {"input": {0: Dim("n", min=1), **{a: Dim(n, min=4) for a, n in zip((2, 3, 4), "zyx")}}}
        program = torch.export.export(net, (example,), dynamic_shapes=shapes)
        proto = torch.onnx.export(program, (example,), input_names=["x"], dynamo=True, verbose=False).model_proto
    else:
        proto = torch.onnx.export(net, (example,), input_names=["x"], dynamo=True, verbose=False).model_proto
    onnx.save(proto, str(path))


def _two_inputs(path: Path) -> None:
    from onnx import TensorProto, helper

    a, b, y = (helper.make_tensor_value_info(n, TensorProto.FLOAT, ["n", 1, 16, 16, 16]) for n in "aby")
    graph = helper.make_graph([helper.make_node("Add", ["a", "b"], ["y"])], "two", [a, b], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    root = tmp_path_factory.mktemp("foreign")
    net = _net()
    _export(net, root / "fixed.onnx", dynamic=False)
    _export(net, root / "dynamic.onnx", dynamic=True)
    _two_inputs(root / "two.onnx")
    vol = np.random.default_rng(0).uniform(-1500, 1500, size=(40, 40, 40)).astype(np.float32)
    np.save(root / "v.npy", vol)
    return root, net, vol


def _reference(net, vol) -> np.ndarray:
    """The torch network's sliding window over volseg's grid and gaussian blend, CT + sigmoid around it."""
    from volseg.geometry import stride_from_overlap
    from volseg.inference.blend import window
    from volseg.inference.plan import Plan

    patch = (PATCH,) * 3
    plan = Plan.build(vol.shape, patch, stride_from_overlap(patch, 0.5), (16, 16, 16))
    assert plan.domain == vol.shape  # no padding: every patch lies inside the volume
    low, high, mean, std = CT
    x = (np.clip(vol, low, high) - mean) / std
    w = window(patch, "gaussian", sigma_scale=0.125)
    acc = np.zeros((2, *vol.shape))
    norm = np.zeros(vol.shape)
    for z, y, xx in itertools.product(*plan.starts):
        box = np.s_[z:z + PATCH, y:y + PATCH, xx:xx + PATCH]
        with torch.inference_mode():
            out = torch.sigmoid(net(torch.from_numpy(x[box].astype(np.float32))[None, None]))[0].numpy()
        acc[(slice(None), *box)] += out * w
        norm[box] += w
    return (acc / norm).astype(np.float32)


def _invoke(args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _read(path: Path) -> np.ndarray:
    return zarr.open_array(str(path / "0"), mode="r")[:]


NORM = "ct:" + ",".join(str(v) for v in CT)


@pytest.mark.parametrize("name, patch", [("fixed.onnx", []), ("fixed.onnx", ["--patch", "16"]),
                                         ("dynamic.onnx", ["--patch", "16"])])
def test_foreign_onnx_equals_the_torch_networks_sliding_window(box, tmp_path, name, patch):
    root, net, vol = box
    out = tmp_path / "out.zarr"
    r = _invoke(["predict", root / name, root / "v.npy", "-o", out, "--stitch", "--chunks", "16", "--device",
                 "cpu", "--workers", "1", "--quiet", "--normalize", NORM, "--activation", "sigmoid", "--channel", "1", *patch])
    assert r.exit_code == 0, r.stderr + r.stdout
    ours = _read(out)
    assert ours.shape == vol.shape  # channel 1 of the graph's 2 output channels
    np.testing.assert_allclose(ours, _reference(net, vol)[1], atol=1e-4, rtol=0)
    text = (out / "volseg-predict.yml").read_text()
    assert "normalize: ct:-1000.0,1000.0,40.0,300.0" in text and "activation: sigmoid" in text


def _digest(root: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.iterdir()) if p.is_file()}


@pytest.mark.parametrize("args, expect", [
    (["{dynamic.onnx}"], "--patch: is required: "),
    (["{fixed.onnx}", "--patch", "32"], "--patch: 32x32x32: "),
    (["{fixed.onnx}", "--normalize", "ct:1,2,3"], "--normalize: 'ct:1,2,3' is not a normalization"),
    (["{fixed.onnx}", "--normalize", "minmax"], "--normalize: 'minmax' is not a normalization"),
    (["{fixed.onnx}", "--activation", "relu"], "--activation: 'relu' is not an activation"),
    (["{run}", "--normalize", "zscore"], "--normalize: applies to ONNX files that `volseg export` did not write"),
    (["{run}", "--activation", "sigmoid"], "--activation: applies to ONNX files"),
    (["{two.onnx}"], "two.onnx: takes the input a ['n', 1, 16, 16, 16], b ['n', 1, 16, 16, 16], not one"),
], ids=["dynamic-no-patch", "patch-not-fixed", "ct-three-numbers", "unknown-normalize", "unknown-activation",
        "normalize-volseg-run", "activation-volseg-run", "two-inputs"])
def test_bad_foreign_requests_exit_2_with_one_line(box, make_run, tmp_path, args, expect):
    root, _, _ = box
    run = root / "run"
    if not run.exists():
        make_run(run)
    before = _digest(root)
    out = tmp_path / "out.zarr"
    args = [str(root / a[1:-1]) if a.startswith("{") and a != "{run}" else str(run) if a == "{run}" else a
            for a in args]
    r = _invoke(["predict", args[0], root / "v.npy", "-o", out, "--stitch", "--device", "cpu", *args[1:]])
    lines = r.stderr.splitlines()
    assert r.exit_code == 2, (r.exit_code, r.stderr, r.stdout)
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert expect in lines[0], lines[0]
    assert "Traceback" not in r.stderr + r.stdout
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith("out")], "a refused run left output"
    assert _digest(root) == before
