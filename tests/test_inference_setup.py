"""volseg.inference.setup: a predict request resolved once (model, plan, settings, fingerprint)."""

import numpy as np
import pytest

from volseg.errors import VolsegError
from volseg.inference.settings import PredictSettings
from volseg.inference.setup import ModelInfo, default_patch, prepare


@pytest.fixture(scope="module")
def files(tmp_path_factory, make_run):
    root = tmp_path_factory.mktemp("setup")
    make_run(root / "run", out_ch=2)
    np.save(root / "v.npy", np.random.default_rng(0).normal(size=(20, 24, 18)).astype(np.float32))
    return root


def test_prepare_resolves_the_settings_and_records_them(files):
    setup = prepare(files / "run", str(files / "v.npy"), PredictSettings.parse(patch=8, chunks=16, amp=True),
                    workers=1)
    assert setup.info == ModelInfo("unet", 2, 1, 2) and setup.info.to_dict() == {
        "kind": "unet", "depth": 2, "in_channels": 1, "out_channels": 2}
    assert setup.plan.patch == (8, 8, 8) and setup.plan.stride == (4, 4, 4)
    assert setup.settings.patch == (8, 8, 8) and setup.settings.chunks == tuple(setup.plan.chunks)
    assert setup.settings.amp is False  # this CPU: --amp runs in fp32 (no native bf16), recorded as run
    assert setup.fingerprint["patch"] == [8, 8, 8] and setup.fingerprint["amp"] is False
    assert setup.fingerprint["volume"] == str((files / "v.npy").resolve())
    assert setup.tile == (64, 64)  # 1024 voxels in chunks of 16
    assert setup.blender().patch == (8, 8, 8)


def test_prepare_refuses_a_patch_the_model_cannot_take(files):
    with pytest.raises(VolsegError, match="divisible by 2\\*\\*depth = 4"):
        prepare(files / "run", str(files / "v.npy"), PredictSettings.parse(patch=6))
    with pytest.raises(VolsegError, match="padding is off"):
        prepare(files / "run", str(files / "v.npy"), PredictSettings.parse(patch=32, pad=False))


def test_the_default_patch_is_the_runs():
    assert default_patch({"config": {"data": {"patch": [32]}}}) == (32, 32, 32)
    assert default_patch({}) == (64, 64, 64)


def test_image_models_say_so():
    assert ModelInfo("unet", 2, 1, 1, "image").image and ModelInfo("diffusion", 2, 2, 1).image
    assert ModelInfo("unet", 2, 1, 1, "image").to_dict()["output"] == "image"
    assert not ModelInfo("unet", 2, 1, 1).image
