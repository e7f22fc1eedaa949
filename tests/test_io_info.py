"""volume_info of an OME-Zarr pyramid: shape, levels, spacing, exact range, completion state."""

import numpy as np

from volseg.io import write_volume
from volseg.io.info import volume_info


def test_pyramid_description(tmp_path):
    data = np.arange(16 * 16 * 16, dtype=np.uint16).reshape(16, 16, 16)
    write_volume(tmp_path / "v.zarr", data, chunks=8, levels=2, spacing=(2.0, 1.0, 1.0))
    info = volume_info(tmp_path / "v.zarr")
    assert info["shape"] == [16, 16, 16] and info["levels"] == 2
    assert info["level_shapes"] == [[16, 16, 16], [8, 8, 8]] and info["spacing"] == [2.0, 1.0, 1.0]
    assert (info["min"], info["max"], info["range_sampled"]) == (0, 4095, False)
    assert info["chunks"] == [8, 8, 8] and info["dtype"] == "uint16" and info["labels"] is None


def test_a_prediction_shows_what_made_it(tmp_path, make_run):
    """volume_info of a volseg prediction: model hash, patch, overlap, blend, TTA, input, version."""
    from volseg import __version__
    from volseg.inference import predict
    from volseg.inference.settings import predict_options

    run = make_run(tmp_path / "run")
    np.save(tmp_path / "v.npy", np.random.default_rng(0).normal(size=(16, 16, 16)).astype(np.float32))
    predict(run, tmp_path / "v.npy", tmp_path / "p.zarr",
            *predict_options(patch=8, stitch=True, chunks=8, tta=True, device="cpu", quiet=True))
    made = volume_info(tmp_path / "p.zarr")["made_by"]
    assert len(made["model_sha256"]) == 64 and made["patch"] == [8, 8, 8] and made["tta"] is True
    assert made["overlap"] == 0.5 and made["blend"]["mode"] == "gaussian" and made["kind"] == "unet"
    assert made["volume"].endswith("v.npy") and made["volseg_version"] == __version__
    assert "made_by" not in volume_info(tmp_path / "v.npy")
