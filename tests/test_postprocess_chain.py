"""volseg.postprocess.chain: predict, then post-process the prediction, checked before anything is written."""

import numpy as np
import pytest
import zarr

from volseg.errors import VolsegError
from volseg.inference.settings import predict_options
from volseg.postprocess.chain import check_outputs, predict_then_postprocess


@pytest.fixture(scope="module")
def files(tmp_path_factory, make_run):
    root = tmp_path_factory.mktemp("chain")
    make_run(root / "run")
    np.save(root / "v.npy", np.random.default_rng(2).normal(size=(16, 16, 16)).astype(np.float32))
    return root


@pytest.mark.parametrize("options", [{"stitch": False}, {"stitch": True, "part": "1/2"}])
def test_labels_need_the_whole_stitched_volume(files, tmp_path, options):
    settings, _, execution = predict_options(**options)
    with pytest.raises(VolsegError, match="--postprocess"):
        check_outputs(files / "run", files / "v.npy", tmp_path / "p.zarr", tmp_path / "l.zarr", settings, execution)
    assert not list(tmp_path.iterdir())


def test_labels_inside_the_prediction_are_refused(files, tmp_path):
    settings, _, execution = predict_options(stitch=True)
    with pytest.raises(VolsegError):
        check_outputs(files / "run", files / "v.npy", tmp_path / "p.zarr", tmp_path / "p.zarr" / "l.zarr", settings,
                      execution)


def test_predict_then_postprocess_writes_both(files, tmp_path):
    settings, output, execution = predict_options(patch=8, chunks=8, stitch=True, workers=1, quiet=True)
    result = predict_then_postprocess(files / "run", str(files / "v.npy"), str(tmp_path / "p.zarr"), settings,
                                      output, execution, labels=str(tmp_path / "l.zarr"))
    assert result["complete"] and result["postprocess"]["output"] == str(tmp_path / "l.zarr")
    labels = zarr.open_array(str(tmp_path / "l.zarr" / "0"))[:]
    assert labels.dtype == np.uint8 and labels.shape == (16, 16, 16)
