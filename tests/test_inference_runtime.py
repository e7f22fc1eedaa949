"""volseg.inference.runtime: layout, runtime and batch choices give the same outputs within 1e-5.

Real runs, real ONNX exports (into the session's ``VOLSEG_MODEL_CACHE``), real CLI; the
seam / resume / ``--part`` tests of the fused pass run under ``--runtime onnx`` too
(tests/test_column_tiles.py).
"""

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from typer.testing import CliRunner

from volseg.cli import app
from volseg.errors import VolsegError
from volseg.inference.runner import Runner
from volseg.inference.runtime import (auto_batch_size, cache_dir, choose_runtime, onnx_model,
                                      parse_batch_option, parse_runtime)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cli_checks import one_error_line, tree  # noqa: E402

TOL = 1e-5


@pytest.fixture(scope="module")
def files(tmp_path_factory, make_run, make_diffusion_run):
    """A small UNet run with a 2-class head and input normalisation, a diffusion run, a volume."""
    root = tmp_path_factory.mktemp("runtime")
    make_run(root / "run", out_ch=2, norm_mean=100.0, norm_std=20.0)
    make_diffusion_run(root / "diff")
    np.save(root / "v.npy", (100 + 20 * np.random.default_rng(0).normal(size=(24, 40, 32))).astype(np.float32))
    return root


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_layouts_batches_and_runtimes_agree_within_1e5(files):
    model = str(files / "run" / "model.pt")
    patches = (100 + 20 * np.random.default_rng(1).normal(size=(5, 1, 8, 12, 8))).astype(np.float32)
    today = Runner(model, batch_size=4).predict(patches)  # contiguous, the layout before channels-last
    onnx = choose_runtime("onnx", model, kind="unet", device="cpu", amp=False)
    assert onnx.name == "onnxruntime" and Path(onnx.model_file).parent == cache_dir()
    for runner in (Runner(model, batch_size=1, channels_last=True), Runner(model, batch_size=5, channels_last=True),
                   Runner(model, batch_size=2), Runner(onnx.model_file, batch_size=3),
                   Runner(onnx.model_file, batch_size=2, tta=False)):
        got = runner.predict(patches)
        assert got.shape == today.shape and got.dtype == np.float32 and got.flags.c_contiguous
        np.testing.assert_allclose(got, today, rtol=0, atol=TOL)
    np.testing.assert_allclose(Runner(model, batch_size=2, tta=True, channels_last=True).predict(patches[:2]),
                               Runner(model, batch_size=1, tta=True).predict(patches[:2]), rtol=0, atol=TOL)


def test_auto_chooses_torch_in_channels_last_for_a_run_and_the_files_runtime_for_an_export(files):
    model = str(files / "run" / "model.pt")
    auto = choose_runtime("auto", model, kind="unet", device="cpu", amp=True)
    assert auto.to_dict() == {"runtime": "torch", "layout": "channels_last_3d"} and auto.model_file == model
    assert choose_runtime("torch", model, kind="diffusion", device="cpu", amp=False).channels_last is False
    exported = str(onnx_model(model))
    assert choose_runtime("auto", exported, kind="unet", device="cpu", amp=False).to_dict() == {
        "runtime": "onnxruntime", "layout": "contiguous"}
    assert choose_runtime("onnx", exported, kind="unet", device="cpu", amp=False).model_file == exported


def test_the_onnx_export_is_cached_by_the_checkpoint_digest(files, tmp_path, make_run):
    from volseg.models.export import sha256_file

    model = files / "run" / "model.pt"
    before = tree(files / "run")
    first = onnx_model(str(model))
    assert first == cache_dir() / f"{sha256_file(model)}.onnx"
    stamp = first.stat().st_mtime_ns
    copy = make_run(tmp_path / "copy", out_ch=2, norm_mean=100.0, norm_std=20.0)
    assert onnx_model(str(copy / "model.pt")) == first and first.stat().st_mtime_ns == stamp  # same bytes, reused
    assert all(p.suffix == ".onnx" and ".tmp-" not in p.name for p in cache_dir().iterdir())  # nothing half-written
    assert tree(files / "run") == before  # the run folder (an input) is never written


