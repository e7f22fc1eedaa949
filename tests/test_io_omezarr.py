"""OME-Zarr writing: NGFF 0.5 metadata, pyramids read by ome-zarr-py, labels, atomicity."""

import json

import dask.array as da
import numpy as np
import pytest
import zarr
from ome_zarr.io import parse_url
from ome_zarr.reader import Label, Multiscales, Reader

from volseg.errors import VolsegError
from volseg.io import (atomic_dir, create_volume, find_labels, open_volume, read_meta, write_label_image,
                       write_volume)
from volseg.parallel import Execution

SHAPE = (37, 53, 29)


def _vol(dtype="uint16", shape=SHAPE):
    return np.random.default_rng(1).integers(0, 200, shape).astype(dtype)


def _tree(path):
    return sorted((p.relative_to(path).as_posix(), p.read_bytes()) for p in path.rglob("*") if p.is_file())


def test_write_volume_zarr_v3_ngff_05_metadata(tmp_path):
    vol = _vol()
    out = write_volume(tmp_path / "a.zarr", vol, chunks=(8, 16, 32), levels=2, spacing=(3, 2, 1), unit="nm")
    meta = json.loads((out / "zarr.json").read_text())
    assert meta["zarr_format"] == 3 and meta["node_type"] == "group"
    ome = meta["attributes"]["ome"]
    assert ome["version"] == "0.5"
    ms = ome["multiscales"][0]
    assert [a["name"] for a in ms["axes"]] == ["z", "y", "x"]
    assert {a["type"] for a in ms["axes"]} == {"space"} and ms["axes"][0]["unit"] == "nanometer"
    scales = [d["coordinateTransformations"][0] for d in ms["datasets"]]
    assert scales == [{"type": "scale", "scale": [3.0, 2.0, 1.0]}, {"type": "scale", "scale": [6.0, 4.0, 2.0]}]
    level0 = zarr.open_array(str(out / "0"), mode="r")
    assert level0.chunks == (8, 16, 29) and level0.metadata.dimension_names == ("z", "y", "x")
    np.testing.assert_array_equal(level0[:], vol)
    assert not list(tmp_path.glob("*.tmp-*"))


def test_three_level_pyramid_read_by_ome_zarr_py(tmp_path):
    vol = _vol("float32")
    out = write_volume(tmp_path / "p.zarr", da.from_array(vol, chunks=(5, 7, 9)), chunks=16, levels=3,
                       spacing=(2, 1, 1))
    nodes = list(Reader(parse_url(str(out)))())
    image = nodes[0]
    assert any(isinstance(s, Multiscales) for s in image.specs)
    shapes = [tuple(d.shape) for d in image.data]
    assert shapes == [(37, 53, 29), (19, 27, 15), (10, 14, 8)]
    np.testing.assert_array_equal(np.asarray(image.data[0]), vol)
    # level 1 = mean of 2x2x2 blocks (odd edges replicated)
    padded = np.pad(vol, [(0, 1), (0, 1), (0, 1)], mode="edge")
    expect = padded.reshape(19, 2, 27, 2, 15, 2).mean(axis=(1, 3, 5))
    np.testing.assert_allclose(np.asarray(image.data[1]), expect, rtol=1e-6)
    scales = [t[0]["scale"] for t in image.metadata["coordinateTransformations"]]
    assert scales == [[2.0, 1.0, 1.0], [4.0, 2.0, 2.0], [8.0, 4.0, 4.0]]


def test_integer_pyramid_rounds_mean_and_keeps_dtype(tmp_path):
    vol = np.zeros((4, 4, 4), np.uint8)
    vol[:2, :2, :2] = [[[1, 2], [2, 2]], [[2, 2], [2, 2]]]  # mean 1.875 -> 2
    out = write_volume(tmp_path / "i.zarr", vol, levels=2)
    level1 = zarr.open_array(str(out / "1"), mode="r")
    assert level1.dtype == np.uint8 and level1[0, 0, 0] == 2 and level1.shape == (2, 2, 2)


def test_labels_registered_nearest_pyramid_and_read_by_ome_zarr_py(tmp_path):
    vol = _vol("uint8")
    image = write_volume(tmp_path / "scroll.zarr", vol, levels=3, spacing=(2, 2, 2))
    labels = np.random.default_rng(2).integers(0, 3, SHAPE).astype(np.int64)
    out = write_label_image(image, "surface", labels)
    assert out == image / "labels" / "surface" and find_labels(image) == out
    meta = read_meta(out)
    assert meta.dtype == np.uint8 and meta.levels == 3 and meta.spacing == (2.0, 2.0, 2.0)
    level2 = zarr.open_array(str(out / "2"), mode="r")[:]
    np.testing.assert_array_equal(level2, labels[::4, ::4, ::4])  # nearest: values stay in {0, 1, 2}
    nodes = list(Reader(parse_url(str(image)))())
    label_nodes = [n for n in nodes if any(isinstance(s, Label) for s in n.specs)]
    assert len(label_nodes) == 1 and len(label_nodes[0].data) == 3
    np.testing.assert_array_equal(np.asarray(label_nodes[0].data[0]), labels)
    with pytest.raises(VolsegError, match="do not fit"):
        write_label_image(image, "bad", labels + 300)
    assert not (image / "labels" / "bad").exists()
    with pytest.raises(VolsegError, match="differs"):
        write_label_image(image, "small", labels[:5])
    assert find_labels(tmp_path) is None


