"""predict: seamless stitching of a real UNet3D, fused == store + stitch, parts, schedulers, options."""

import numpy as np
import pytest
import torch
import zarr

from volseg.inference.settings import predict_options
from volseg.errors import VolsegError
from volseg.inference import predict, stitch
from volseg.models import load_model
from volseg.parallel import Execution


def test_default_patch_is_the_training_patch():
    from volseg.inference.setup import default_patch

    assert default_patch({"config": {"data": {"patch": [32, 64, 64]}}}) == (32, 64, 64)
    assert default_patch({"config": {"data": {"patch": [48]}}}) == (48, 48, 48)
    assert default_patch({}) == (64, 64, 64)


def read(path):
    return zarr.open_array(str(path / "0"), mode="r")[:]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, make_run):
    root = tmp_path_factory.mktemp("predict")
    run = make_run(root / "run")
    vol = np.random.default_rng(0).normal(size=(29, 40, 23)).astype(np.float32)
    np.save(root / "vol.npy", vol)
    return root, run, root / "vol.npy", vol


def test_stitched_unet_is_close_to_a_whole_volume_pass_and_no_worse_than_monai(setup, tmp_path):
    monai = pytest.importorskip("monai.inferers")
    torch.set_num_threads(1)
    _, run, _, vol = setup
    model = load_model(run)
    x = torch.from_numpy(vol)[None, None]
    with torch.inference_mode():
        whole = model(x[..., :28, :40, :20])[0, 0].numpy()  # sides divisible by 4
    crop = vol[:28, :40, :20]
    np.save(tmp_path / "crop.npy", crop)
    predict(run, tmp_path / "crop.npy", tmp_path / "ours.zarr", *predict_options(patch=16, overlap=0.5, stitch=True, chunks=16, device="cpu", quiet=True))
    ours = read(tmp_path / "ours.zarr")
    with torch.inference_mode():
        theirs = monai.sliding_window_inference(torch.from_numpy(crop)[None, None], (16, 16, 16), 4, model,
                                                overlap=0.5, mode="gaussian", sigma_scale=0.125)[0, 0].numpy()
    err_ours = np.abs(ours - whole).mean()
    err_monai = np.abs(theirs - whole).mean()
    assert err_ours < 0.05  # GroupNorm statistics differ per patch, so not exact
    assert err_ours <= err_monai * 1.001 + 1e-6, (err_ours, err_monai)


def test_fused_equals_store_then_stitch(setup, tmp_path):
    _, run, vol_path, vol = setup
    fused = predict(run, vol_path, tmp_path / "fused.zarr", *predict_options(patch=16, stitch=True, chunks=16, device="cpu", quiet=True))
    store = predict(run, vol_path, tmp_path / "store.zarr", *predict_options(patch=16, chunks=16, device="cpu", quiet=True))
    stitch(tmp_path / "store.zarr", tmp_path / "stitched.zarr", chunks=16, execution=Execution.parse(quiet=True))
    a, b = read(tmp_path / "fused.zarr"), read(tmp_path / "stitched.zarr")
    assert a.shape == vol.shape
    np.testing.assert_allclose(a, b, atol=2e-3)
    assert fused["patches"] == store["patches"] == 3 * 4 * 2  # every patch computed once
    assert fused["input_bytes_read_per_byte"] <= 1.0  # the chunk cache decodes each chunk once


def test_chunk_cache_reads_whole_chunks_once(tmp_path):
    from volseg.inference.plan import read_box

    data = np.arange(20 * 18 * 9, dtype=np.float32).reshape(20, 18, 9)
    arr = zarr.create_array(str(tmp_path / "a.zarr"), shape=data.shape, chunks=(8, 8, 8), dtype="float32")
    arr[:] = data
    box, nbytes = read_box(arr, (3, 5, 0), (17, 18, 9), data.shape, key="a-test", chunks=(8, 8, 8))
    np.testing.assert_array_equal(box, data[3:17, 5:18, 0:9])
    assert nbytes == data[0:20, 0:18, 0:9].nbytes  # every chunk touched, each once
    again, nbytes = read_box(arr, (0, 0, 0), (20, 18, 9), data.shape, key="a-test", chunks=(8, 8, 8))
    np.testing.assert_array_equal(again, data)
    assert nbytes == 0
    padded, _ = read_box(arr, (0, 0, 0), (20, 18, 16), data.shape, key="a-test", chunks=(8, 8, 8))
    np.testing.assert_array_equal(padded[..., 9:], data[..., 7:0:-1])  # mirrored far end


def test_parts_together_equal_one_run(setup, tmp_path):
    _, run, vol_path, _ = setup
    predict(run, vol_path, tmp_path / "one.zarr", *predict_options(patch=16, stitch=True, chunks=16, device="cpu", quiet=True))
    p1 = predict(run, vol_path, tmp_path / "parts.zarr", *predict_options(patch=16, stitch=True, chunks=16, device="cpu", part="1/2", quiet=True))
    p2 = predict(run, vol_path, tmp_path / "parts.zarr", *predict_options(patch=16, stitch=True, chunks=16, device="cpu", part=(1, 2), quiet=True))
    assert p1["chunks_written"] + p2["chunks_written"] == 2 * 3 * 2
    np.testing.assert_array_equal(read(tmp_path / "parts.zarr"), read(tmp_path / "one.zarr"))


