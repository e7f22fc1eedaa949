"""Column tiles of `predict --stitch`: same output as one pass, parts, resume, recomputation, memory."""

import functools

import numpy as np
import pytest
import torch
import zarr

from volseg.inference.settings import predict_options
from volseg.errors import VolsegError
from volseg.inference import predict
from volseg.inference.plan import Plan
from volseg.io.resume import MARKERS
from volseg.inference.column_tiles import (
    forward_count,
    parse_tile,
    run_tiled,
    tile_chunks,
    tile_order,
    tiles,
)

KW = {"patch": 8, "chunks": 8, "stitch": True, "device": "cpu", "quiet": True}


def read(path):
    return zarr.open_array(str(path / "0"), mode="r")[:]


@pytest.fixture(scope="module")
def ref(tmp_path_factory, make_run):
    """A tiny UNet, a (16, 40, 40) volume (2 x 5 x 5 chunks of 8) and its untiled prediction."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("tiles")
    make_run(root / "run")
    np.save(root / "v.npy", np.random.default_rng(0).normal(size=(16, 40, 40)).astype(np.float32))
    one = predict(root / "run", root / "v.npy", root / "one.zarr", *predict_options(tile=None, **KW))
    return root / "run", root / "v.npy", read(root / "one.zarr"), one


def test_parse_tile_accepts_n_yxx_and_none_and_names_bad_values():
    assert parse_tile(1024) == (1024, 1024) and parse_tile("512x2048") == (512, 2048)
    assert parse_tile((16, 32)) == (16, 32)
    assert parse_tile(0) is None and parse_tile("none") is None and parse_tile(None) is None
    for bad in ("abc", "-3", "0x5", "1x2x3", "16.5"):
        with pytest.raises(VolsegError, match="--tile"):
            parse_tile(bad)
    plan = Plan.build((16, 40, 40), (8, 8, 8), (4, 4, 4), (8, 8, 8))
    assert tile_chunks((20, 5), plan) == (2, 1)  # rounded down to whole chunks, at least one
    assert sorted(tile_order(plan, (2, 2))) == plan.chunk_list()
    assert [len(t) for t in tiles(plan, (2, 2))] == [2 * 4, 2 * 4, 2 * 2] * 2 + [2 * 2, 2 * 2, 2 * 1]


@pytest.mark.parametrize("runtime", ["auto", "onnx"])
def test_tiled_equals_untiled_bitwise_and_recomputes_only_border_patches(ref, tmp_path, runtime):
    run, vol, expected, one = ref
    r = predict(run, vol, tmp_path / "t.zarr", *predict_options(tile=16, batch_size=4, runtime=runtime, **KW))
    same(read(tmp_path / "t.zarr"), expected, runtime)  # tiles of 2 x 2 chunks: seams inside the volume
    if runtime == "onnx":
        return
    assert r["chunks_written"] == one["chunks_written"] == 2 * 5 * 5
    assert one["patches"] == 3 * 9 * 9 and r["patches"] > one["patches"]  # border patches twice
    r = predict(run, vol, tmp_path / "yx.zarr", *predict_options(tile="8x24", batch_size=4, **KW))
    np.testing.assert_array_equal(read(tmp_path / "yx.zarr"), expected)


def test_forward_count_matches_the_expected_recomputation(ref, tmp_path):
    run, vol, _, _ = ref
    plan = Plan.build((16, 40, 40), (8, 8, 8), (4, 4, 4), (8, 8, 8))
    r = predict(run, vol, tmp_path / "b1.zarr", *predict_options(tile=16, batch_size=1, **KW))
    # tiles of 16 voxels: y/x ranges [0,16) [16,32) [32,40) overlapped by 4, 5, 2 of the 9 patch starts
    assert r["patches"] == forward_count(plan, (2, 2)) == 3 * (4 + 5 + 2) ** 2
    assert forward_count(plan, None) == plan.n_patches
    scroll = Plan.build((64, 4096, 4096), (64, 64, 64), (32, 32, 32), (128, 128, 128))
    extra = forward_count(scroll, (8, 8)) / scroll.n_patches - 1
    # 4 tiles per axis: each of the 3 borders is straddled by (patch - stride) / stride = 1 of the
    # 127 patch rows, computed twice: ~(patch - stride) / tile extra per axis for many tiles
    assert extra == pytest.approx((130 / 127) ** 2 - 1)


def same(got, expected, runtime):
    """Bit for bit in the default runtime; within 1e-5 under onnxruntime (volseg.inference.runtime)."""
    if runtime == "auto":
        np.testing.assert_array_equal(got, expected)
    else:
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("runtime", ["auto", "onnx"])
def test_tiled_parts_together_equal_one_run_and_need_the_same_tile(ref, tmp_path, runtime):
    run, vol, expected, _ = ref
    out = tmp_path / "parts.zarr"
    p1 = predict(run, vol, out, *predict_options(tile=16, part="1/2", runtime=runtime, **KW))
    with pytest.raises(VolsegError, match="other settings.*tile"):
        predict(run, vol, out, *predict_options(tile=24, part="2/2", runtime=runtime, **KW))
    p2 = predict(run, vol, out, *predict_options(tile=16, part="2/2", scheduler="processes", workers=2,
                                                 runtime=runtime, **KW))
    assert p1["chunks_written"] + p2["chunks_written"] == 50 and p2["chunks_done_before"] == 0
    assert p1["runtime"] == p2["runtime"] == ("torch" if runtime == "auto" else "onnxruntime")
    # part 2 may run its forwards on another thread count than part 1 (one per process where
    # part 1's threads take turns with all cores): float32 sums in another order, so within 1e-5
    same(read(out), expected, "onnx")


@pytest.mark.parametrize("runtime", ["auto", "onnx"])
def test_resume_across_tiles_redoes_only_unmarked_chunks(ref, tmp_path, runtime):
    run, vol, expected, _ = ref
    out = tmp_path / "r.zarr"
    predict(run, vol, out, *predict_options(tile=16, runtime=runtime, **KW))
    for name in ("c0.0.0", "c1.2.3", "c1.4.4"):  # three different tiles
        (out / MARKERS / name).unlink()
    again = predict(run, vol, out, *predict_options(tile=16, runtime=runtime, **KW))
    assert again["chunks_written"] == 3 and again["chunks_done_before"] == 47
    same(read(out), expected, runtime)


def _peak_live_pieces(live_pieces, shape, tile):
    """Most pieces held at once by a tiled fused pass over ``shape`` (fake groups, real engine)."""
    from volseg.parallel import Execution

    plan = Plan.build(shape, (16, 16, 16), (8, 8, 8), (16, 16, 16))
    probe = live_pieces(plan)
    tile = tile_chunks(tile, plan)
    with Execution.parse(scheduler="threads", workers=2, quiet=True).executor() as executor:
        finals, _ = run_tiled(plan, tile_order(plan, tile), probe.group, probe.final, tile=tile,
                              executor=executor, window=4)
    assert all(finals) and len(finals) == len(plan.chunk_list())
    assert set(probe.calls) == set(plan.group_list())
    return probe.peak


def test_memory_is_flat_when_the_cross_section_grows_4x(live_pieces):
    peak = functools.partial(_peak_live_pieces, live_pieces)
    small, big = peak((64, 64, 64), (32, 32)), peak((64, 128, 128), (32, 32))
    assert big <= small + 4, (small, big)
    untiled_small, untiled_big = peak((64, 64, 64), None), peak((64, 128, 128), None)
    assert untiled_big > 1.5 * untiled_small  # what tiling fixes: the wavefront follows the plane


def test_diffusion_sampling_tiled_equals_untiled(tmp_path, make_diffusion_run):
    run = make_diffusion_run(tmp_path / "drun")
    np.save(tmp_path / "c.npy", np.random.default_rng(2).normal(size=(8, 24, 16)).astype(np.float32))
    kw = {"patch": 8, "chunks": 8, "seed": 3, "eta": 0.5, "sampling_steps": 2, "device": "cpu", "quiet": True}
    a = predict(run, tmp_path / "c.npy", tmp_path / "a.zarr", *predict_options(tile=None, **kw))
    b = predict(run, tmp_path / "c.npy", tmp_path / "b.zarr", *predict_options(tile=8, **kw))
    np.testing.assert_array_equal(read(tmp_path / "b.zarr"), read(tmp_path / "a.zarr"))
    assert b["patches"] > a["patches"] == 2 * (1 * 5 * 3)  # steps x patches; borders twice when tiled


@pytest.mark.slow
def test_tiled_threads_and_local_cluster_agree(ref, tmp_path):
    run, vol, expected, _ = ref
    for sched, workers in (("threads", 2), ("distributed", 2)):
        predict(run, vol, tmp_path / f"{sched}.zarr", *predict_options(tile=16, scheduler=sched, workers=workers, **KW))
        np.testing.assert_array_equal(read(tmp_path / f"{sched}.zarr"), expected)

