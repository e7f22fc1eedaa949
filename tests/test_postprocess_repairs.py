"""Post-processing repairs: plugging, anisotropic opening / closing; streamed equals whole; CLI errors."""

import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.ndimage import gaussian_filter
from typer.testing import CliRunner

from repair_checks import assert_box_equals_whole, refused_by_postprocess, streamed_equals_whole
from volseg.cli import app
from volseg.errors import VolsegError
from volseg.io import write_volume
from volseg.metrics.topology import betti_numbers
from volseg.postprocess import postprocess, postprocess_array
from volseg.postprocess.kernels import close_mask
from volseg.postprocess.repairs import CUBE, PLUG_TABLE, Element, Repairs, parse_element, plug_holes

runner = CliRunner()


def _read(path):
    return zarr.open_array(str(path / "0"), mode="r")[:]


def _sheets(seed, shape=(26, 30, 24)):
    """Wavy sheets two to three voxels thick with holes, crossing every chunk face."""
    rng = np.random.default_rng(seed)
    z = np.arange(shape[0])[:, None, None]
    y, x = np.mgrid[:shape[1], :shape[2]]
    vol = np.zeros(shape, bool)
    for centre in (5.0, 12.0, 19.0):
        height = centre + 1.5 * np.sin(y / 4.0 + seed) * np.cos(x / 5.0)
        vol |= np.abs(z - height[None]) < 1.2
    noise = gaussian_filter(rng.random(shape), 0.8)
    vol &= noise > np.quantile(noise, 0.08)         # holes of one voxel and more, pits, bridges
    vol |= noise > np.quantile(noise, 0.995)        # specks and bridges between sheets
    return vol


# ----------------------------------------------------------------------------- plugging

def test_plug_table_fills_background_only_and_is_symmetric():
    assert PLUG_TABLE.shape == (256,)
    for config in range(256):
        assert PLUG_TABLE[config] & config == 0              # only background voxels are filled
    assert PLUG_TABLE[0] == 0 and PLUG_TABLE[255] == 0
    # mirrored configurations fill mirrored voxels (the rule has no preferred direction)
    index = {c: i for i, c in enumerate(CUBE)}
    for config in range(256):
        for axis in range(3):
            flip = [tuple(1 - v if a == axis else v for a, v in enumerate(c)) for c in CUBE]
            moved = sum(1 << index[flip[i]] for i in range(8) if config >> i & 1)
            fill = sum(1 << index[flip[i]] for i in range(8) if PLUG_TABLE[config] >> i & 1)
            assert PLUG_TABLE[moved] == fill


def test_a_plane_with_a_one_voxel_hole_is_plugged():
    vol = np.zeros((7, 12, 12), bool)
    vol[3, 1:11, 1:11] = True
    vol[3, 5, 6] = False
    assert betti_numbers(vol) == (1, 1, 0)
    out = plug_holes(vol)
    assert out[3, 5, 6] and betti_numbers(out) == (1, 0, 0)
    assert (out ^ vol).sum() == 1                             # a flat square sheet: only the hole
    # a one-voxel tunnel through a slab three voxels thick, along any axis
    for axis in range(3):
        slab = np.zeros((9, 9, 9), bool)
        slab[3:6] = True
        slab[3:6, 4, 4] = False
        slab = np.moveaxis(slab, 0, axis)
        assert betti_numbers(slab)[1] == 1
        assert betti_numbers(plug_holes(slab)) == (1, 0, 0)


def test_plugging_never_bridges_sheets_and_keeps_larger_holes():
    vol = np.zeros((9, 12, 12), bool)
    vol[3, 1:11, 1:11] = True
    vol[5, 1:11, 1:11] = True                                 # a one-voxel gap between two sheets
    np.testing.assert_array_equal(plug_holes(vol), vol)
    vol[3, 4:7, 4:7] = False                                  # a 3 x 3 hole: its corners are plugged,
    out = plug_holes(vol)                                     # but it stays a hole
    assert not out[3, 5, 4:7].any() and not out[3, 4:7, 5].any() and out[3, 4, 4] and not out[4].any()
    assert betti_numbers(out) == betti_numbers(vol) == (2, 1, 0)
    vol[3, 4:7, 4:7] = True
    vol[3, 4:6, 4:6] = False                                  # a 2 x 2 hole: four corners, plugged
    assert betti_numbers(plug_holes(vol)) == (2, 0, 0)


def test_fill_cavities_fills_what_the_slice_holes_enclose():
    vol = np.zeros((12, 12, 12), np.uint8)
    vol[2:9, 2:9, 2:9] = 1
    vol[3:8, 3:8, 3:8] = 0                                    # a hollow box, 125-voxel cavity,
    vol[5, 5, 2] = 0                                          # opened by a one-voxel hole in a wall
    plain = dict(fill_holes=16, open=0, close=0)
    step4 = postprocess_array(vol, **plain)
    assert step4[5, 5, 2] and not step4[5, 5, 5]              # the hole is filled, the cavity is new
    assert not postprocess_array(vol, fill_cavities=124, **plain)[5, 5, 5]
    assert postprocess_array(vol, fill_cavities=125, **plain)[3:8, 3:8, 3:8].all()


# ----------------------------------------------------------------------------- elements

