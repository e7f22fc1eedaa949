"""volseg.inference.support: --mask MASK[@LEVEL] (and the patch selection --roi shares), on real stores.

A patch runs iff the mask is nonzero under its footprint (mapped to mask voxels at the mask's
scale); patches not run count as 0 with their blend weight, so the output equals the full run
wherever every patch covering a voxel ran and is exactly 0 where none did; chunks no running
patch touches are not computed. Bad masks through the CLI: exit 2, one error line, nothing written.
"""

import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

from cli_checks import one_error_line, tree
from volseg.cli import app
from volseg.errors import VolsegError
from volseg.inference import support as support_module
from volseg.inference.plan import Plan
from volseg.inference.predict import predict
from volseg.inference.settings import PredictSettings, from_sources, predict_options
from volseg.inference.support import build_support, mask_factors, mask_runs, parse_mask
from volseg.io import write_volume
from volseg.parallel import Execution

SHAPE = (21, 20, 17)   # odd: level 1 of it has ceil(n / 2) voxels
KW = dict(patch=8, chunks=8, batch_size=2, workers=1, quiet=True)


@pytest.fixture(scope="module")
def box(tmp_path_factory, make_run):
    root = tmp_path_factory.mktemp("mask")
    make_run(root / "run")
    np.save(root / "v.npy", np.random.default_rng(5).normal(size=SHAPE).astype(np.float32))
    blob = np.zeros(SHAPE, np.float32)
    blob[2:6, 3:8, 10:14] = 1.0
    write_volume(root / "m.zarr", blob, chunks=8, levels=2)          # level 1: (11, 10, 9), the mean
    write_volume(root / "other.zarr", np.ones((36, 20, 17), np.float32), chunks=8, levels=3)  # z: 36, 18, 9
    np.save(root / "flat.npy", np.ones((20, 17), np.uint8))
    predict(root / "run", str(root / "v.npy"), str(root / "full.zarr"), *predict_options(stitch=True, **KW))
    return root


def _read(path) -> np.ndarray:
    return zarr.open_array(str(path / "0"))[:]


# --- units -------------------------------------------------------------------------------------
@pytest.mark.parametrize("mask, volume, factors", [
    ((48, 49, 97), (97, 97, 97), (2, 2, 1)), ((11, 10, 9), (21, 20, 17), (2, 2, 2)),
    ((1, 1, 1), (5, 6, 7), (5, 6, 7)), ((4, 4, 4), (16, 17, 15), (4, 4, 4)),
])
def test_mask_scales_are_integer_factors_per_axis_with_either_rounding(mask, volume, factors):
    assert mask_factors(mask, volume, "m") == factors


@pytest.mark.parametrize("mask", [(50, 48, 48), (97, 97, 98), (44, 97, 97), (9, 16, 16)])
def test_a_mask_of_another_shape_names_both_shapes(mask):
    volume = (97, 97, 97) if mask[0] != 9 else (20, 16, 16)
    with pytest.raises(VolsegError, match="does not map onto the volume") as err:
        mask_factors(mask, volume, "m.zarr")
    assert "x".join(map(str, mask)) in str(err.value) and "x".join(map(str, volume)) in str(err.value)


@pytest.mark.parametrize("shape, mask_shape", [((21, 20, 17), (11, 10, 9)), ((21, 20, 17), (10, 5, 8)),
                                               ((9, 9, 9), (9, 9, 9))])
