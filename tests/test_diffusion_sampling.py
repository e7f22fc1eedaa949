"""Patch-wise DDIM over a whole volume: equals whole-volume sampling for one patch, is seeded by
position only (threads vs processes, workers), shows no seams over many patches (the seam measure
of the UNet, test_seams.py), resumes after a kill, and refuses what it cannot do."""

import numpy as np
import pytest
import torch
import zarr

from seam_checks import HARD_CUT, NO_SEAM, smooth_field, train_diffusion
from volseg.inference.settings import predict_options
from volseg.errors import VolsegError
from volseg.geometry import chunk_bounds, chunk_indices
from volseg.inference import predict
from volseg.inference.diffusion_sampling import _INIT, chunk_noise, sampling_sequence
from volseg.models import load_model


def read(path):
    return zarr.open_array(str(path / "0"), mode="r")[:]


@pytest.fixture(scope="module")
def drun(tmp_path_factory, make_diffusion_run):
    root = tmp_path_factory.mktemp("diff")
    run = make_diffusion_run(root / "run")
    vol = np.random.default_rng(0).normal(size=(20, 14, 12)).astype(np.float32)
    np.save(root / "v.npy", vol)
    return run, root / "v.npy", vol


@pytest.mark.parametrize("schedule", [{}, {"start_t": 666}, {"prediction": "x0"}, {"prediction": "v", "start_t": 666}],
                         ids=["pure-noise", "start_t", "x0", "v-start_t"])
