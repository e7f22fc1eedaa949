"""``--fill-sheet-holes N``: holes through a sheet filled along its height map; wraps never
bridged; streamed equals whole; CLI errors."""

import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from repair_checks import assert_box_equals_whole, refused_by_postprocess, streamed_equals_whole
from volseg.cli import app
from volseg.errors import VolsegError
from volseg.io import write_volume
from volseg.metrics.topology import betti_numbers
from volseg.postprocess import postprocess, postprocess_array
from volseg.postprocess.repairs import Repairs
from volseg.postprocess.sheet_holes import fill_sheet_holes, harmonic, parse_max_area, reach

runner = CliRunner()


def _tilted(shape=(24, 40, 40)):
    """A plane z = 8 + 0.3 y + 0.15 x, 2-3 voxels thick, and its height map."""
    z = np.arange(shape[0])[:, None, None]
    y, x = np.mgrid[:shape[1], :shape[2]]
    height = 8 + 0.3 * y + 0.15 * x
    return np.abs(z - height[None]) <= 1.0, height


def _wavy(shape=(30, 34, 32), seed=0):
    """Three wavy sheets two voxels thick, 8 apart along z, each with holes of 2 x 3 to 5 x 5
    columns at random places (many across the faces of 8-16 voxel chunks)."""
    rng = np.random.default_rng(seed)
    z = np.arange(shape[0])[:, None, None]
    y, x = np.mgrid[:shape[1], :shape[2]]
    vol = np.zeros(shape, bool)
    for centre in (6.0, 14.0, 22.0):
        height = centre + 1.2 * np.sin(y / 5.0 + seed) * np.cos(x / 6.0)
        sheet = np.abs(z - height[None]) <= 0.8
        for _ in range(4):
            hy, hx = rng.integers(2, 6, size=2)
            y0, x0 = rng.integers(2, shape[1] - 7), rng.integers(2, shape[2] - 7)
            sheet[:, y0:y0 + hy, x0:x0 + hx] = False
        vol |= sheet
    return vol


def _read(path):
    return zarr.open_array(str(path / "0"), mode="r")[:]


# ----------------------------------------------------------------------------- the repair

def test_a_tilted_plane_hole_is_filled_at_the_plane_height():
    plane, height = _tilted()
    vol = plane.copy()
    vol[:, 15:20, 17:22] = False                              # a 5 x 5 hole
    assert betti_numbers(vol) == (1, 1, 0)
    out = fill_sheet_holes(vol, 25)
    added, missing = out & ~vol, plane & ~vol
    assert not (out & ~added & ~vol).any() and (out & vol).sum() == vol.sum()
    assert added[:, 15:20, 17:22].any(axis=0).all()          # every hole column gets a run
    assert (added & missing).sum() >= 0.9 * missing.sum()    # the plane's own voxels, nearly all
    z = np.nonzero(added)
    assert np.abs(z[0] - height[z[1], z[2]]).max() <= 1.5     # and nothing off the plane
    assert betti_numbers(out) == (1, 0, 0)


def test_a_hole_larger_than_n_stays_and_zero_is_off():
    plane, _ = _tilted()
    vol = plane.copy()
    vol[:, 15:20, 17:22] = False
    np.testing.assert_array_equal(fill_sheet_holes(vol, 24), vol)
    assert fill_sheet_holes(vol, 0) is vol
    np.testing.assert_array_equal(fill_sheet_holes(plane, 25), plane)   # no hole: nothing changes