def test_parse_element_forms():
    assert parse_element(None, "--close") == Element("ball", (0, 0, 0))
    assert parse_element(2, "--close") == parse_element("2", "--close") == Element("ball", (2, 2, 2))
    assert parse_element("1,2,0", "--open") == Element("ball", (1, 2, 0))
    assert parse_element("box:1,3,5", "--open") == Element("box", (1, 3, 5))
    assert parse_element("box:3", "--open").footprint().shape == (3, 3, 3)
    assert not parse_element("box:1", "--open").active
    assert parse_element("0,2,1", "--close").footprint().shape == (1, 5, 3)
    for value, needle in [("-1", ">= 0"), ("1,-2,1", ">= 0"), ("box:2,3,3", "odd"), ("box:4", "odd"),
                          ("1,2", "Z,Y,X"), ("1.5", "whole"), ("ball", "radius"), ("nan", "whole")]:
        with pytest.raises(VolsegError, match=needle):
            parse_element(value, "--close")


def test_ball_closing_is_the_old_close():
    vol = _sheets(3)
    for r in (1, 2):
        old = close_mask(np.pad(vol, 2 * r, mode="edge"), r)[2 * r:-2 * r, 2 * r:-2 * r, 2 * r:-2 * r]
        np.testing.assert_array_equal(Repairs(closing=parse_element(r, "--close")).whole(vol), old)
        np.testing.assert_array_equal(postprocess_array(vol, close=r), postprocess_array(vol, close=str(r)))


def test_default_opening_keeps_vertical_sheets_and_cuts_thin_bridges():
    vol = np.zeros((16, 16, 20), bool)
    vol[:, 2:14, 4:6] = vol[:, 2:14, 12:14] = True            # two wraps, sheets along z
    vol[7:9, 6, 6:12] = True                                  # a bridge 2 voxels high along z
    out = postprocess_array(vol, min_size=0)                  # --open 1,0,0 --close 1,0,0
    np.testing.assert_array_equal(out[:, :, :6], vol[:, :, :6])
    assert not out[:, :, 6:12].any() and betti_numbers(out)[0] == 2
    assert betti_numbers(vol)[0] == 1


def test_anisotropic_closing_acts_along_its_axes_only():
    vol = np.zeros((12, 12, 12), bool)
    vol[2:10, 2:10, 3] = vol[2:10, 2:10, 6] = True            # two sheets 2 voxels apart along x
    bridged = Repairs(closing=parse_element("0,0,2", "--close")).whole(vol)
    assert bridged[4, 4, 4:6].all()                           # closed along x
    kept = Repairs(closing=parse_element("2,2,0", "--close")).whole(vol)
    np.testing.assert_array_equal(kept, vol)                  # never along x: the gap stays
    opened = Repairs(opening=parse_element("box:1,1,3", "--open")).whole(vol)
    assert not opened.any()                                   # sheets one voxel thick along x go


# ----------------------------------------------------------------------------- streamed = whole

@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 1000), close=st.sampled_from(["0", "1", "1,0,2", "box:3,1,3"]),
       open_=st.sampled_from(["0", "0,1,1", "box:1,3,1"]), plug=st.booleans(),
       corner=st.tuples(st.integers(0, 14), st.integers(0, 14), st.integers(0, 14)))
def test_repairs_of_a_box_equal_the_whole_volume(seed, close, open_, plug, corner):
    vol = np.random.default_rng(seed).random((20, 22, 18)) < 0.45
    assert_box_equals_whole(Repairs(parse_element(close, "--close"), parse_element(open_, "--open"), plug), vol, corner)


@pytest.mark.parametrize("chunks,kw", [
    (7, dict(plug_holes=True)),
    (10, dict(plug_holes=True, close="1,0,1", fill_holes=12)),
    (16, dict(open="box:1,3,3", close=1, plug_holes=True, fill_holes=8)),
    ((8, 11, 9), dict(open="1,0,1", min_size=20)),
])
def test_streamed_repairs_equal_the_whole_array(tmp_path, chunks, kw):
    vol = _sheets(1).astype(np.uint8)
    r, ref = streamed_equals_whole(tmp_path, vol, chunks, dict(min_size=0, fill_holes=0) | kw)
    assert r["complete"] and (ref != (vol > 0)).any()        # the repairs changed something


# ----------------------------------------------------------------------------- CLI

@pytest.mark.parametrize("args,needles", [
    (["--close", "-1"], ("--close", ">= 0")),
    (["--close", "1,-2,1"], ("--close", ">= 0")),
    (["--close", "box:2,3,3"], ("--close", "odd")),
    (["--open", "box:4"], ("--open", "odd")),
    (["--open", "-2"], ("--open", ">= 0")),
    (["--open", "1,1"], ("--open", "Z,Y,X")),
    (["--fill-holes", "-1"], ("--fill-holes", ">= 0")),
    (["--fill-cavities", "-5"], ("--fill-cavities", ">= 0")),
])
def test_bad_repairs_exit_2_and_write_nothing(tmp_path, args, needles):
    refused_by_postprocess(tmp_path, _sheets(0).astype(np.uint8), args, needles)


def test_cli_repairs_match_the_library(tmp_path):
    vol = _sheets(2).astype(np.uint8)
    write_volume(tmp_path / "in.zarr", vol, chunks=8)
    result = runner.invoke(app, ["postprocess", str(tmp_path / "in.zarr"), "-o", str(tmp_path / "o.zarr"),
                                 "--open", "0,1,1", "--close", "box:3,1,3", "--plug-holes", "--min-size", "0",
                                 "--fill-holes", "0",
                                 "--chunks", "12", "--scheduler", "synchronous", "--quiet"])
    assert result.exit_code == 0, result.stderr
    ref = postprocess_array(vol, open="0,1,1", close="box:3,1,3", plug_holes=True, min_size=0)
    np.testing.assert_array_equal(_read(tmp_path / "o.zarr"), ref)
