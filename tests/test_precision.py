"""--amp where it pays off: fp16 + GradScaler on CUDA, bf16 on a CPU with native bf16, fp32 with
one warning elsewhere (train, predict, the shared decision)."""

import numpy as np
import pytest
import torch
import zarr
from typer.testing import CliRunner

from volseg.cli import app
from volseg.models.precision import amp_pays_off, use_amp

torch.set_num_threads(1)
runner = CliRunner()
no_bf16 = pytest.mark.skipif(amp_pays_off("cpu"), reason="this CPU has native bf16: --amp runs bf16")
WARNING = ("warning: --amp: this CPU has no native bf16 (AVX512-BF16 or AMX), where bf16 autocast is "
           "about 100x slower than fp32; running in fp32 (--amp pays off on CUDA or on a CPU with "
           "native bf16)")


def test_the_decision(capsys):
    assert use_amp("cuda", True) is True and use_amp("cuda:1", False) is False  # CUDA: unchanged
    assert use_amp("cpu", False) is False
    assert capsys.readouterr().err == ""
    assert use_amp("cpu", True) is amp_pays_off("cpu")
    assert capsys.readouterr().err == ("" if amp_pays_off("cpu") else WARNING + "\n")
    assert use_amp("cpu", True, warn=False) is amp_pays_off("cpu")
    assert capsys.readouterr().err == ""


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_keeps_fp16_and_the_grad_scaler():
    from volseg.training.loop import autocast, grad_scaler

    device = torch.device("cuda")
    assert use_amp(device, True) and grad_scaler(device, True).is_enabled()
    with autocast(device, True):
        assert torch.get_autocast_dtype("cuda") == torch.float16


@no_bf16
def test_train_amp_runs_in_fp32_with_one_warning(tmp_path, make_run):
    from test_cli_train import _store

    store = _store(tmp_path / "p.zarr", n=4)
    cfg = tmp_path / "cfg.yml"
    cfg.write_text("model: {ch: 4, depth: 2}\n")
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", str(store), "-o", str(run), "--config", str(cfg), "--amp",
                                 "--steps", "2", "--device", "cpu", "--quiet", "--json", "-"])
    assert result.exit_code == 0, result.output
    assert result.stderr.strip().splitlines() == [WARNING]
    assert '"amp": false' in result.stdout
    assert "amp: false" in (run / "config.yml").read_text()


@no_bf16
def test_predict_amp_runs_in_fp32_with_one_warning(tmp_path, make_run):
    run = make_run(tmp_path / "run")
    np.save(tmp_path / "v.npy", np.random.default_rng(0).normal(size=(16, 16, 16)).astype(np.float32))
    outs = {}
    for flag in ("--amp", None):
        out = tmp_path / f"{flag}.zarr"
        args = ["predict", run, tmp_path / "v.npy", "-o", out, "--patch", "8", "--stitch", "--chunks", "16",
                "--device", "cpu", "--quiet", "--dtype", "float32"] + ([flag] if flag else [])
        result = runner.invoke(app, [str(a) for a in args])
        assert result.exit_code == 0, result.output
        assert result.stderr.strip().splitlines() == ([WARNING] if flag else [])
        outs[flag] = zarr.open_group(str(out), mode="r")["0"][:]
    np.testing.assert_array_equal(outs["--amp"], outs[None])  # the same fp32 computation