def test_the_gap_between_parallel_sheets_is_never_filled():
    vol = np.zeros((22, 24, 24), bool)
    vol[8:10, 2:22, 2:22] = vol[13:15, 2:22, 2:22] = True     # 2 voxels thick, 3 voxels apart
    vol[:, 9:14, 9:14] = False                                # aligned 5 x 5 holes
    out = fill_sheet_holes(vol, 25)
    assert not out[10:13].any()                               # the gap stays empty
    assert betti_numbers(out)[0] == 2
    assert out[8:10, 9:14, 9:14].all() and out[13:15, 9:14, 9:14].all()   # each at its own height
    close = np.zeros((20, 24, 24), bool)
    close[8:10, 2:22, 2:22] = close[11:13, 2:22, 2:22] = True # 1 voxel apart: a slab of 6 holds
    close[:, 9:14, 9:14] = False                              # one sheet and the gap's voxel
    out = fill_sheet_holes(close, 25)
    assert not out[10].any() and betti_numbers(out) == (2, 0, 0)
    tilted = np.zeros((24, 24, 24), bool)                     # tilted sheets 2 voxels apart: the slab
    y = np.arange(24)[None, :, None]                          # deep enough for the rim holds both
    for base in (4, 8):
        tilted |= np.abs(np.arange(24)[:, None, None] - (base + y // 2)) <= 0.5
    tilted[:, 9:14, 9:14] = False
    assert betti_numbers(tilted) == (2, 2, 0)
    np.testing.assert_array_equal(fill_sheet_holes(tilted, 25), tilted)


def test_a_rounded_hole_through_a_thick_sheet_is_filled_without_a_cavity():
    slab = np.zeros((22, 30, 30), bool)
    slab[8:13] = True                                         # 5 voxels thick
    z, y, x = np.ogrid[:22, :30, :30]
    vol = slab & ((z - 10) ** 2 + (y - 15) ** 2 + (x - 14) ** 2 > 16)   # a ball of radius 4 removed:
    assert betti_numbers(vol) == (1, 1, 0)                    # its rim columns hold two runs
    out = fill_sheet_holes(vol, 49)
    assert betti_numbers(out) == (1, 0, 0) and not (out & ~slab).any()
    assert (slab & ~out).sum() <= 0.2 * (slab & ~vol).sum()


def test_a_hole_in_a_cylinder_wall_is_filled_on_the_wall():
    z = np.arange(30)[:, None, None]
    y, x = np.mgrid[:40, :40]
    radius = np.hypot(y - 19.5, x - 19.5)[None]
    angle = np.arctan2(y - 19.5, x - 19.5)[None]
    wall = (np.abs(radius - 14) <= 1.2) & (z >= 0)            # a wrap of the scroll, 3 voxels thick
    for at in (0.0, 0.6):                                     # facing x, and tilted by 34 degrees
        vol = wall & ~((np.abs(z - 15) <= 2) & (np.abs(angle - at) <= 0.18))   # 5 x 5 voxels
        assert betti_numbers(vol) == (1, 2, 0) and betti_numbers(wall) == (1, 1, 0)
        out = fill_sheet_holes(vol, 30)
        added = out & ~vol
        # the columns the hole empties get the wall back; where its edge cuts the wall obliquely
        # the wall stays thinner, so about half of the removed voxels return
        assert added.sum() >= 0.4 * (wall & ~vol).sum()
        assert np.abs(np.broadcast_to(radius, vol.shape)[added] - 14).max() <= 1.5
        assert betti_numbers(out) == (1, 1, 0)


@pytest.mark.parametrize("shift", [(1, 0, 0), (0, 1, 0), (0, 0, 1), (3, 2, 5)])
def test_the_repair_moves_with_the_volume(shift):
    # a one-column hole whose four neighbours lie at heights 8, 8, 9, 9: its interpolated
    # height 8.5 is a tie, filled the same way wherever the hole lies (a chunk's box and the
    # whole volume put it at other indices)
    height = np.full((20, 20), 8)
    height[:, 11:] = 9
    height[11:, 10] = 9
    vol = np.zeros((20, 20, 20), bool)
    np.put_along_axis(vol, height[None], True, axis=0)
    vol[:, 10, 10] = False
    vol |= _wavy((20, 20, 20), seed=4) & (np.arange(20)[:, None, None] > 13)
    moved = fill_sheet_holes(np.pad(vol, [(s, 0) for s in shift]), 16)
    out = fill_sheet_holes(vol, 16)
    np.testing.assert_array_equal(moved[tuple(slice(s, None) for s in shift)], out)
    assert out[9, 10, 10] and not out[8, 10, 10]              # 8.5 rounds half up, to 9


def test_harmonic_interpolation_keeps_a_plane_and_its_bounds():
    hole = np.zeros((9, 9), bool)
    hole[2:7, 3:6] = True
    y, x = np.mgrid[:9, :9]
    plane = 3.0 + 0.5 * y - 0.25 * x
    (values,) = harmonic(hole, plane)
    np.testing.assert_allclose(values, plane[hole], atol=1e-9)
    bumpy = np.where(hole, 0.0, np.sin(y + x))
    (values,) = harmonic(hole, bumpy)
    assert values.min() >= bumpy[~hole].min() and values.max() <= bumpy[~hole].max()


def test_parse_max_area():
    assert parse_max_area(None) == 0 and parse_max_area("25") == 25 and parse_max_area(4.0) == 4
    for value, needle in [("-1", ">= 0"), ("2.5", "whole number"), ("abc", "whole number"), ("nan", ">= 0"),
                          ("20000", "too large")]:
        with pytest.raises(VolsegError, match=needle):
            parse_max_area(value)


def test_off_leaves_the_repairs_and_their_settings_as_before():
    assert Repairs().settings() == {"close": 0} and Repairs().reach == (0, 0, 0)
    assert Repairs(sheet_holes=25).settings() == {"close": 0, "fill_sheet_holes": 25}
    assert Repairs(sheet_holes=25).reach == (reach(25),) * 3 and Repairs(sheet_holes=25).active


# ----------------------------------------------------------------------------- streamed = whole

@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 1000), area=st.sampled_from([9, 16, 25]), plug=st.booleans(),
       corner=st.tuples(st.integers(0, 25), st.integers(0, 29), st.integers(0, 27)))
