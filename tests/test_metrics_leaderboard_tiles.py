"""Topology per leaderboard tile: hand cases, and the streamed `topology` equals the in-memory reference."""

import json

import numpy as np
import pytest
from scipy import ndimage
from typer.testing import CliRunner

from volseg.cli import app
from volseg.geometry import axis_cuts
from volseg.metrics import betti_numbers, evaluate, tiled_topology
from volseg.metrics.topology import topology_f1, weighted_topology
from volseg.parallel import Execution


def test_axis_cuts_like_the_leaderboard():
    assert axis_cuts(160, 2) == [(0, 80), (80, 160)]
    assert axis_cuts(37, 2) == [(0, 19), (19, 37)]
    assert axis_cuts(1, 2) == [(0, 1)]          # shorter than 2 voxels: one tile
    assert axis_cuts(7, 3) == [(0, 3), (3, 5), (5, 7)]


def _ring(shape, centre, radius):
    """A one-voxel-thick ring (b = 1, 1, 0) in a z plane around ``centre``."""
    z, y, x = np.indices(shape)
    r = np.hypot(y - centre[1], x - centre[2])
    return (z == centre[0]) & (np.abs(r - radius) < 0.75)


def _u_sheet(shape=(16, 24, 16)):
    """A U-shaped sheet through every z: its bottom below the y cut, both arms crossing it."""
    mask = np.zeros(shape, bool)
    mask[:, 3, 2:7] = True                  # bottom of the U (y < 12)
    mask[:, 3:20, 2] = True                 # left arm, crosses y = 12
    mask[:, 3:20, 6] = True                 # right arm
    return mask


def _shell(shape, centre, outer=4.5, inner=2.5):
    z, y, x = np.indices(shape)
    r = np.sqrt((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2)
    return (r < outer) & (r > inner)


def test_ring_spanning_tiles_is_arcs_and_a_ring_inside_one_tile_is_a_tunnel():
    across = _ring((16, 32, 16), (4, 16, 4), 3)       # crosses the y cut at 16
    assert betti_numbers(across) == (1, 1, 0)
    assert tiled_topology(across, across)["truth"] == [0, 0, 0]   # two arcs, one per tile
    inside = _ring((16, 32, 32), (4, 8, 8), 3)        # y and x in 5..11: tile (0, 0, 0) only
    assert tiled_topology(inside, inside)["truth"] == [0, 1, 0]


def test_one_sheet_cut_into_arcs_by_the_tile_planes():
    sheet = _u_sheet()
    assert betti_numbers(sheet) == (1, 0, 0)          # one component in the whole volume
    got = tiled_topology(sheet, sheet)
    # Per z half, the tile above the y cut holds the two arms: b0 = 2, one feature; below: the bottom.
    assert got["truth"] == got["pred"] == got["matched"] == [2, 0, 0]
    assert got["tiles"] == [2, 2, 2] and got["topology"] == 1.0
    # An extra blob in an empty tile adds nothing (b0 - 1 = 0 there); in a tile with the sheet, one.
    pred = sheet.copy()
    pred[12, 4, 12] = True
    assert tiled_topology(pred, sheet)["pred"] == [2, 0, 0]
    pred[12, 8, 4] = True
    got = tiled_topology(pred, sheet)
    assert got["pred"] == [3, 0, 0] and got["matched"] == [2, 0, 0]
    assert got["topology"] == pytest.approx(weighted_topology([topology_f1(2, 3, 2), None, None]))


def test_cavity_inside_a_tile_counts_and_a_cavity_cut_by_a_tile_plane_does_not():
    inside = _shell((24, 24, 24), (6, 6, 6))
    assert tiled_topology(inside, inside)["truth"] == [0, 0, 1]
    cut = _shell((24, 24, 24), (12, 6, 6))            # centred on the z cut: two bowls
    assert betti_numbers(cut) == (1, 0, 1)
    assert tiled_topology(cut, cut)["truth"] == [0, 0, 0]
    got = tiled_topology(cut, inside)
    assert got["pred"] == [0, 0, 0] and got["truth"] == [0, 0, 1] and got["topology"] == 0.0


def _blobs(seed, shape):
    rng = np.random.default_rng(seed)
    sigma, level = rng.uniform(0.4, 1.0), rng.uniform(0.42, 0.58)
    return [ndimage.gaussian_filter(rng.random(shape), sigma) > level for _ in range(2)]


@pytest.mark.parametrize("seed,shape,block", [
    (0, (20, 20, 20), 7), (1, (21, 17, 19), 5), (2, (37, 12, 9), (8, 5, 4)), (3, (13, 1, 15), 3),
    (4, (2, 9, 3), 2), (5, (23, 18, 25), (64, 6, 9)), (6, (9, 40, 11), (3, 19, 2)), (7, (16, 16, 16), 8),
])
def test_streamed_topology_equals_the_in_memory_tiles(seed, shape, block):
    p, g = _blobs(seed, shape)
    ref = tiled_topology(p, g)
    got = evaluate(p.astype(np.uint8), g.astype(np.uint8), metrics="betti,topology", block=block,
                   execution=Execution.parse(scheduler="synchronous", quiet=True))
    assert got["topology"] == pytest.approx(ref.pop("topology"), abs=1e-12)
    assert got["topology_counts"] == ref
    assert got["betti"] == {"pred": list(betti_numbers(p)), "truth": list(betti_numbers(g))}


def test_random_cases_have_every_kind_of_feature():
    totals = np.zeros(3, int)
    for seed in range(8):
        p, g = _blobs(seed, (20, 20, 20))
        totals += tiled_topology(p, g)["truth"]
    assert (totals > 0).all(), totals          # the equality test above sees b0, b1 and b2


def test_cli_json_topology_and_score_from_the_tiles(tmp_path):
    truth = _u_sheet().astype(np.uint8)
    pred = truth.copy()
    pred[12, 8, 4] = 1                          # one spurious component in the tile of the U's bottom
    np.save(tmp_path / "truth.npy", truth)
    np.save(tmp_path / "pred.npy", pred)
    runner = CliRunner()
    result = runner.invoke(app, ["evaluate", str(tmp_path / "pred.npy"), str(tmp_path / "truth.npy"),
                                 "--json", "-", "--block", "5", "--quiet", "--scheduler", "synchronous"])
    assert result.exit_code == 0, result.stderr
    values = json.loads(result.stdout)
    assert values["betti"] == {"pred": [2, 0, 0], "truth": [1, 0, 0]}
    assert values["topology_counts"] == {"matched": [2, 0, 0], "pred": [3, 0, 0], "truth": [2, 0, 0],
                                         "tiles": [2, 2, 2]}
    assert values["topology"] == pytest.approx(0.8)              # 2 * 2 / (3 + 2)
    expected = 0.30 * 0.8 + 0.35 * values["surface_dice"] + 0.35 / (1 + 0.3 * values["voi"])
    assert values["score"] == pytest.approx(expected)
    table = runner.invoke(app, ["evaluate", str(tmp_path / "pred.npy"), str(tmp_path / "truth.npy"),
                                "--metrics", "topology", "--scheduler", "synchronous"])
    assert table.exit_code == 0 and "topology_counts" in table.stdout and "2x2x2" in table.stdout
