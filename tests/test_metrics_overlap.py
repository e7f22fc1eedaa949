"""Dice (exact) and surface Dice at a tolerance, whole and streamed."""

import numpy as np
import pytest

from volseg.errors import VolsegError
from volseg.metrics import dice, evaluate, surface_dice
from volseg.parallel import Execution


def _ball(shape=(40, 40, 40), centre=(20, 20, 20), radius=9):
    z, y, x = np.indices(shape)
    return (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= radius ** 2


def test_dice_exact():
    p = np.zeros((4, 5, 6), bool)
    g = np.zeros_like(p)
    p[0, :2] = True      # 12 voxels
    g[0, 1:4] = True     # 18 voxels, 6 shared
    assert dice(p, g) == 2 * 6 / (12 + 18)
    assert dice(g, g) == 1.0
    assert dice(np.zeros_like(p), np.zeros_like(p)) == 1.0
    assert dice(p, np.zeros_like(p)) == 0.0


def test_surface_dice_identical_and_shifts():
    g = _ball()
    assert surface_dice(g, g, tolerance=2) == 1.0
    assert surface_dice(np.roll(g, 1, axis=0), g, tolerance=2) == 1.0
    assert surface_dice(np.roll(g, 1, axis=2), g, tolerance=0) < 0.5
    far = surface_dice(np.roll(g, 5, axis=1), g, tolerance=2)
    assert far < 0.6


def test_surface_dice_empty_cases():
    empty = np.zeros((8, 8, 8), bool)
    full = empty.copy()
    full[2:5, 2:5, 2:5] = True
    assert surface_dice(empty, empty) == 1.0
    assert surface_dice(full, empty) == 0.0
    assert surface_dice(empty, full) == 0.0


def test_surface_dice_border_counts_as_background():
    # A mask filling the volume has its surface on the volume border.
    g = np.ones((6, 6, 6), bool)
    assert surface_dice(g, g) == 1.0
    assert surface_dice(g, np.roll(_ball((6, 6, 6), (3, 3, 3), 2), 0)) < 1.0


@pytest.mark.parametrize("tolerance", [0, 1, 2, 3.5])
def test_surface_dice_streamed_equals_whole(tolerance):
    rng = np.random.default_rng(1)
    g = _ball((30, 34, 26), (15, 17, 13), 10) | (rng.random((30, 34, 26)) < 0.01)
    p = np.roll(g, 2, axis=1) & (rng.random(g.shape) < 0.95)
    whole = surface_dice(p, g, tolerance=tolerance)
    streamed = evaluate(p, g.astype(np.uint8), metrics="surface_dice,dice", tolerance=tolerance,
                        block=(7, 8, 9), execution=Execution.parse(scheduler="synchronous", quiet=True))
    assert streamed["surface_dice"] == whole
    assert streamed["dice"] == dice(p, g)


def test_bad_tolerance():
    with pytest.raises(VolsegError, match="--tolerance"):
        surface_dice(_ball(), _ball(), tolerance=-1)