def test_auto_batch_size_aims_at_1m_voxels_within_the_memory_guard(monkeypatch):
    import volseg.memlimit

    assert [auto_batch_size((p,) * 3) for p in (16, 32, 48, 64, 96, 128, 256)] == [8, 8, 8, 4, 1, 1, 1]
    assert auto_batch_size((32, 64, 64)) == 8 and auto_batch_size((64, 128, 128)) == 1
    monkeypatch.setattr(volseg.memlimit, "machine_memory", lambda: 6 * 2**20)
    assert auto_batch_size((64, 64, 64)) == 2  # 4 patches (9.4 MB of input, output, weights) do not fit
    assert parse_batch_option(" AUTO ") is None and parse_batch_option(3.0) == 3
    for bad in (0, -2, "x", "1.5", "nan"):
        with pytest.raises(VolsegError, match="--batch-size"):
            parse_batch_option(bad)
    with pytest.raises(VolsegError, match="--runtime.*auto, torch or onnx"):
        parse_runtime("tensorrt")


def test_cli_defaults_and_onnx_write_the_same_volume_and_record_the_choice(files, tmp_path):
    outs = {}
    for name, extra in (("default", ()), ("torch-b1", ("--runtime", "torch", "--batch-size", "1")),
                        ("onnx", ("--runtime", "onnx", "--batch-size", "3"))):
        out = tmp_path / f"{name}.zarr"
        r = invoke("predict", files / "run", files / "v.npy", "-o", out, "--patch", "16", "--stitch",
                   "--device", "cpu", "--quiet", "--json", tmp_path / f"{name}.json", *extra)
        assert r.exit_code == 0, r.stderr
        outs[name] = (zarr.open_array(str(out / "0"), mode="r")[:], json.loads((tmp_path / f"{name}.json").read_text()))
    facts = {k: {f: v[1][f] for f in ("runtime", "layout", "batch_size")} for k, v in outs.items()}
    assert facts == {"default": {"runtime": "torch", "layout": "channels_last_3d", "batch_size": 8},
                     "torch-b1": {"runtime": "torch", "layout": "channels_last_3d", "batch_size": 1},
                     "onnx": {"runtime": "onnxruntime", "layout": "contiguous", "batch_size": 3}}
    for name in ("torch-b1", "onnx"):
        np.testing.assert_allclose(outs[name][0], outs["default"][0], rtol=0, atol=TOL)
    # neither is a setting of the output: a resumed run may change them
    r = invoke("predict", files / "run", files / "v.npy", "-o", tmp_path / "default.zarr", "--patch", "16",
               "--stitch", "--device", "cpu", "--quiet", "--runtime", "onnx", "--batch-size", "2")
    assert r.exit_code == 0, r.stderr


@pytest.mark.parametrize("extra,run,needles", [
    (("--runtime", "tensorrt"), "run", ("--runtime", "auto, torch or onnx")),
    (("--batch-size", "0"), "run", ("--batch-size", "auto")),
    (("--batch-size", "many"), "run", ("--batch-size", "'many'")),
    (("--runtime", "onnx", "--amp"), "run", ("--runtime", "--amp")),
    (("--runtime", "onnx"), "diff", ("--runtime", "diffusion")),
    (("--runtime", "torch"), "onnx", ("--runtime", "onnxruntime")),
])
def test_bad_runtime_and_batch_options_exit_2_with_one_line(files, tmp_path, extra, run, needles):
    model = str(onnx_model(str(files / "run" / "model.pt"))) if run == "onnx" else files / run
    before = tree(files)
    r = invoke("predict", model, files / "v.npy", "-o", tmp_path / "o.zarr", "--patch", "16", "--stitch",
               "--device", "cpu", *extra)
    one_error_line(r, *needles)
    assert not (tmp_path / "o.zarr").exists() and tree(files) == before


def test_onnx_on_cuda_needs_onnxruntimes_cuda_provider(files):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime-gpu installed")
    with pytest.raises(VolsegError, match="--runtime.*onnxruntime-gpu"):
        choose_runtime("onnx", str(files / "run" / "model.pt"), kind="unet", device="cuda:0", amp=False)


