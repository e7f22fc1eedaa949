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


def _ct(x):
    low, high, mean, std = CT
    return (np.clip(x, low, high) - mean) / std


def _zscore(x):
    return (x - x.mean()) / x.std()


def _reference(net, vol, norm=_ct, act=torch.sigmoid) -> np.ndarray:
    """The torch network's sliding window over volseg's grid and gaussian blend, ``norm`` applied to
    each patch before it and ``act`` after it."""
    from volseg.geometry import stride_from_overlap
    from volseg.inference.blend import window
    from volseg.inference.plan import Plan

    patch = (PATCH,) * 3
    plan = Plan.build(vol.shape, patch, stride_from_overlap(patch, 0.5), (16, 16, 16))
    assert plan.domain == vol.shape  # no padding: every patch lies inside the volume
    w = window(patch, "gaussian", sigma_scale=0.125)
    acc = np.zeros((2, *vol.shape))
    total = np.zeros(vol.shape)
    for z, y, xx in itertools.product(*plan.starts):
        box = np.s_[z:z + PATCH, y:y + PATCH, xx:xx + PATCH]
        with torch.inference_mode():
            patch_in = torch.from_numpy(norm(vol[box].astype(np.float64)).astype(np.float32))[None, None]
            out = act(net(patch_in))[0].numpy()
        acc[(slice(None), *box)] += out * w
        total[box] += w
    return (acc / total).astype(np.float32)


def _invoke(args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _read(path: Path) -> np.ndarray:
    return zarr.open_array(str(path / "0"), mode="r")[:]


NORM = "ct:" + ",".join(str(v) for v in CT)


@pytest.mark.parametrize("name, extra", [
    ("fixed.onnx", []),  # batch 1 fixed in the graph: the runner's batches go through one by one
    ("fixed.onnx", ["--patch", "16"]),
    ("dynamic.onnx", ["--patch", "16"]),
    ("dynamic.onnx", ["--patch", "16", "--scheduler", "processes", "--workers", "2"]),  # options reach workers
])
def test_foreign_onnx_equals_the_torch_networks_sliding_window(box, tmp_path, name, extra):
    root, net, vol = box
    out = tmp_path / "out.zarr"
    workers = [] if "--workers" in extra else ["--workers", "1"]
    r = _invoke(["predict", root / name, root / "v.npy", "-o", out, "--stitch", "--chunks", "16", "--device",
                 "cpu", "--quiet", "--normalize", NORM, "--activation", "sigmoid", "--channel", "1", *workers,
                 *extra])
    assert r.exit_code == 0, r.stderr + r.stdout
    ours = _read(out)
    assert ours.shape == vol.shape  # channel 1 of the graph's 2 output channels
    np.testing.assert_allclose(ours, _reference(net, vol)[1], atol=1e-4, rtol=0)
    text = (out / "volseg-predict.yml").read_text()
    assert "normalize: ct:-1000.0,1000.0,40.0,300.0" in text and "activation: sigmoid" in text


def test_zscore_is_per_patch_and_softmax_over_channels(box, tmp_path):
    root, net, vol = box
    out = tmp_path / "out.zarr"
    r = _invoke(["predict", root / "fixed.onnx", root / "v.npy", "-o", out, "--stitch", "--chunks", "16",
                 "--device", "cpu", "--workers", "1", "--quiet", "--normalize", "zscore", "--activation", "softmax",
                 "--channel", "0"])
    assert r.exit_code == 0, r.stderr + r.stdout
    want = _reference(net, vol, norm=_zscore, act=lambda y: torch.softmax(y, dim=1))[0]
    np.testing.assert_allclose(_read(out), want, atol=1e-4, rtol=0)


def test_the_options_are_recorded_only_when_given_and_a_resume_with_others_is_refused(box, tmp_path):
    from volseg.inference.settings import PredictSettings

    plain = PredictSettings.parse(patch=16)
    assert not {"normalize", "activation"} & set(plain.to_dict())
    facts = dict(model_sha256="0", volume="v", volume_stamp=None, volume_shape=(40, 40, 40), stride=(8, 8, 8),
                 kind="unet")
    assert not {"normalize", "activation"} & set(plain.fingerprint(**facts))
    given = PredictSettings.parse(patch=16, normalize="ZSCORE", activation="none")
    assert given.to_dict()["normalize"] == "zscore" and given.fingerprint(**facts)["activation"] == "none"
    root, _, _ = box
    out = tmp_path / "out.zarr"
    base = ["predict", root / "fixed.onnx", root / "v.npy", "-o", out, "--stitch", "--chunks", "16", "--device",
            "cpu", "--workers", "1", "--channel", "1"]
    assert _invoke([*base, "--normalize", NORM]).exit_code == 0
    again = _invoke([*base, "--config", out / "volseg-predict.yml"])  # the recorded settings resume it
    assert again.exit_code == 0 and "resumed" in again.stdout, again.stderr
    other = _invoke([*base, "--normalize", "zscore"])
    assert other.exit_code == 2 and len(other.stderr.splitlines()) == 1, other.stderr
    assert "exists with other settings: normalize='ct:-1000.0,1000.0,40.0,300.0' (now 'zscore')" in other.stderr


def test_dynamic_output_channels_are_probed_and_a_dynamic_input_channel_is_refused(tmp_path):
    from onnx import TensorProto, helper

    from volseg.errors import VolsegError
    from volseg.models.exported import load_exported
    from volseg.models.foreign import Foreign

    def save(name, channels):
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", channels, "z", "y", "x"])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", "c", "z", "y", "x"])
        graph = helper.make_graph([helper.make_node("Concat", ["x", "x", "x"], ["y"], axis=1)], "g", [x], [y])
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8),
                  str(tmp_path / name))

    save("probe.onnx", 1)
    model = load_exported(tmp_path / "probe.onnx", foreign=Foreign(patch=(8, 8, 8)))
    assert (model.in_channels, model.out_channels, model.depth) == (1, 3, 0)
    save("c.onnx", "c_in")
    with pytest.raises(VolsegError, match="dynamic channel dimension 'c_in'"):
        load_exported(tmp_path / "c.onnx")


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