def test_mask_runs_equals_the_brute_force_footprint_test(shape, mask_shape):
    rng = np.random.default_rng(0)
    mask = rng.random(mask_shape) > 0.97
    factors = mask_factors(mask_shape, shape, "m")
    plan = Plan.build(shape, (8, 8, 8), (4, 4, 4), (8, 8, 8))
    got = mask_runs(mask, factors, plan)
    up = mask
    for a, (k, n) in enumerate(zip(factors, shape)):      # every voxel -> its mask voxel
        up = np.take(up, np.minimum(np.arange(n) // k, mask_shape[a] - 1), axis=a)
    for i, j, k in np.ndindex(*plan.counts):
        o = (plan.starts[0][i], plan.starts[1][j], plan.starts[2][k])
        assert got[i, j, k] == up[tuple(slice(s, s + 8) for s in o)].any()


def test_mask_text_and_level(box):
    assert parse_mask("m.zarr@3") == ("m.zarr", 3)
    assert parse_mask("https://h/s.zarr") == ("https://h/s.zarr", None)
    assert parse_mask("s3://user@host/m.zarr") == ("s3://user@host/m.zarr", None)
    assert parse_mask("m.zarr", 2) == ("m.zarr", 2) and parse_mask(None) == (None, None)
    for bad, needle in (("m.zarr@one", "must be a number"), ("m.zarr@-1", "must be a number")):
        with pytest.raises(VolsegError, match=needle):
            parse_mask(bad)
    with pytest.raises(VolsegError, match="names level 1 but mask_level is 2"):
        parse_mask("m.zarr@1", 2)
    settings, _ = from_sources({"mask": "m.zarr@1"})
    assert (settings.mask, settings.mask_level) == ("m.zarr", 1)
    assert {k: settings.to_dict()[k] for k in ("mask", "mask_level")} == {"mask": "m.zarr", "mask_level": 1}


def test_a_mask_too_large_for_memory_asks_for_a_coarser_level(box, monkeypatch):
    monkeypatch.setattr(support_module, "MASK_VOXELS_MAX", 2000)
    plan = Plan.build(SHAPE, (8, 8, 8), (4, 4, 4), (8, 8, 8))
    settings = PredictSettings.parse(mask=f"{box / 'm.zarr'}@0")
    with pytest.raises(VolsegError, match="7140 voxels, more than the 2000 .* use a coarser level of it, e.g. .*m.zarr@1"):
        build_support(settings, plan, SHAPE)
    assert build_support(PredictSettings.parse(mask=f"{box / 'm.zarr'}@1"), plan, SHAPE)[0].keep.any()


# --- predict -----------------------------------------------------------------------------------
def test_mask_equals_the_full_run_where_every_covering_patch_ran_and_is_0_far_from_it(box, tmp_path):
    out = tmp_path / "masked.zarr"
    mask = f"{box / 'm.zarr'}@1"
    r = predict(box / "run", str(box / "v.npy"), str(out), *predict_options(stitch=True, mask=mask, **KW))
    plan = Plan.build(SHAPE, (8, 8, 8), (4, 4, 4), (8, 8, 8))
    support, facts = build_support(PredictSettings.parse(mask=mask), plan, SHAPE)
    assert facts["mask_level"] == 1 and r["complete"]
    chosen = support.chunks(plan)
    assert r["chunks_total"] == len(chosen) < len(plan.chunk_list())
    assert len([p for p in (out / "0" / "c").rglob("*") if p.is_file()]) == len(chosen)
    all_ran, any_ran = np.ones(SHAPE, bool), np.zeros(SHAPE, bool)
    for idx in np.ndindex(*plan.counts):
        sl = tuple(slice(int(s[i]), int(s[i]) + 8) for s, i in zip(plan.starts, idx))
        if support.keep[idx]:
            any_ran[sl] = True
        else:
            all_ran[sl] = False
    full, got = _read(box / "full.zarr"), _read(out)
    # the masked patches run in batches of their own: float32 rounding, not the full run's bytes
    assert all_ran.any() and np.abs(got[all_ran] - full[all_ran]).max() <= 1e-5
    assert not got[~any_ran].any() and got[any_ran].any()
    assert r["patches"] < support.keep.size / 2


def test_masked_patch_store_runs_only_the_masked_patches(box, tmp_path):
    store = tmp_path / "masked_store.zarr"
    r = predict(box / "run", str(box / "v.npy"), str(store),
                *predict_options(mask=f"{box / 'm.zarr'}@1", **KW))
    patches = zarr.open_group(str(store))["patches"][:]
    assert r["complete"] and 0 < r["patches"] < len(patches) / 2
    assert 0 < int(patches.reshape(len(patches), -1).any(1).sum()) <= r["patches"]


# --- the CLI -------------------------------------------------------------------------------------
@pytest.mark.parametrize("mask, needle", [
    ("other.zarr@0", "mask shape 36x20x17 does not map onto the volume's shape 21x20x17"),
    ("other.zarr@1", "mask shape 18x10x9 does not map onto the volume's shape 21x20x17"),
    ("other.zarr@2", "mask shape 9x5x5 does not map onto"),
    ("other.zarr", "mask shape 36x20x17 does not map onto"),
    ("missing.zarr", "does not exist; check the path (--mask)"),
    ("m.zarr@5", "has no level 5; available levels: 0..1 (--mask)"),
    ("m.zarr@x", "the level after @ must be a number"),
    ("flat.npy", "a 3D volume (z, y, x) is needed (--mask)"),
])
def test_bad_mask_exits_2_with_one_line_and_writes_nothing(box, tmp_path, mask, needle, monkeypatch):
    monkeypatch.chdir(box)
    before = tree(box)
    r = CliRunner().invoke(app, ["predict", "run", "v.npy", "--stitch", "--patch", "8", "-o",
                                 str(tmp_path / "out.zarr"), "--mask", mask, "--quiet"])
    one_error_line(r, needle)
    assert not list(tmp_path.iterdir()) and tree(box) == before


def test_a_mask_at_a_url_selects_the_same_patches_as_the_local_copy(box):
    from remote_servers import CountingServer

    plan = Plan.build(SHAPE, (8, 8, 8), (4, 4, 4), (8, 8, 8))
    local, _ = build_support(PredictSettings.parse(mask=f"{box / 'm.zarr'}@1"), plan, SHAPE)
    with CountingServer(box) as server:
        remote, facts = build_support(PredictSettings.parse(mask=f"{server.url}/m.zarr@1"), plan, SHAPE)
        assert server.chunk_bytes() > 0
        with pytest.raises(VolsegError, match="has no level 4"):
            build_support(PredictSettings.parse(mask=f"{server.url}/m.zarr@4"), plan, SHAPE)
    assert np.array_equal(remote.keep, local.keep) and facts["mask"] == f"{server.url}/m.zarr"
