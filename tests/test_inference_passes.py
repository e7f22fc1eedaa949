"""volseg.inference.passes: the patches of a group computed once, fused or into a patch store."""

import numpy as np
import pytest
import zarr

from volseg.inference.output import OutputOptions
from volseg.inference.passes import group_outputs, predict_fused, predict_store
from volseg.inference.settings import PredictSettings
from volseg.inference.setup import prepare
from volseg.parallel import Execution


@pytest.fixture(scope="module")
def setup(tmp_path_factory, make_run):
    root = tmp_path_factory.mktemp("passes")
    make_run(root / "run")
    vol = np.random.default_rng(1).normal(size=(16, 16, 16)).astype(np.float32)
    vol[:8] = 0.0  # constant patches, skipped with --skip-value 0
    np.save(root / "v.npy", vol)
    return root, prepare(root / "run", str(root / "v.npy"), PredictSettings.parse(patch=8, chunks=8, skip_value=0),
                         workers=1)


def test_a_group_runs_its_patches_and_skips_constant_ones(setup):
    _, s = setup
    origins, out, stats = group_outputs(s, (0, 0, 0))
    assert out.shape == (len(origins), 1, 8, 8, 8) and (origins >= 0).all()
    assert stats["patches"] + stats["patches_skipped"] == len(origins) and stats["patches_skipped"] > 0
    constant = s.runner.background(0.0, (8, 8, 8))
    skipped = [k for k, o in enumerate(origins) if o[0] + 8 <= 8]
    np.testing.assert_array_equal(out[skipped[0]], constant)


def test_fused_and_store_passes_write_their_outputs_and_the_settings_file(setup, tmp_path):
    _, s = setup
    spec = OutputOptions.parse().spec(1)
    fused = predict_fused(s, str(tmp_path / "f.zarr"), spec, Execution.parse(workers=1, quiet=True), record="a: 1\n")
    assert fused["complete"] and fused["chunks_written"] == 8
    assert zarr.open_array(str(tmp_path / "f.zarr" / "0")).shape == (16, 16, 16)
    assert (tmp_path / "f.zarr" / "volseg-predict.yml").read_text() == "a: 1\n"
    store = predict_store(s, str(tmp_path / "p.zarr"), Execution.parse(workers=1, quiet=True))
    assert store["complete"] and store["groups_written"] == 8
    assert zarr.open_group(str(tmp_path / "p.zarr"))["patches"].shape[1:] == (1, 8, 8, 8)
    again = predict_store(s, str(tmp_path / "p.zarr"), Execution.parse(workers=1, quiet=True))
    assert again["groups_written"] == 0 and again["groups_done_before"] == 8