@pytest.mark.slow
def test_threads_processes_and_local_cluster_agree(setup, tmp_path):
    _, run, vol_path, _ = setup
    outs = {}
    for sched, workers in (("threads", 2), ("processes", 2), ("distributed", 1)):
        predict(run, vol_path, tmp_path / f"{sched}.zarr", *predict_options(patch=16, stitch=True, chunks=16, device="cpu", scheduler=sched, workers=workers, quiet=True))
        outs[sched] = read(tmp_path / f"{sched}.zarr")
    np.testing.assert_allclose(outs["processes"], outs["threads"], atol=1e-6)
    np.testing.assert_allclose(outs["distributed"], outs["threads"], atol=1e-6)


def test_skip_value_gives_the_model_answer_without_running_it(setup, tmp_path):
    _, run, _, _ = setup
    vol = np.zeros((32, 32, 32), np.float32)
    vol[20:, 20:, 20:] = np.random.default_rng(3).normal(size=(12, 12, 12))
    np.save(tmp_path / "sparse.npy", vol)
    full = predict(run, tmp_path / "sparse.npy", tmp_path / "full.zarr", *predict_options(patch=16, stitch=True, chunks=16, device="cpu", quiet=True))
    skip = predict(run, tmp_path / "sparse.npy", tmp_path / "skip.zarr", *predict_options(patch=16, stitch=True, chunks=16, device="cpu", skip_value=0, quiet=True))
    assert skip["patches_skipped"] > 0 and skip["patches"] < full["patches"]
    d = np.abs(read(tmp_path / "skip.zarr") - read(tmp_path / "full.zarr")); assert d.max() < 1e-3  # batches of other sizes round differently


def test_volume_smaller_than_the_patch_is_mirror_padded_or_refused(setup, tmp_path):
    _, run, _, _ = setup
    small = np.random.default_rng(4).normal(size=(9, 20, 1)).astype(np.float32)
    np.save(tmp_path / "small.npy", small)
    predict(run, tmp_path / "small.npy", tmp_path / "small.zarr", *predict_options(patch=16, stitch=True, device="cpu", quiet=True))
    assert read(tmp_path / "small.zarr").shape == small.shape
    with pytest.raises(VolsegError, match="--patch"):
        predict(run, tmp_path / "small.npy", tmp_path / "nopad.zarr", *predict_options(patch=16, stitch=True, pad=False, device="cpu", quiet=True))
    assert not (tmp_path / "nopad.zarr").exists()


def test_threshold_multiclass_tta_and_amp(setup, tmp_path, make_run):
    _, run, vol_path, _ = setup
    base = predict(run, vol_path, tmp_path / "p.zarr", *predict_options(patch=16, stitch=True, chunks=16, device="cpu", quiet=True))
    probs = read(tmp_path / "p.zarr")
    predict(run, vol_path, tmp_path / "t.zarr", *predict_options(patch=16, stitch=True, chunks=16, device="cpu", threshold=0.5, quiet=True))
    labels = read(tmp_path / "t.zarr")
    assert labels.dtype == np.uint8 and (labels == (probs >= 0.5)).mean() > 0.999
    predict(run, vol_path, tmp_path / "tta.zarr", *predict_options(patch=16, stitch=True, chunks=16, device="cpu", tta=True, quiet=True))
    tta = read(tmp_path / "tta.zarr")
    assert tta.shape == probs.shape and 0 < np.abs(tta - probs).max() < 0.5
    predict(run, vol_path, tmp_path / "amp.zarr", *predict_options(patch=16, stitch=True, chunks=16, device="cpu", amp=True, dtype="float16", quiet=True))
    amp = read(tmp_path / "amp.zarr")
    assert amp.dtype == np.float16 and np.abs(amp.astype(np.float32) - probs).max() < 0.05
    multi = make_run(tmp_path / "multi", out_ch=3)
    predict(multi, vol_path, tmp_path / "m.zarr", *predict_options(patch=16, stitch=True, chunks=16, device="cpu", quiet=True))
    assert read(tmp_path / "m.zarr").dtype == np.uint8 and read(tmp_path / "m.zarr").max() <= 2
    predict(multi, vol_path, tmp_path / "m1.zarr", *predict_options(patch=16, stitch=True, chunks=16, device="cpu", channel=1, quiet=True))
    assert read(tmp_path / "m1.zarr").dtype == np.float32
    assert base["chunks_written"] == 12


def test_fused_pass_runs_each_group_once_and_memory_does_not_grow_with_depth(live_pieces):
    from volseg.inference.engine import run_pass
    from volseg.inference.plan import Plan

    def peak_live(shape):
        plan = Plan.build(shape, (32, 32, 32), (16, 16, 16), (32, 32, 32))
        probe = live_pieces(plan)
        with Execution.parse(workers=2, quiet=True).executor() as executor:
            finals, _ = run_pass(plan, plan.chunk_list(), probe.group, probe.final, executor=executor, window=4)
        assert all(finals) and len(finals) == len(plan.chunk_list())
        assert sorted(probe.calls) == plan.group_list()  # every group exactly once
        return probe.peak

    shallow, deep = peak_live((256, 64, 64)), peak_live((1024, 64, 64))  # 4x deeper
    assert deep <= shallow + 8, (shallow, deep)
