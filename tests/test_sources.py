"""Image/label pairs from folders and list files; patchify of many pairs with provenance."""

import json

import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

from volseg.cli import app
from volseg.data.patchstore import PatchStore
from volseg.data.sources import pairs_from_dirs, pairs_from_list, patch_sources, volume_stem
from volseg.errors import VolsegError

runner = CliRunner()


def write_pairs(root, n=3, side=24):
    """n TIFF image/label pairs; volume k's intensities sit around 40 + 60 k (its signature)."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for k in range(n):
        lab = np.zeros((side,) * 3, np.uint8)
        lab[:, 6 + k:12 + k, :] = 1
        img = (40 + 60 * k + 10 * lab + rng.normal(0, 2, lab.shape)).clip(0, 255).astype(np.uint8)
        tifffile.imwrite(root / "images" / f"vol{k}.tif", img)
        tifffile.imwrite(root / "labels" / f"vol{k}.tif", lab)
    return root / "images", root / "labels"


def test_volume_stem_strips_format_suffixes():
    assert [volume_stem(n) for n in ("a.nii.gz", "b.ome.zarr", "c.tif", "d.zarr", "e")] == \
        ["a", "b", "c", "d", "e"]


def test_pairs_match_by_name_across_formats_and_nnunet_channels(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    for name in ("a.tif", "b_0000.nii.gz", "c.npy"):
        (tmp_path / "img" / name).write_bytes(b"")
    for name in ("a.nii.gz", "b.nii.gz", "c.tif"):
        (tmp_path / "lab" / name).write_bytes(b"")
    pairs = pairs_from_dirs(tmp_path / "img", tmp_path / "lab")
    assert [(p.name, p.image.name, p.label.name) for p in pairs] == [
        ("a", "a.tif", "a.nii.gz"), ("b", "b_0000.nii.gz", "b.nii.gz"), ("c", "c.npy", "c.tif")]


def test_unpaired_names_are_listed(tmp_path):
    images, labels = write_pairs(tmp_path, n=2)
    (images / "extra.tif").write_bytes(b"")
    (labels / "vol1.tif").unlink()
    with pytest.raises(VolsegError, match="images without labels: vol1.tif, extra.tif|"
                                          "images without labels: extra.tif, vol1.tif"):
        pairs_from_dirs(images, labels)


def test_pairs_from_csv_and_yaml_lists(tmp_path):
    images, labels = write_pairs(tmp_path, n=2)
    (tmp_path / "pairs.csv").write_text("image,label\nimages/vol0.tif,labels/vol0.tif\n"
                                        f"{images / 'vol1.tif'},{labels / 'vol1.tif'}\n")
    (tmp_path / "pairs.yml").write_text("- {image: images/vol0.tif, label: labels/vol0.tif}\n"
                                        "- {image: images/vol1.tif, label: labels/vol1.tif}\n")
    for name in ("pairs.csv", "pairs.yml"):
        pairs = pairs_from_list(tmp_path / name)
        assert [p.image.name for p in pairs] == ["vol0.tif", "vol1.tif"]
        assert all(p.label.is_file() for p in pairs)
    (tmp_path / "bad.csv").write_text("images/vol0.tif,labels/missing.tif\n")
    with pytest.raises(VolsegError, match="line 1: labels/missing.tif does not exist"):
        pairs_from_list(tmp_path / "bad.csv")


def test_patchify_folders_writes_one_store_with_provenance(tmp_path):
    images, labels = write_pairs(tmp_path)
    out = tmp_path / "p.zarr"
    result = runner.invoke(app, ["patchify", "--images", str(images), "--labels", str(labels),
                                 "-o", str(out), "--patch", "16", "--stride", "8", "--quiet",
                                 "--json", "-"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["volumes"] == 3 and summary["patches"] == 24
    store = PatchStore.open(out)
    index, records = patch_sources(store)
    assert [r["name"] for r in records] == ["vol0", "vol1", "vol2"]
    assert np.bincount(index).tolist() == [8, 8, 8]
    for i in range(len(store)):  # every patch carries the intensity signature of its source
        assert abs(float(np.median(store.patches[i])) - (40 + 60 * index[i])) < 15
    assert not (tmp_path / "p.zarr.parts").exists() and not (tmp_path / "p.zarr.partial").exists()


def test_patchify_bad_pairs_exit_2_with_one_line(tmp_path):
    images, labels = write_pairs(tmp_path, n=2)
    (labels / "orphan.tif").write_bytes(b"")
    result = runner.invoke(app, ["patchify", "--images", str(images), "--labels", str(labels),
                                 "-o", str(tmp_path / "p.zarr"), "--quiet"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "names do not pair up (labels without images: orphan.tif)" in lines[0]
    assert not (tmp_path / "p.zarr").exists()
    result = runner.invoke(app, ["patchify", "--images", str(images), "-o", str(tmp_path / "q")])
    assert result.exit_code == 2 and result.stderr.startswith("error: --labels: is missing")


@pytest.mark.slow
def test_a_failed_many_pair_patchify_resumes_without_recutting(tmp_path, monkeypatch):
    import volseg.data.patchify_many as many

    images, labels = write_pairs(tmp_path, n=3)
    good = (labels / "vol2.tif").read_bytes()
    tifffile.imwrite(labels / "vol2.tif", np.zeros((8, 8, 8), np.uint8))  # wrong shape
    cut = []
    real = many.patchify
    monkeypatch.setattr(many, "patchify", lambda image, **kw: cut.append(image.name) or real(image, **kw))

    def run(patch):
        cut.clear()
        return runner.invoke(app, ["patchify", "--images", str(images), "--labels", str(labels),
                                   "-o", str(tmp_path / "p.zarr"), "--patch", patch, "--quiet"])

    result = run("12")
    assert result.exit_code == 2 and "vol2.tif" in result.stderr
    assert not (tmp_path / "p.zarr").exists()
    result = run("16")  # other settings: the pairs cut at --patch 12 are cut again
    assert result.exit_code == 2 and cut == ["vol0.tif", "vol1.tif", "vol2.tif"]
    (labels / "vol2.tif").write_bytes(good)
    result = run("16")
    assert result.exit_code == 0, result.output
    assert cut == ["vol2.tif"]  # vol0 and vol1 were cut by the run before
    assert np.bincount(patch_sources(PatchStore.open(tmp_path / "p.zarr"))[0]).tolist() == [8, 8, 8]
    assert not (tmp_path / "p.zarr.parts").exists()
