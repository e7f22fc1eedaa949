"""3D augmentation: config validation, image/label consistency, anisotropy, seeding, speed."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy import ndimage

from volseg.data.augment import AugmentConfig, augment, parse_augment, rot90_planes
from volseg.errors import VolsegError

SPATIAL_ONLY = {"intensity_p": 0.0, "gamma_p": 0.0, "noise_p": 0.0, "blur_p": 0.0}
OFF = {**SPATIAL_ONLY, "flip_p": 0.0, "rot90_p": 0.0, "scale_p": 0.0, "elastic_p": 0.0}


def _sample(shape=(16, 16, 16), seed=0):
    rng = np.random.default_rng(seed)
    blobs = ndimage.gaussian_filter(rng.random(shape), 2.0)
    label = (blobs > np.quantile(blobs, 0.7)).astype(np.uint8) + (blobs > np.quantile(blobs, 0.95))
    return {"image": (label.astype(np.float32) * 100.0)[None], "label": label[None]}


def test_parse_defaults_and_switches():
    assert parse_augment(None) == AugmentConfig() and parse_augment(True).enabled
    assert not parse_augment(False).enabled and not parse_augment({"enabled": False}).enabled
    cfg = parse_augment({"flip_p": 1, "scale_range": [0.9, 1.1], "noise_std": 0.05, "elastic_grid": 5})
    assert cfg.flip_p == 1.0 and cfg.scale_range == (0.9, 1.1) and cfg.noise_std == (0.05, 0.05)
    assert cfg.elastic_grid == 5 and parse_augment(cfg) is cfg
    assert cfg.as_dict()["scale_range"] == [0.9, 1.1]
    short = parse_augment({"flip": True, "elastic": False, "noise": 0.4})
    assert short.flip_p == 0.5 and short.elastic_p == 0.0 and short.noise_p == 0.4


@pytest.mark.parametrize("cfg,key", [
    ({"flips": 0.5}, "augment.flips"),
    ({"flip": "yes"}, "augment.flip"),
    ({"flip_p": "often"}, "augment.flip_p"),
    ({"flip_p": 1.5}, "augment.flip_p"),
    ({"rot90_p": True}, "augment.rot90_p"),
    ({"scale_range": [1.2, 0.8]}, "augment.scale_range"),
    ({"scale_range": [0.0, 1.0]}, "augment.scale_range"),
    ({"gamma_range": "wide"}, "augment.gamma_range"),
    ({"blur_sigma": [-1, 1]}, "augment.blur_sigma"),
    ({"elastic_grid": 1}, "augment.elastic_grid"),
    ({"elastic_alpha": -2}, "augment.elastic_alpha"),
    ({"enabled": "yes"}, "augment.enabled"),
])
def test_bad_config_names_the_key(cfg, key):
    with pytest.raises(VolsegError) as err:
        parse_augment(cfg)
    assert err.value.path == key


def test_flips_and_rotations_move_image_and_label_together():
    cfg = parse_augment({**SPATIAL_ONLY, "flip_p": 0.5, "rot90_p": 1.0, "scale_p": 0.0, "elastic_p": 0.0})
    s = _sample()
    for seed in range(8):
        out = augment(s, cfg, np.random.default_rng(seed))
        assert np.array_equal(out["image"], out["label"].astype(np.float32) * 100.0)
        assert out["image"].flags.c_contiguous and out["label"].dtype == np.uint8
        assert np.bincount(out["label"].ravel(), minlength=3).tolist() == np.bincount(s["label"].ravel(),
                                                                                      minlength=3).tolist()


def test_scaling_and_elastic_keep_labels_nearest_and_aligned():
    cfg = parse_augment({**SPATIAL_ONLY, "flip_p": 0.0, "rot90_p": 0.0, "scale_p": 1.0, "elastic_p": 1.0,
                         "elastic_alpha": 2.0})
    s = _sample((24, 24, 24))
    out = augment(s, cfg, np.random.default_rng(1))
    assert set(np.unique(out["label"])) <= {0, 1, 2}
    assert not np.array_equal(out["label"], s["label"])
    agree = np.mean(np.rint(out["image"] / 100.0) == out["label"])
    assert agree > 0.95


def test_rot90_only_in_plane_for_anisotropic_spacing():
    assert rot90_planes((16, 16, 16), (1.0, 1.0, 1.0)) == [(1, 2), (0, 1), (0, 2)]
    assert rot90_planes((16, 16, 16), (3.0, 1.0, 1.0)) == [(1, 2)]
    assert rot90_planes((8, 16, 16), None) == [(1, 2)]
    cfg = parse_augment({**OFF, "rot90_p": 1.0})
    s = _sample()
    profile = s["label"].sum(axis=(2, 3))
    for seed in range(6):
        out = augment(s, cfg, np.random.default_rng(seed), spacing=(4.0, 1.0, 1.0))
        assert np.array_equal(out["label"].sum(axis=(2, 3)), profile)  # z untouched


def test_intensity_changes_image_only_and_skips_translation():
    cfg = parse_augment({**OFF, "intensity_p": 1.0, "gamma_p": 1.0, "noise_p": 1.0, "blur_p": 1.0})
    s = _sample()
    s["image"] = s["image"] + 10.0
    out = augment(s, cfg, np.random.default_rng(0))
    assert out["image"].dtype == np.float32 and not np.array_equal(out["image"], s["image"])
    assert np.array_equal(out["label"], s["label"])
    pair = {"image": s["image"], "target": s["image"] * 2}
    out = augment(pair, cfg, np.random.default_rng(0))
    assert np.array_equal(out["image"], pair["image"]) and np.array_equal(out["target"], pair["target"])


def test_seeded_and_disabled():
    s = _sample()
    cfg = parse_augment({k: 1.0 for k in ("flip_p", "scale_p", "elastic_p", "noise_p")})
    a = augment(s, cfg, np.random.default_rng(5))
    b = augment(s, cfg, np.random.default_rng(5))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    off = augment(s, parse_augment(False), np.random.default_rng(5))
    assert all(off[k] is s[k] for k in s)


def test_default_augmentation_is_fast_on_64_cubed():
    rng = np.random.default_rng(0)
    s = {"image": rng.random((1, 64, 64, 64), dtype=np.float32),
         "label": (rng.random((1, 64, 64, 64)) > 0.5).astype(np.uint8)}
    cfg = parse_augment({k: 1.0 for k in ("flip_p", "rot90_p", "scale_p", "elastic_p", "intensity_p",
                                          "gamma_p", "noise_p", "blur_p")})
    augment(s, cfg, rng)
    start = time.perf_counter()
    for _ in range(3):
        augment(s, cfg, rng)
    assert (time.perf_counter() - start) / 3 < 1.5  # every transform at once; generous for shared CI
