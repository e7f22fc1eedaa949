"""volseg.data.patchify_request: the mode of `volseg patchify` and the command recorded in the store."""

import numpy as np
import pytest

from volseg.data.patchify_request import PatchGrid, patchify_request
from volseg.errors import VolsegError
from volseg.parallel import Execution


def test_the_recorded_command_holds_the_options_that_shape_the_patches():
    grid = PatchGrid(patch="16", samples=10, foreground_fraction=0.5, seed=3, pad=True)
    assert grid.command_line("v.zarr", "p.zarr", "l.zarr") == (
        "volseg patchify v.zarr -o p.zarr --patch 16 --labels l.zarr --samples 10 --foreground-fraction 0.5 "
        "--seed 3 --pad")
    assert PatchGrid().command_line("a b.tif", "p.zarr", None) == "volseg patchify 'a b.tif' -o p.zarr --patch 64"


@pytest.mark.parametrize("kwargs, needle", [({"volume": None}, "VOLUME"), ({"per_volume": True}, "--per-volume")])
def test_a_single_volume_request_is_checked(tmp_path, kwargs, needle):
    np.save(tmp_path / "v.npy", np.zeros((16, 16, 16), np.float32))
    args = {"volume": str(tmp_path / "v.npy"), **kwargs}
    with pytest.raises(VolsegError, match=needle):
        patchify_request(args.pop("volume"), str(tmp_path / "p.zarr"), **args)
    assert not (tmp_path / "p.zarr").exists()


def test_a_grid_of_one_volume(tmp_path):
    np.save(tmp_path / "v.npy", np.random.default_rng(0).random((16, 16, 16)).astype(np.float32))
    np.save(tmp_path / "l.npy", np.zeros((16, 16, 16), np.uint8))
    summary = patchify_request(str(tmp_path / "v.npy"), str(tmp_path / "p.zarr"), labels=str(tmp_path / "l.npy"),
                               grid=PatchGrid(patch="8"), execution=Execution.parse(workers=1, quiet=True))
    assert summary["patches"] == 8 and summary["mode"] == "grid"