def test_an_unwritable_cache_is_refused_naming_the_fix(files, tmp_path, monkeypatch):
    if os.geteuid() == 0:
        folder = tmp_path / "file"
        folder.write_text("")  # root writes anywhere: a file in the way is what it cannot use
        monkeypatch.setenv("VOLSEG_MODEL_CACHE", str(folder / "sub"))
    else:
        folder = tmp_path / "ro"
        folder.mkdir(mode=0o500)
        monkeypatch.setenv("VOLSEG_MODEL_CACHE", str(folder))
    with pytest.raises(VolsegError, match="VOLSEG_MODEL_CACHE.*--runtime torch"):
        onnx_model(str(files / "run" / "model.pt"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_runs_channels_last_with_cudnn_autotuning_and_matches_the_cpu(files):
    model = str(files / "run" / "model.pt")
    patches = (100 + 20 * np.random.default_rng(2).normal(size=(3, 1, 16, 16, 16))).astype(np.float32)
    rt = choose_runtime("auto", model, kind="unet", device="cuda:0", amp=False)
    assert rt.channels_last
    gpu = Runner(model, device="cuda:0", batch_size=2, channels_last=True)
    np.testing.assert_allclose(gpu.predict(patches), Runner(model).predict(patches), rtol=0, atol=1e-4)
    assert torch.backends.cudnn.benchmark
    conv = next(p for p in gpu.model.parameters() if p.dim() == 5 and p.shape[-1] == 3)
    assert conv.is_cuda and conv.is_contiguous(memory_format=torch.channels_last_3d)
    half = Runner(model, device="cuda:0", batch_size=2, amp=True, channels_last=True).predict(patches)
    assert half.dtype == np.float32 and np.abs(half - Runner(model).predict(patches)).max() < 1e-2


def test_forwards_use_every_core_in_turns_or_share_them_between_processes(files, monkeypatch):
    from volseg.inference.settings import PredictSettings
    from volseg.inference.setup import prepare, threads_per_worker
    from volseg.parallel import parse_workers

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cores = parse_workers(None)
    # threads of one process take turns at large forwards (forward_turn), each with every core
    assert threads_per_worker(cores, 8, scheduler="threads", voxels=None) == cores
    # 16^3 patches (8 per pass: 32768 voxels) are small: side by side, except for one task
    one = prepare(files / "run", str(files / "v.npy"), PredictSettings.parse(patch=16, chunks=64), workers=cores)
    many = prepare(files / "run", str(files / "v.npy"), PredictSettings.parse(patch=16, chunks=8), workers=cores)
    assert len(one.plan.chunk_list()) == 1 and one.runner.threads == cores
    assert len(many.plan.chunk_list()) >= cores and many.runner.threads == max(1, cores // cores)
    assert threads_per_worker(cores, scheduler="synchronous") == cores
    # small forwards (below TURN_VOXELS, e.g. nnU-Net's 32^3 tiles one at a time) run
    # single-threaded side by side instead
    from volseg.inference.setup import TURN_VOXELS

    assert threads_per_worker(cores, scheduler="threads", voxels=TURN_VOXELS) == cores
    assert threads_per_worker(cores, scheduler="threads", voxels=32 ** 3) == max(1, cores // cores)
    assert threads_per_worker(cores, 1, scheduler="threads", voxels=32 ** 3) == cores  # one task
    # one process per worker: the cores are shared, except where fewer tasks than workers exist
    one = prepare(files / "run", str(files / "v.npy"), PredictSettings.parse(patch=16, chunks=64), workers=cores,
                  scheduler="processes")
    assert len(one.plan.chunk_list()) == 1 and one.runner.threads == cores  # one task: no idle cores
    many = prepare(files / "run", str(files / "v.npy"), PredictSettings.parse(patch=16, chunks=8), workers=cores,
                   scheduler="processes")
    assert len(many.plan.chunk_list()) >= cores and many.runner.threads == max(1, cores // cores)
    assert threads_per_worker(cores, tasks=1, scheduler="processes") == cores
    assert threads_per_worker(1, scheduler="distributed") == cores
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads_per_worker(cores, tasks=1) == 3 and threads_per_worker(cores, scheduler="processes") == 3


@pytest.mark.parametrize("threads", [None, 2])
def test_cpu_forwards_on_several_threads_take_turns(threads):
    import threading

    from volseg.inference.runner import forward_turn

    inside, most = [0], [0]
    lock = threading.Lock()

    def work():
        for _ in range(50):
            with forward_turn("cpu", threads):
                with lock:
                    inside[0] += 1
                    most[0] = max(most[0], inside[0])
                threading.Event().wait(0.0005)
                with lock:
                    inside[0] -= 1

    workers = [threading.Thread(target=work) for _ in range(4)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert most[0] == 1


def test_single_threaded_and_cuda_forwards_run_side_by_side():
    from volseg.inference.runner import forward_turn

    # no lock: nested use does not block (OMP_NUM_THREADS=1 workers, CUDA streams)
    with forward_turn("cpu", 1), forward_turn("cpu", 1), forward_turn("cuda:0"), forward_turn("cuda:0"):
        pass