def test_one_patch_equals_whole_volume_ddim_with_the_same_noise(tmp_path, schedule, make_diffusion_run):
    # target_range switches on the x0 clamp, which the patch-wise sampler must apply too
    run = make_diffusion_run(tmp_path / "run", **schedule)
    payload = torch.load(run / "model.pt", weights_only=True)
    payload["model_config"]["target_range"] = [0.0, 1.0]
    torch.save(payload, run / "model.pt")
    cond = np.random.default_rng(1).normal(size=(8, 12, 8)).astype(np.float32)
    np.save(tmp_path / "c.npy", cond)
    predict(run, tmp_path / "c.npy", tmp_path / "o.zarr", *predict_options(patch=(8, 12, 8), chunks=4, seed=7, device="cpu", quiet=True))
    noise = np.zeros(cond.shape, np.float32)
    for c in chunk_indices(cond.shape, (4, 4, 4)):
        lo, hi = chunk_bounds(c, (4, 4, 4), cond.shape)
        noise[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = chunk_noise(7, _INIT, c, np.subtract(hi, lo))
    model = load_model(run)
    expected = model.sample(torch.from_numpy(cond)[None, None], noise=torch.from_numpy(noise)[None, None])
    np.testing.assert_allclose(read(tmp_path / "o.zarr"), expected[0, 0].numpy(), rtol=1e-4, atol=1e-4)


def test_result_depends_on_seed_not_on_workers_or_scheduler(drun, tmp_path):
    run, vol_path, vol = drun
    kw = {"patch": 8, "chunks": 8, "seed": 3, "eta": 0.5, "device": "cpu", "quiet": True}
    a = predict(run, vol_path, tmp_path / "a.zarr", *predict_options(workers=1, **kw))
    predict(run, vol_path, tmp_path / "b.zarr", *predict_options(workers=2, scheduler="processes", **kw))
    assert a["steps"] == 4 and a["patches"] == 4 * (4 * 3 * 2)  # steps x patches
    a_img, b_img = read(tmp_path / "a.zarr"), read(tmp_path / "b.zarr")
    # other torch thread counts round convolutions differently; a random model amplifies that
    assert np.abs(a_img - b_img).max() <= 1e-5 * np.abs(a_img).max()
    assert read(tmp_path / "a.zarr").shape == vol.shape
    assert not (tmp_path / "a.zarr" / "volseg_work").exists()
    predict(run, vol_path, tmp_path / "c.zarr", *predict_options(**{**kw, "seed": 4}))
    assert np.abs(read(tmp_path / "c.zarr") - read(tmp_path / "a.zarr")).max() > 1e-3


def test_fewer_sampling_steps_and_refusals(drun, tmp_path):
    run, vol_path, _ = drun
    assert sampling_sequence([0, 333, 666, 999], 2) == [0, 999]
    r = predict(run, vol_path, tmp_path / "s.zarr", *predict_options(patch=8, chunks=8, sampling_steps=2, device="cpu", quiet=True))
    assert r["timesteps"] == [0, 999]
    for kwargs, option in (({"sampling_steps": 9}, "--sampling-steps"), ({"part": "1/2"}, "--part"),
                           ({"eta": -1.0}, "--eta"), ({"threshold": 0.5}, "--threshold"),
                           ({"skip_value": 0.0}, "--skip-value")):
        with pytest.raises(VolsegError, match=option):
            predict(run, vol_path, tmp_path / "bad.zarr", *predict_options(patch=8, chunks=8, device="cpu", quiet=True, **kwargs))
        assert not (tmp_path / "bad.zarr").exists()


@pytest.mark.slow
@pytest.mark.timeout(900)  # samples=4: about 4 minutes on 2 busy cores
@pytest.mark.parametrize("samples", [1, 4])  # 4 samples over 7x7x5 patches of 8
def test_diffusion_killed_midway_resumes_to_the_same_volume(drun, tmp_path, samples):
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    run, _, _ = drun
    np.save(tmp_path / "v.npy", np.random.default_rng(2).normal(size=(32, 32, 24)).astype(np.float32))
    out = tmp_path / "killed.zarr"
    cmd = [str(Path(sys.executable).with_name("volseg")), "predict", str(run), str(tmp_path / "v.npy"), "-o",
           str(out), "--patch", "8", "--chunks", "8", "--seed", "5", "--eta", "0.3", "--device", "cpu",
           "--workers", "1", "--quiet", "--samples", str(samples)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if len(list((out / "volseg_markers").glob("s1-*"))) >= 3:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (out / "volseg_work").is_dir()
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert rerun.returncode == 0, rerun.stderr
    predict(run, tmp_path / "v.npy", tmp_path / "clean.zarr", *predict_options(patch=8, chunks=8, seed=5, eta=0.3, device="cpu", workers=1, quiet=True, samples=samples))
    a, b = read(out), read(tmp_path / "clean.zarr")
    assert np.abs(a - b).max() <= 1e-5 * np.abs(b).max()
    if samples > 1:
        a, b = read(out / "uncertainty"), read(tmp_path / "clean.zarr" / "uncertainty")
        assert np.abs(a - b).max() <= 1e-5 * np.abs(b).max()


def _chunk_noise_volume(seed, shape, chunks, sample):
    noise = np.zeros(shape, np.float32)
    for c in chunk_indices(shape, chunks):
        lo, hi = chunk_bounds(c, chunks, shape)
        noise[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = chunk_noise(seed, _INIT, c, np.subtract(hi, lo), sample)
    return noise


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_samples_give_the_mean_and_std_of_whole_volume_chains(tmp_path, make_diffusion_run, prediction):
    from volseg.io import read_meta

    run = make_diffusion_run(tmp_path / "run", prediction=prediction)
    cond = np.random.default_rng(1).normal(size=(8, 12, 8)).astype(np.float32)
    np.save(tmp_path / "c.npy", cond)
    r = predict(run, tmp_path / "c.npy", tmp_path / "o.zarr", *predict_options(patch=(8, 12, 8), chunks=4, seed=7, samples=3, device="cpu", quiet=True))
    assert r["samples"] == 3 and r["uncertainty"] == str(tmp_path / "o.zarr" / "uncertainty")
    model = load_model(run)
    chains = np.stack([model.sample(torch.from_numpy(cond)[None, None],
                                    noise=torch.from_numpy(_chunk_noise_volume(7, cond.shape, (4, 4, 4), s))[None, None]
                                    )[0, 0].numpy() for s in range(3)])
    np.testing.assert_allclose(read(tmp_path / "o.zarr"), chains.mean(0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(read(tmp_path / "o.zarr" / "uncertainty"), chains.std(0, ddof=1), rtol=1e-4, atol=1e-4)
    assert read_meta(tmp_path / "o.zarr" / "uncertainty").shape == cond.shape
    assert not (tmp_path / "o.zarr" / "volseg_work").exists()


def test_one_sample_is_todays_output_and_samples_are_seeded(drun, tmp_path):
    run, vol_path, vol = drun
    kw = {"patch": 8, "chunks": 8, "seed": 3, "eta": 0.5, "device": "cpu", "quiet": True}
    predict(run, vol_path, tmp_path / "one.zarr", *predict_options(**kw))
    predict(run, vol_path, tmp_path / "one_again.zarr", *predict_options(samples=1, **kw))
    assert np.array_equal(read(tmp_path / "one.zarr"), read(tmp_path / "one_again.zarr"))
    assert not (tmp_path / "one.zarr" / "uncertainty").exists()
    assert "samples" not in zarr.open_group(str(tmp_path / "one.zarr")).attrs["volseg"]["settings"]
    a = predict(run, vol_path, tmp_path / "a.zarr", *predict_options(samples=2, workers=1, **kw))
    predict(run, vol_path, tmp_path / "b.zarr", *predict_options(samples=2, workers=2, scheduler="processes", **kw))
    assert a["patches"] == 4 * (4 * 3 * 2)  # both samples share each patch's condition read
    for sub in ("", "uncertainty"):
        x, y = read(tmp_path / "a.zarr" / sub), read(tmp_path / "b.zarr" / sub)
        assert x.shape == vol.shape and np.abs(x - y).max() <= 1e-5 * np.abs(x).max()
    std = read(tmp_path / "a.zarr" / "uncertainty")
    assert float(std.min()) >= 0.0 and float(std.mean()) > 1e-3
    assert np.abs(read(tmp_path / "a.zarr") - read(tmp_path / "one.zarr")).max() > 1e-3
    # the samples are part of the output's settings: another count is refused without --overwrite
    with pytest.raises(VolsegError, match="overwrite"):
        predict(run, vol_path, tmp_path / "a.zarr", *predict_options(samples=3, **kw))


@pytest.mark.parametrize("args,needle", [
    (["--samples", "0"], "error: --samples: must be a whole number >= 1, got 0"),
    (["--samples", "-2"], "error: --samples: must be a whole number >= 1, got -2"),
    (["--samples", "2", "--unet"], "error: --samples: 2: averaging samples applies to diffusion runs"),
    # every step of every chain blends across patches: a job-array part cannot run alone
    (["--samples", "4", "--part", "1/2"], "error: --part: diffusion sampling needs every chunk of step k before "
                                          "step k+1, and the chains of --samples step together, so it cannot be "
                                          "split into independent parts; run one job (use --scheduler distributed"),
])
def test_bad_samples_exit_2_with_one_line(drun, tmp_path, make_run, args, needle):
    from typer.testing import CliRunner

    from volseg.cli import app

    run, vol_path, _ = drun
    if "--unet" in args:
        args = [a for a in args if a != "--unet"]
        run = make_run(tmp_path / "unet")
    out = tmp_path / "bad.zarr"
    r = CliRunner().invoke(app, ["predict", str(run), str(vol_path), "-o", str(out), "--patch", "8",
                                 "--device", "cpu", "--quiet", *args])
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith(needle), r.stderr
    assert "Traceback" not in r.output and not out.exists()
    assert np.array_equal(np.load(vol_path), drun[2])


@pytest.fixture(scope="module")
def smooth_samples(tmp_path_factory):
    """An x0 model trained briefly on a smooth translation, a 16x24x24 smooth condition (3x5x5
    patches of 8 at the default overlap 0.5) and its ``--samples 4`` output on one worker."""
    root = tmp_path_factory.mktemp("seams")
    run = train_diffusion(root / "run")
    np.save(root / "c.npy", smooth_field(3, (16, 24, 24)))
    kw = {"patch": 8, "chunks": 8, "seed": 5, "samples": 4, "device": "cpu", "quiet": True}
    predict(run, root / "c.npy", root / "one.zarr", *predict_options(workers=1, **kw))
    return run, root / "c.npy", root / "one.zarr", kw


def test_samples_over_many_patches_show_no_seams(smooth_samples, tmp_path):
    from volseg.metrics.seams import seam_ratio

    run, cond, out, kw = smooth_samples
    hard = tmp_path / "hard.zarr"  # the same patches side by side, each voxel from one patch
    predict(run, cond, hard, *predict_options(overlap=0.0, **kw))
    for sub in ("", "uncertainty"):
        blended = seam_ratio(zarr.open_array(str(out / sub / "0"), mode="r"), (8, 8, 8), (4, 4, 4))
        cut = seam_ratio(zarr.open_array(str(hard / sub / "0"), mode="r"), (8, 8, 8), (8, 8, 8))
        assert blended < NO_SEAM and cut > HARD_CUT, (sub, blended, cut)


def test_samples_over_many_patches_do_not_depend_on_workers_or_scheduler(smooth_samples, tmp_path):
    run, cond, out, kw = smooth_samples
    # other torch thread counts round the samples differently (about 1e-6 of their values); the
    # standard deviation is a difference of samples, so that rounding carries over in output units
    scale = np.abs(read(out)).max()
    for name, options in (("threads", {"workers": 2}), ("processes", {"workers": 2, "scheduler": "processes"})):
        predict(run, cond, tmp_path / f"{name}.zarr", *predict_options(**options, **kw))
        for sub in ("", "uncertainty"):
            a, b = read(out / sub), read(tmp_path / f"{name}.zarr" / sub)
            assert a.shape == (16, 24, 24) and np.abs(a - b).max() <= 1e-5 * scale, (name, sub)