def test_existing_output_is_an_error_and_untouched(tmp_path):
    out = write_volume(tmp_path / "a.zarr", _vol())
    before = _tree(out)
    with pytest.raises(VolsegError, match="exists; pass --overwrite"):
        write_volume(out, _vol() + 1)
    assert _tree(out) == before
    write_volume(out, _vol() + 1, execution=Execution.parse(overwrite=True))
    np.testing.assert_array_equal(open_volume(out).compute(), _vol() + 1)
    assert not list(tmp_path.glob("*.tmp-*")) and not list(tmp_path.glob("*.old-*"))


def _explode(block):
    if block.max() > 150:
        raise VolsegError("input.tif", "cannot be read (broken block)")
    return block


def test_failure_mid_write_leaves_nothing_and_keeps_existing(tmp_path):
    out = write_volume(tmp_path / "a.zarr", _vol())
    before = _tree(out)
    bad = da.from_array(_vol(), chunks=8).map_blocks(_explode, dtype=np.uint16)
    with pytest.raises(VolsegError, match="broken block"):
        write_volume(out, bad, execution=Execution.parse(overwrite=True))
    assert _tree(out) == before
    with pytest.raises(VolsegError, match="broken block"):
        write_volume(tmp_path / "new.zarr", bad)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zarr"]


def test_dtype_conversion_is_checked(tmp_path):
    vol = _vol("float32") / 2
    out = write_volume(tmp_path / "a.zarr", vol, dtype="uint8")
    np.testing.assert_array_equal(open_volume(out).compute(), np.rint(vol).astype(np.uint8))
    with pytest.raises(VolsegError, match="do not fit uint8"):
        write_volume(tmp_path / "b.zarr", vol * 4, dtype="uint8")
    with pytest.raises(VolsegError, match="--dtype"):
        write_volume(tmp_path / "c.zarr", vol, dtype="complex64")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zarr"]


def test_groups_built_inside_atomic_dir(tmp_path):
    degraded, clean = _vol("float32"), _vol("float32") + 1
    with atomic_dir(tmp_path / "scan.zarr") as tmp:
        write_volume(tmp, degraded)
        write_volume(tmp / "target", clean, spacing=(1, 1, 1))
        assert not (tmp_path / "scan.zarr").exists()
    np.testing.assert_array_equal(open_volume(tmp_path / "scan.zarr").compute(), degraded)
    np.testing.assert_array_equal(open_volume(tmp_path / "scan.zarr" / "target").compute(), clean)
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "scan.zarr", overwrite=True) as tmp:
            write_volume(tmp, clean)
            raise RuntimeError("killed")
    np.testing.assert_array_equal(open_volume(tmp_path / "scan.zarr").compute(), degraded)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.zarr"]


def test_create_volume_for_block_writers(tmp_path):
    arr = create_volume(tmp_path / "pred.zarr", shape=SHAPE, dtype="float32", chunks=16,
                        spacing=(2, 1, 1), attrs={"command": "stitch"})
    assert isinstance(arr, zarr.Array) and arr.chunks == (16, 16, 16)
    arr[:16, :16, :16] = 1.0
    meta = read_meta(tmp_path / "pred.zarr")
    assert meta.format == "ome-zarr" and meta.spacing == (2.0, 1.0, 1.0) and meta.dtype == np.float32
    assert zarr.open_group(str(tmp_path / "pred.zarr"), mode="r").attrs["volseg"] == {"command": "stitch"}
    assert open_volume(tmp_path / "pred.zarr")[:16, :16, :16].compute().min() == 1.0
    with pytest.raises(VolsegError, match="exists"):
        create_volume(tmp_path / "pred.zarr", shape=SHAPE, dtype="float32")
    again = create_volume(tmp_path / "pred.zarr", shape=SHAPE, dtype="float32", exist_ok=True, attrs={"done": 1})
    assert again[0, 0, 0] == 1.0  # resumed, not wiped
    with pytest.raises(VolsegError, match="not"):
        create_volume(tmp_path / "pred.zarr", shape=(1, 2, 3), dtype="float32", exist_ok=True)
    fresh = create_volume(tmp_path / "pred.zarr", shape=(4, 4, 4), dtype="uint8", overwrite=True)
    assert fresh.shape == (4, 4, 4) and fresh[0, 0, 0] == 0


@pytest.mark.parametrize("kwargs,word", [
    ({"chunks": 0}, "--chunks"), ({"levels": 0}, "--levels"), ({"spacing": (1, -1, 1)}, "--spacing"),
    ({"unit": "parsnip"}, "--unit"),
])
def test_bad_write_options(kwargs, word, tmp_path):
    with pytest.raises(VolsegError) as exc:
        write_volume(tmp_path / "x.zarr", _vol(), **kwargs)
    assert exc.value.path == word
    assert not list(tmp_path.iterdir())


def test_write_rejects_2d_data(tmp_path):
    with pytest.raises(VolsegError, match="3D"):
        write_volume(tmp_path / "x.zarr", np.zeros((4, 4)))
    assert not list(tmp_path.iterdir())


def test_unwritable_location_is_a_volseg_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(VolsegError, match="cannot be written"):
        write_volume(blocker / "out.zarr", _vol())
    assert blocker.read_text() == "not a folder"
