"""Ensembles (``volseg predict RUN1 RUN2 VOLUME --stitch``): the mean of the members' own outputs,
each member at its own patch size, every input chunk read once, members recorded, bad ensembles
refused through the CLI before anything is written."""

import json

import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

from volseg.cli import app
from volseg.inference import predict
from volseg.inference import cache
from volseg.inference.settings import predict_options
from volseg.io import write_volume

from cli_checks import tree


def read(path):
    return zarr.open_array(str(path / "0"), mode="r")[:]


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory, make_run):
    root = tmp_path_factory.mktemp("ensemble")
    a = make_run(root / "a", seed=1)
    b = make_run(root / "b", seed=2, ch=6)
    vol = np.random.default_rng(0).normal(size=(32, 28, 36)).astype(np.float32)
    for name in ("single.zarr", "ens.zarr"):  # two copies: the ensemble's reads start from a cold cache
        write_volume(root / name, vol, chunks=16)
    return root, a, b


def _options(**extra):
    return predict_options(stitch=True, chunks=16, device="cpu", quiet=True, workers=1, **extra)


def _run_with_patch(run, patch):
    """Record a training patch in the run (each member's default patch at inference)."""
    import torch

    payload = torch.load(run / "model.pt", weights_only=False)
    payload["config"] = {"data": {"patch": [patch]}}
    torch.save(payload, run / "model.pt")
    return run


@pytest.fixture(scope="module")
def outputs(ensemble):
    """Each member alone at its own training patch (16 and 24), then the two as an ensemble."""
    root, a, b = ensemble
    _run_with_patch(a, 16)
    _run_with_patch(b, 24)
    one = predict(a, root / "single.zarr", root / "a.zarr", *_options())
    two = predict(b, root / "single.zarr", root / "b.zarr", *_options())
    before = cache.bytes_read()
    both = predict([a, b], root / "ens.zarr", root / "ab.zarr", *_options())
    return one, two, both, cache.bytes_read() - before


def test_ensemble_is_the_mean_of_its_members_and_reads_each_chunk_once(ensemble, outputs):
    root, a, b = ensemble
    one, two, both, decoded = outputs
    nbytes = 32 * 28 * 36 * 4  # a chunk decoded twice would count twice
    assert decoded == nbytes and both["input_bytes_read"] == nbytes
    assert both["input_bytes_read_per_byte"] == 1.0 and both["members"] == 2
    assert both["patches"] == one["patches"] + two["patches"]
    expected = (read(root / "a.zarr").astype(np.float64) + read(root / "b.zarr")) / 2
    np.testing.assert_allclose(read(root / "ab.zarr"), expected, atol=1e-6, rtol=0)
    recorded = json.dumps(zarr.open_group(str(root / "ab.zarr"), mode="r").attrs.asdict())
    assert '"ensemble_mean": "arithmetic"' in recorded and str(b) in recorded
    assert '"patch": [24, 24, 24]' in recorded and '"patch": [16, 16, 16]' in recorded
    assert "\"ensemble_mean\"" not in json.dumps(zarr.open_group(str(root / "a.zarr"), mode="r").attrs.asdict())


def test_geometric_mean_is_the_sigmoid_of_the_mean_logit(ensemble, outputs):
    root, a, b = ensemble
    predict([a, b], root / "ens.zarr", root / "geo.zarr", *_options(ensemble_mean="geometric"))
    pa, pb = read(root / "a.zarr").astype(np.float64), read(root / "b.zarr").astype(np.float64)
    logit = (np.log(pa / (1 - pa)) + np.log(pb / (1 - pb))) / 2
    np.testing.assert_allclose(read(root / "geo.zarr"), 1 / (1 + np.exp(-logit)), atol=1e-5, rtol=0)


def test_an_interrupted_ensemble_resumes_to_the_same_output(ensemble, outputs, tmp_path):
    root, a, b = ensemble
    first = predict([a, b], root / "ens.zarr", tmp_path / "p.zarr", *_options(part="1/2"))
    assert not first["complete"]
    second = predict([a, b], root / "ens.zarr", tmp_path / "p.zarr", *_options(part="2/2"))
    assert second["complete"] and second["chunks_done_before"] == 0
    np.testing.assert_array_equal(read(tmp_path / "p.zarr"), read(root / "ab.zarr"))


def _two_channel_run(path, make_run):
    """A run whose model takes the volume and one condition image (2 input channels)."""
    import torch

    from volseg.models import build_model

    cfg = {"type": "unet", "in_channels": 2, "out_ch": 1, "ch": 4, "depth": 2, "condition": ["mask"]}
    path.mkdir(parents=True, exist_ok=True)
    torch.save({"format": "volseg-run", "version": 1, "model_config": cfg,
                "state_dict": build_model(cfg).state_dict()}, path / "model.pt")
    return path


def _bad_cases(root, a, b, make_run, make_diffusion_run):
    two = _two_channel_run(root / "two", make_run)
    diff = make_diffusion_run(root / "diff")
    vol = str(root / "ens.zarr")
    return [
        ([str(a), str(two), vol, "--stitch"], rf"^error: {two}: takes 2 input channel\(s\) \(conditions mask\) but {a} "
                                              r"takes 1; the runs of an ensemble must take the same inputs$"),
        ([str(two), str(a), vol, "--stitch"], rf"^error: {a}: takes 1 input channel\(s\) but {two} takes 2"),
        ([str(a), str(b), vol], r"^error: RUN: 2 runs form an ensemble, which blends into one volume: add --stitch"),
        ([str(a), str(diff), vol, "--stitch"], rf"^error: {diff}: is a diffusion run; an ensemble averages"),
        ([str(a), str(b), vol, "--stitch", "--ensemble-mean", "median"],
         r"^error: --ensemble-mean: 'median' is not a mean; use arithmetic or geometric$"),
        ([str(a), str(b), vol, "--stitch", "--tta-rotate", "60"], r"^error: --tta-rotate: must be in \[0, 45\] degrees"),
        ([str(a), str(root / "missing"), vol, "--stitch"], rf"^error: {root / 'missing'}"),
        ([str(a), str(b), vol, "--stitch", "--roi", "0:8,:,:"], r"^error: --roi: 0:8,:,:: applies to one run"),
    ]


def test_bad_ensembles_exit_2_with_one_error_line_and_write_nothing(ensemble, make_run, make_diffusion_run):
    root, a, b = ensemble
    for args, pattern in _bad_cases(root, a, b, make_run, make_diffusion_run):
        before = tree(root)
        out = root / "bad.zarr"
        result = CliRunner().invoke(app, ["predict", *args, "-o", str(out), "--quiet"])
        lines = result.stderr.strip().splitlines()
        assert result.exit_code == 2, (args, result.output)
        assert len(lines) == 1 and "Traceback" not in result.output, (args, result.stderr)
        import re

        assert re.search(pattern, lines[0]), (args, lines[0])
        assert not out.exists() and not list(root.glob("bad.zarr*")), args
        assert tree(root) == before, args


def test_a_run_infers_at_a_larger_patch_than_it_trained_at(ensemble, tmp_path):
    root, a, _ = ensemble
    _run_with_patch(a, 16)  # fully convolutional: any patch divisible by 2**depth = 4
    result = predict(a, root / "single.zarr", tmp_path / "big.zarr", *_options(patch=24))
    assert result["complete"] and read(tmp_path / "big.zarr").shape == (32, 28, 36)
    assert '"patch": [24, 24, 24]' in json.dumps(zarr.open_group(str(tmp_path / "big.zarr"), mode="r").attrs.asdict())
