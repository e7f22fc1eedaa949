"""Training datasets: patch stores and streamed volumes, seeding, workers, validation split."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from volseg.data.dataset import EpochSampler, make_datasets, make_loader
from volseg.data.patchify import patchify
from volseg.errors import VolsegError


@pytest.fixture(scope="module")
def scroll(tmp_path_factory):
    from volseg.data.synth import write_synth

    return write_synth("scroll", tmp_path_factory.mktemp("ds") / "scroll.zarr", shape=(48, 40, 40), seed=0,
                       chunks=16)


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    from volseg.data.synth import write_synth

    return write_synth("scan", tmp_path_factory.mktemp("ds") / "scan.zarr", shape=(32, 32, 32), seed=0, chunks=16)


@pytest.fixture(scope="module")
def store(scroll, tmp_path_factory):
    return patchify(scroll, out=tmp_path_factory.mktemp("ds") / "p.zarr", patch=16, stride=16)


def _batches(loader):
    return [b for b in loader]


def test_volume_items_follow_the_contract(scroll):
    train, val = make_datasets(scroll, task="segmentation", patch=(16, 16, 16), val_fraction=0.25,
                               samples_per_epoch=12, augment=False)
    assert len(train) == 12 and len(val) == 3 and train.stop[0] == 32
    item = train[0]
    assert set(item) == {"image", "label"}
    assert item["image"].shape == (1, 16, 16, 16) and item["image"].dtype == torch.float32
    assert item["label"].shape == (1, 16, 16, 16) and item["label"].dtype == torch.uint8
    assert set(torch.unique(item["label"]).tolist()) <= {0, 1, 2}
    # raw values: the CT is uint8, items are its voxels as floats
    origin, raw, _ = train.draw(0)
    assert np.array_equal(item["image"][0].numpy(), raw["image"].astype(np.float32))


def test_volume_streaming_reads_exact_voxels_and_holds_out_a_slab(scroll):
    from volseg.io import find_labels, open_volume

    train, val = make_datasets(scroll, task="segmentation", patch=(8, 16, 16), val_fraction=0.25,
                               samples_per_epoch=20, augment=False)
    image = open_volume(scroll).compute()
    labels = open_volume(find_labels(scroll)).compute()
    z_split = 48 - 12
    for ds, lo, hi in ((train, 0, z_split), (val, z_split, 48)):
        for i in range(len(ds)):
            (z, y, x), raw, _ = ds.draw(i)
            assert lo <= z and z + 8 <= hi
            assert np.array_equal(raw["image"], image[z:z + 8, y:y + 16, x:x + 16])
            assert np.array_equal(raw["label"], labels[z:z + 8, y:y + 16, x:x + 16])


def test_same_seed_same_patches_and_epochs_differ(scroll):
    a, _ = make_datasets(scroll, task="segmentation", patch=16, val_fraction=0, samples_per_epoch=6, seed=3)
    b, _ = make_datasets(scroll, task="segmentation", patch=16, val_fraction=0, samples_per_epoch=6, seed=3)
    c, _ = make_datasets(scroll, task="segmentation", patch=16, val_fraction=0, samples_per_epoch=6, seed=4)
    for i in range(6):
        assert torch.equal(a[i]["image"], b[i]["image"]) and torch.equal(a[i]["label"], b[i]["label"])
    assert any(not torch.equal(a[i]["image"], c[i]["image"]) for i in range(6))
    loader = make_loader(a, batch_size=3, seed=0)
    first, second = _batches(loader), _batches(loader)
    assert not torch.equal(first[0]["image"], second[0]["image"])


def test_workers_draw_distinct_streams_and_match_single_process(scroll):
    train, _ = make_datasets(scroll, task="segmentation", patch=16, val_fraction=0, samples_per_epoch=8,
                             seed=1, augment={"elastic_p": 0.0, "scale_p": 0.0})
    multi = _batches(make_loader(train, batch_size=2, workers=2, seed=5))
    single = _batches(make_loader(train, batch_size=2, workers=0, seed=5))
    for m, s in zip(multi, single):
        assert torch.equal(m["image"], s["image"]) and torch.equal(m["label"], s["label"])
    flat = torch.cat([b["image"] for b in multi]).reshape(8, -1)
    # batches 0, 2 come from worker 0 and 1, 3 from worker 1: no two items are the same patch
    assert len({tuple(row[:64].tolist()) + (float(row.sum()),) for row in flat}) == 8


def test_foreground_fraction_of_streamed_patches(scroll):
    train, _ = make_datasets(scroll, task="segmentation", patch=16, val_fraction=0, samples_per_epoch=40,
                             foreground_fraction=1.0, augment=False)
    assert all((train[i]["label"] == 1).any() for i in range(40))


def test_validation_is_fixed_across_epochs(scroll):
    _, val = make_datasets(scroll, task="segmentation", patch=(8, 16, 16), val_fraction=0.25, samples_per_epoch=8)
    loader = make_loader(val, batch_size=2, shuffle=False)
    a, b = _batches(loader), _batches(loader)
    assert all(torch.equal(x["image"], y["image"]) for x, y in zip(a, b))


def test_translation_from_scan(scan):
    train, val = make_datasets(scan, task="translation", patch=16, val_fraction=0.5, samples_per_epoch=4)
    item = train[0]
    assert set(item) == {"image", "target"}
    assert item["image"].shape == item["target"].shape == (1, 16, 16, 16)
    assert item["target"].dtype == torch.float32
    assert len(val) == 2


def test_patch_store_split_crop_and_augment(store):
    train, val = make_datasets(store, task="segmentation", patch=(8, 12, 12), val_fraction=0.25, seed=2)
    n = len(train) + len(val)
    assert n == 3 * 3 * 3
    assert not set(train.indices.tolist()) & set(val.indices.tolist())
    assert sorted(train.indices.tolist() + val.indices.tolist()) == list(range(n))
    item = train[0]
    assert item["image"].shape == (1, 8, 12, 12) and item["label"].shape == (1, 8, 12, 12)
    full, _ = make_datasets(store, task="segmentation", val_fraction=0, augment=False)
    assert full[0]["image"].shape == (1, 16, 16, 16)
    # centred validation crops are fixed
    assert torch.equal(val[0]["image"], val[0]["image"])


def test_held_out_slab_is_at_least_one_patch_deep(scroll):
    train, val = make_datasets(scroll, task="segmentation", patch=16, val_fraction=0.1, samples_per_epoch=10)
    assert train.stop[0] == 32 and val.start[0] == 32 and len(val) == 1


def test_epoch_sampler_continues_indices():
    s = EpochSampler(4, shuffle=True, seed=0)
    e0, e1 = list(s), list(s)
    assert sorted(e0) == [0, 1, 2, 3] and sorted(e1) == [4, 5, 6, 7]


def test_bad_inputs_name_the_problem(scroll, store, tmp_path):
    import tifffile

    tif = tmp_path / "vol.tif"
    tifffile.imwrite(tif, np.zeros((20, 20, 20), np.uint8))
    with pytest.raises(VolsegError, match="label"):
        make_datasets(tif, task="segmentation", patch=8)
    with pytest.raises(VolsegError, match="target"):
        make_datasets(tif, task="translation", patch=8)
    other = tmp_path / "other.tif"
    tifffile.imwrite(other, np.zeros((20, 20, 19), np.uint8))
    with pytest.raises(VolsegError, match="must match") as err:
        make_datasets(tif, task="segmentation", patch=8, labels=other)
    assert err.value.path == str(other)
    empty = tmp_path / "empty.tif"
    tifffile.imwrite(empty, np.zeros((20, 20, 20), np.uint8))
    with pytest.raises(VolsegError, match="no foreground"):
        make_datasets(tif, task="segmentation", patch=8, labels=empty, val_fraction=0)
    train, _ = make_datasets(tif, task="segmentation", patch=8, labels=empty, foreground_fraction=0)
    assert train[0]["label"].shape == (1, 8, 8, 8)
    with pytest.raises(VolsegError, match="val_fraction"):
        make_datasets(scroll, task="segmentation", patch=16, val_fraction=1.0)
    with pytest.raises(VolsegError, match="val_fraction"):
        make_datasets(scroll, task="segmentation", patch=32, val_fraction=0.5)  # 16 slices left < 32
    with pytest.raises(VolsegError, match="larger than the volume"):
        make_datasets(scroll, task="segmentation", patch=64)
    with pytest.raises(VolsegError, match="larger than the stored"):
        make_datasets(store, task="segmentation", patch=32)
    with pytest.raises(VolsegError, match="targets"):
        make_datasets(store, task="translation")
    with pytest.raises(VolsegError, match="task"):
        make_datasets(store, task="detection")
    with pytest.raises(VolsegError, match="augment.flips"):
        make_datasets(store, task="segmentation", augment={"flips": 0.5})


def test_resize_3d_images_and_labels():
    from volseg.data.resize import resize_3d

    vol = np.random.default_rng(0).random((10, 30, 20)).astype(np.float32)
    out = resize_3d(vol, (8, 16, 16))
    assert out.shape == (8, 16, 16) and out.dtype == np.float32
    assert np.allclose(resize_3d(np.full((5, 7, 9), 3.0), (10, 14, 4)), 3.0)
    lab = (np.arange(10 * 30 * 20).reshape(10, 30, 20) % 3).astype(np.uint8)
    small = resize_3d(lab, (4, 12, 12), order=0)
    assert small.dtype == np.uint8 and set(np.unique(small)) <= {0, 1, 2}
    assert np.array_equal(resize_3d(lab, lab.shape, order=0), lab)
    with pytest.raises(VolsegError, match="shape"):
        resize_3d(vol, (0, 4, 4))
    with pytest.raises(VolsegError, match="3D"):
        resize_3d(vol[0], (4, 4, 4))


def test_volume_folder_dataset(tmp_path):
    from volseg.data.resize import VolumeFolderDataset

    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    rng = np.random.default_rng(0)
    for k, shape in enumerate([(12, 20, 20), (9, 16, 24)]):
        np.save(tmp_path / "img" / f"case{k}.npy", rng.random(shape).astype(np.float32))
        np.save(tmp_path / "lab" / f"case{k}.npy", (rng.random(shape) > 0.8).astype(np.uint8))
    ds = VolumeFolderDataset(tmp_path / "img", labels=tmp_path / "lab", shape=(8, 16, 16), augment={"flip_p": 1.0})
    assert len(ds) == 2
    item = ds[1]
    assert item["image"].shape == (1, 8, 16, 16) and item["label"].dtype == torch.uint8
    (tmp_path / "lab" / "case1.npy").unlink()
    with pytest.raises(VolsegError, match="case1"):
        VolumeFolderDataset(tmp_path / "img", labels=tmp_path / "lab", shape=8)
