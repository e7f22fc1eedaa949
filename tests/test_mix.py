"""Training on many volumes: mixing, validation split by volume (checked with provenance and
with each volume's intensity signature), end to end through `volseg train`."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from test_sources import write_pairs
from volseg.cli import app
from volseg.data.mix import SourceMix, Sources, make_training_datasets
from volseg.data.patchstore import PatchStore
from volseg.data.sources import patch_sources
from volseg.training.loop import batch_stream

torch.set_num_threads(1)
runner = CliRunner()
TINY = ["--steps", "3", "--batch-size", "2", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pairs")
    images, labels = write_pairs(root, n=3)
    store = root / "all.zarr"
    result = runner.invoke(app, ["patchify", "--images", str(images), "--labels", str(labels),
                                 "-o", str(store), "--patch", "16", "--stride", "8", "--quiet"])
    assert result.exit_code == 0, result.output
    per = root / "per"
    (root / "pairs.csv").write_text("".join(f"images/vol{k}.tif,labels/vol{k}.tif\n"
                                            for k in range(3)))
    result = runner.invoke(app, ["patchify", "--list", str(root / "pairs.csv"), "-o", str(per),
                                 "--per-volume", "--patch", "16", "--stride", "8", "--quiet"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in per.iterdir()) == ["vol0.zarr", "vol1.zarr", "vol2.zarr"]
    return {"images": images, "labels": labels, "store": store, "per": per, "root": root}


def _cfg(tmp_path):
    path = tmp_path / "cfg.yml"
    path.write_text("model: {ch: 4, depth: 2, groups: 4}\ndata: {samples_per_epoch: 8}\n"
                    "augment: {enabled: false}\n")
    return str(path)


class _Named(torch.utils.data.Dataset):
    def __init__(self, name, n):
        self.name, self.n = name, n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return (self.name, int(i))


def test_source_mix_shares_an_epoch_by_size_or_equally():
    parts = [_Named("a", 6), _Named("b", 2)]
    by_size = SourceMix(parts, sizes=[6, 2])
    assert len(by_size) == 8 and by_size.counts.tolist() == [6, 2]
    equal = SourceMix(parts, sizes=[6, 2], weights="equal")
    assert equal.counts.tolist() == [4, 4]
    epoch1 = [equal[8 + j] for j in range(8)]  # the second epoch continues each source's indices
    assert sorted(i for name, i in epoch1 if name == "b") == [4, 5, 6, 7]
    assert {by_size[j][0] for j in range(4)} == {"a", "b"}  # the first items cover every source


def test_validation_volumes_are_never_trained_on(pairs):
    store = PatchStore.open(pairs["store"])
    index, records = patch_sources(store)
    train, val = make_training_datasets(pairs["store"], task="segmentation", val_fraction=0.34,
                                        seed=3, augment={"enabled": False})
    train_src = {int(index[i]) for d in train.datasets for i in d.indices}
    val_src = {int(index[i]) for d in val.datasets for i in d.indices}
    assert len(val_src) == 1 and len(train_src) == 2 and not train_src & val_src
    # every item of the training stream comes from a training volume (intensity signature)
    held_out = 40 + 60 * val_src.pop()
    stream = batch_stream(train, batch_size=4, seed=3)
    for _ in range(12):  # 48 items: several epochs of the 16 training patches
        medians = next(stream)["image"].flatten(1).median(dim=1).values
        assert all(abs(float(m) - held_out) > 20 for m in medians)
    assert all(abs(float(val[i]["image"].median()) - held_out) < 15 for i in range(len(val)))


def test_train_on_two_stores_with_an_explicit_validation_store(tmp_path, pairs):
    per = pairs["per"]
    result = runner.invoke(app, ["train", *(str(per / f"vol{k}.zarr") for k in range(3)),
                                 "--val", str(per / "vol2.zarr"), "-o", str(tmp_path / "run"),
                                 "--config", _cfg(tmp_path), "--weights", "equal", "--json", "-",
                                 *TINY])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["steps"] == 3
    last = json.loads((tmp_path / "run/metrics.jsonl").read_text().splitlines()[-1])
    assert "val_dice" in last
    assert "weights: equal" in (tmp_path / "run/config.yml").read_text()
    train, val = make_training_datasets(Sources(paths=[str(per / "vol0.zarr"), str(per / "vol1.zarr")],
                                                val=[str(per / "vol2.zarr")]), task="segmentation")
    assert train.sources == ["vol0.zarr", "vol1.zarr"] and val.sources == ["vol2.zarr"]


def test_train_on_a_folder_of_tiff_pairs(tmp_path, pairs):
    result = runner.invoke(app, ["train", "--images", str(pairs["images"]), "--labels",
                                 str(pairs["labels"]), "--patch", "16", "--val-fraction", "0.34",
                                 "-o", str(tmp_path / "run"), "--config", _cfg(tmp_path), *TINY])
    assert result.exit_code == 0, result.output
    assert "val_dice" in (tmp_path / "run/metrics.jsonl").read_text()


def test_stores_with_different_channel_counts_exit_2(tmp_path, pairs):
    from volseg.data.patchstore import create_store

    two = tmp_path / "two.zarr"
    create_store(two, n=2, channels=2, patch=(16, 16, 16), dtype="uint8", labels=True,
                 attrs={"kind": "patches", "source": "x", "source_shape": [16, 16, 16],
                        "patch": [16] * 3, "mode": "grid"}, origins=np.zeros((2, 3), np.int64))
    result = runner.invoke(app, ["train", str(pairs["per"] / "vol0.zarr"), str(two), "-o",
                                 str(tmp_path / "run"), *TINY])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {two}: has 2 channel(s) but")
    assert not (tmp_path / "run").exists()
    result = runner.invoke(app, ["train", str(two), "--val", str(two), "-o",
                                 str(tmp_path / "run"), *TINY])
    assert result.exit_code == 2 and "--val: leaves no training source" in result.stderr


def test_sources_describe_themselves():
    assert str(Sources(paths=["a.zarr"])) == "a.zarr"
    assert str(Sources(paths=["a.zarr", "b.zarr"])) == "2 training sources"


def _refused(result, first, second):
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, lines
    assert lines[0].startswith(f"error: {second}: is the same source as {first}"), lines[0]
    assert "give each source once" in lines[0]


def test_a_source_given_twice_is_refused_before_the_split(pairs, tmp_path):
    store = pairs["per"] / "vol0.zarr"
    link = tmp_path / "link.zarr"
    link.symlink_to(store)
    run = tmp_path / "run"
    for first, second in [(store, store), (store, link), (store, f"{store}/../vol0.zarr")]:
        result = runner.invoke(app, ["train", str(first), str(pairs["per"] / "vol1.zarr"), str(second),
                                     "-o", str(run), "--config", _cfg(tmp_path), *TINY])
        _refused(result, first, second)
    listing = tmp_path / "twice.csv"
    root = pairs["root"]
    listing.write_text(f"{root}/images/vol0.tif,{root}/labels/vol0.tif\nimages/vol1.tif,labels/vol1.tif\n"
                       "images/vol0.tif,labels/vol0.tif\n")
    (tmp_path / "images").symlink_to(root / "images")
    (tmp_path / "labels").symlink_to(root / "labels")
    result = runner.invoke(app, ["train", "--list", str(listing), "-o", str(run), "--patch", "16",
                                 "--config", _cfg(tmp_path), *TINY])
    _refused(result, f"{root}/images/vol0.tif,{root}/labels/vol0.tif",
             f"{tmp_path}/images/vol0.tif,{tmp_path}/labels/vol0.tif")
    assert not run.exists()


def test_one_store_of_many_pairs_twice_is_refused(pairs, tmp_path):
    with pytest.raises(Exception, match=r"is the same source as .*all\.zarr \(all\.zarr:vol0\)"):
        make_training_datasets(Sources(paths=[str(pairs["store"])] * 2), task="segmentation")


def test_source_key_sees_through_spellings(tmp_path):
    from volseg.data.sources import source_key

    (tmp_path / "a.zarr").mkdir()
    (tmp_path / "b.zarr").symlink_to(tmp_path / "a.zarr")
    same = [tmp_path / "a.zarr", f"{tmp_path}/./a.zarr/", tmp_path / "b.zarr", f"file://{tmp_path}/a.zarr",
            f"file://localhost{tmp_path}/b.zarr"]
    assert len({source_key(p) for p in same}) == 1
    assert source_key("S3://Bucket//k/./x/") == source_key("s3://bucket/k/x")
    assert source_key(tmp_path / "a.zarr") != source_key(tmp_path / "c.zarr")