def test_repairs_of_a_box_equal_the_whole_volume(seed, area, plug, corner):
    assert_box_equals_whole(Repairs(plug=plug, sheet_holes=area), _wavy(seed=seed), corner)


@pytest.mark.parametrize("chunks,kw", [
    (12, dict(fill_sheet_holes=25)),
    ((13, 16, 12), dict(fill_sheet_holes=25, plug_holes=True, fill_holes=8)),
    (8, dict(fill_sheet_holes=9, open="0", close="1,0,0")),
])
def test_streamed_sheet_holes_equal_the_whole_array(tmp_path, chunks, kw):
    vol = _wavy(seed=1).astype(np.uint8)
    options = dict(min_size=0, fill_holes=0, open=0, close=0) | kw
    r, ref = streamed_equals_whole(tmp_path, vol, chunks, options)
    without = postprocess_array(vol, **(options | {"fill_sheet_holes": 0}))
    assert r["complete"] and (ref & ~without).sum() > 20       # the holes were filled


# ----------------------------------------------------------------------------- CLI

@pytest.mark.parametrize("args,needles", [
    (["--fill-sheet-holes", "-1"], ("--fill-sheet-holes", "whole number >= 0", "0 = off")),
    (["--fill-sheet-holes", "2.5"], ("--fill-sheet-holes", "whole number >= 0")),
    (["--fill-sheet-holes", "many"], ("--fill-sheet-holes", "'many'")),
    (["--fill-sheet-holes", "20000"], ("--fill-sheet-holes", "too large")),
    (["--fill-sheet-holes", "400", "--chunks", "16"], ("--fill-sheet-holes", "16-voxel chunks",
                                                        "--chunks 42 or more", "--fill-sheet-holes 36 or less")),
])
def test_bad_sheet_holes_exit_2_and_write_nothing(tmp_path, args, needles):
    refused_by_postprocess(tmp_path, _wavy(seed=2).astype(np.uint8), args, needles)


def test_cli_sheet_holes_match_the_library(tmp_path):
    vol = _wavy(seed=3).astype(np.uint8)
    write_volume(tmp_path / "in.zarr", vol, chunks=8)
    result = runner.invoke(app, ["postprocess", str(tmp_path / "in.zarr"), "-o", str(tmp_path / "o.zarr"),
                                 "--fill-sheet-holes", "16", "--open", "0", "--min-size", "0", "--chunks", "16",
                                 "--scheduler", "synchronous", "--quiet"])
    assert result.exit_code == 0, result.stderr
    # --open 0: the default opening along z removes these flat sheets 2 voxels thick along z
    ref = postprocess_array(vol, fill_sheet_holes=16, open=0, min_size=0, fill_holes=16)
    np.testing.assert_array_equal(_read(tmp_path / "o.zarr"), ref)
    assert (ref & ~postprocess_array(vol, open=0, min_size=0, fill_holes=16)).sum() > 20
