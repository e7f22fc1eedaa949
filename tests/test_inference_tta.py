"""Test-time augmentation (:mod:`volseg.inference.tta`): flips as before bit for bit, rotations
about z that are undone and weighted by their validity, ``rot:0`` = no rotation, the fingerprint
unchanged unless rotations are used."""

import numpy as np
import pytest
import torch

from volseg.errors import VolsegError
from volseg.inference.runner import Runner
from volseg.inference.settings import PredictSettings
from volseg.inference.tta import augmented, inverse, parse_tta_rotate, rotate_z, transforms, Transform


def _flip_mean_as_before(fn, xs, flips):
    """The runner's TTA loop as it was before the module existed (the reference, bit for bit)."""
    import itertools

    sets = [tuple(a for a, on in zip((2, 3, 4), bits) if on) for bits in itertools.product((False, True), repeat=3)]
    sets = sets if flips else [()]
    acc = None
    for dims in sets:
        ys = fn(*[torch.flip(x, dims) if dims else x for x in xs]).float()
        ys = torch.flip(ys, dims) if dims else ys
        acc = ys if acc is None else acc + ys
    return acc / len(sets)


@pytest.fixture(scope="module")
def run(tmp_path_factory, make_run):
    return make_run(tmp_path_factory.mktemp("tta") / "run", seed=3) / "model.pt"


@pytest.fixture(scope="module")
def patches():
    return np.random.default_rng(0).normal(size=(2, 1, 8, 12, 16)).astype(np.float32)


@pytest.mark.parametrize("flips", [False, True])
def test_flips_are_unchanged_bit_for_bit(run, patches, flips):
    runner = Runner(str(run), batch_size=2, tta=flips)
    x = torch.from_numpy(patches)
    with torch.inference_mode():
        before = _flip_mean_as_before(runner.model, [x], flips).numpy()
    np.testing.assert_array_equal(runner.predict(patches), before)
    np.testing.assert_array_equal(Runner(str(run), batch_size=2, tta=flips, rotate=0.0).predict(patches), before)
    assert parse_tta_rotate("0") == 0.0 and [t.angle for t in transforms(flips, 0.0)] == [0.0] * (8 if flips else 1)


def test_rotation_of_a_constant_is_the_identity_inside_the_valid_region():
    x = torch.full((1, 1, 4, 20, 24), 3.5)
    for angle in (15.0, -15.0, 45.0):
        turned = rotate_z(x, angle, padding="zeros")
        valid = rotate_z(torch.ones_like(x), angle, padding="zeros") > 1 - 1e-5
        assert valid.float().mean() > 0.5
        np.testing.assert_allclose(turned[valid].numpy(), 3.5, rtol=1e-5)
        np.testing.assert_allclose(rotate_z(x, angle).numpy(), 3.5, rtol=1e-5)  # mirrored border: everywhere
    ident = augmented(lambda t: t, [x], flips=True, rotate=15.0)
    np.testing.assert_allclose(ident.numpy(), 3.5, rtol=1e-5)


def test_rotation_turns_the_plane_about_z_and_back():
    x = torch.zeros((1, 1, 3, 21, 21))
    x[:, :, :, 10, 14] = 1.0  # 4 voxels along +x from the centre
    turned = rotate_z(x, 90.0, padding="zeros")[0, 0, 1].numpy()
    y, xx = np.unravel_index(turned.argmax(), turned.shape)
    assert (abs(int(y) - 10), int(xx)) == (4, 10)  # now 4 voxels from the centre along y
    smooth = torch.from_numpy(np.fromfunction(lambda z, y, x: np.sin(y / 4) + np.cos(x / 5), (3, 21, 21),
                                              dtype=np.float32))[None, None]
    back = inverse(rotate_z(smooth, 15.0), Transform((), 15.0), padding="zeros")
    inner = (slice(None), slice(None), slice(None), slice(6, 15), slice(6, 15))
    np.testing.assert_allclose(back[inner].numpy(), smooth[inner].numpy(), atol=0.05)


def test_rotated_tta_blends_with_validity_weights(run, patches):
    plain = Runner(str(run), batch_size=2).predict(patches)
    rot = Runner(str(run), batch_size=2, rotate=15.0).predict(patches)
    both = Runner(str(run), batch_size=2, tta=True, rotate=15.0).predict(patches)
    assert rot.shape == both.shape == plain.shape and np.isfinite(both).all()
    assert 0 < np.abs(rot - plain).max() < 0.5
    assert 0.0 <= rot.min() and rot.max() <= 1.0  # a weighted mean of probabilities stays one
    assert len(transforms(True, 15.0)) == 24


def test_settings_parse_and_fingerprint_only_when_rotating():
    kwargs = dict(model_sha256="x", volume="v", volume_stamp="s", volume_shape=(8, 8, 8), stride=(4, 4, 4), kind="unet")
    plain = PredictSettings.parse(patch=8).fingerprint(**kwargs)
    assert "tta_rotate" not in plain and list(plain) == list(PredictSettings.parse(patch=8, tta_rotate=0).fingerprint(**kwargs))
    assert PredictSettings.parse(patch=8, tta_rotate="15").fingerprint(**kwargs)["tta_rotate"] == 15.0
    for bad in (-1, 46, "nan", "x"):
        with pytest.raises(VolsegError, match=r"^--tta-rotate: "):
            parse_tta_rotate(bad)
