"""volseg.io.markers: the one marker scheme, its layouts on disk, and outputs written with the
markers of the previous versions (made here by hand, file by file) that still resume."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tifffile
import zarr

from volseg.inference.settings import predict_options
from volseg.parallel import Execution
from volseg.io.completion import check_complete, completion, count_markers
from volseg.io.markers import (MARKERS, BlockMarkers, Markers, RemoteMarkers, marker_name,
                               parse_marker)
from volseg.errors import VolsegError

OLD_GROUP_JSON = '{"zarr_format": 3, "node_type": "group", "attributes": {}}'  # the bytes written so far


@pytest.mark.parametrize("key,prefix,name", [((0, 1, 2), "c", "c0.1.2"), ((3, 0, 0), "g", "g3.0.0"),
                                             ((5, 6, 7), "s12-", "s12-5.6.7"), ((1, 1, 1), "init-", "init-1.1.1"),
                                             ((64,), "", "64")])
def test_marker_names_parse_back(key, prefix, name):
    assert marker_name(key, prefix) == name
    assert parse_marker(name, prefix) == key


@pytest.mark.parametrize("name,prefix", [("zarr.json", "c"), (".64.tmp-123", ""), ("g0.0.0", "c"),
                                         ("s1-0.0.0", "s12-"), ("c1..2", "c"), ("c", "c"), ("c1.", "c"),
                                         ("c\u00b2", "c")])
def test_other_names_are_no_markers(name, prefix):
    assert parse_marker(name, prefix) is None


def test_inside_layout_bytes(tmp_path):
    out = tmp_path / "out.zarr"
    out.mkdir()
    markers = Markers(out)
    assert type(markers) is Markers and markers.root == out / MARKERS
    markers.create()
    markers.mark((0, 1, 2))
    markers.mark((3, 0, 0), prefix="g")
    assert sorted(os.listdir(out / MARKERS)) == ["c0.1.2", "g3.0.0", "zarr.json"]
    assert (out / MARKERS / "zarr.json").read_text() == OLD_GROUP_JSON
    assert (out / MARKERS / "c0.1.2").read_bytes() == b""
    assert markers.done() == {(0, 1, 2)} and markers.done("g") == {(3, 0, 0)}
    assert markers.todo([(0, 1, 2), (1, 1, 1)]) == [(1, 1, 1)]
    assert count_markers(out, "c") == 1 and count_markers(out, "g") == 1


def test_beside_layout_bytes(tmp_path):
    store = tmp_path / "p.zarr"
    markers = BlockMarkers.beside(store)
    assert markers.root == tmp_path / "p.zarr.done" and not markers.root.exists()
    markers.mark((0,), "", text="3")
    markers.mark((32,), "", text="0")
    assert sorted(os.listdir(tmp_path / "p.zarr.done")) == ["0", "32"]  # no temporary file left
    assert (tmp_path / "p.zarr.done" / "0").read_text() == "3"
    assert markers.texts("") == {(0,): "3", (32,): "0"}
    assert count_markers(store, "c") == 2  # a patch store's markers count whatever prefix is asked


def test_completion_of_an_old_predict_output_made_by_hand(tmp_path):
    """A block-wise output as earlier versions left it: attributes and empty marker files."""
    out = tmp_path / "half.zarr"
    (out / MARKERS).mkdir(parents=True)
    (out / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {
        "volseg": {"complete": False, "blocks_total": 4, "blocks_unit": "chunks", "marker_prefix": "c"}}}))
    (out / MARKERS / "zarr.json").write_text(OLD_GROUP_JSON)
    for name in ("c0.0.0", "c0.0.1", "c0.1.0", ".c0.1.1.tmp-99"):
        (out / MARKERS / name).touch()
    assert completion(out) == {"complete": False, "done": 3, "total": 4, "unit": "chunks"}
    with pytest.raises(VolsegError, match="3 of 4 chunks written"):
        check_complete(out)


@pytest.fixture()
def labelled(tmp_path):
    rng = np.random.default_rng(3)
    image = rng.integers(0, 255, (16, 20, 24), dtype=np.uint8)
    labels = np.zeros(image.shape, np.uint8)
    labels[2:6, 3:9, 10:20] = 1
    tifffile.imwrite(tmp_path / "v.tif", image)
    np.save(tmp_path / "lab.npy", labels)
    return tmp_path / "v.tif", tmp_path / "lab.npy"


def test_a_patch_store_with_old_markers_made_by_hand_resumes(labelled, tmp_path):
    """patchify's previous markers (``<store>.done/<lo>`` holding the label-1 count, written by
    hand here) are read back: the finished ranges are skipped and their counts summed."""
    from volseg.data.patchify import patchify

    image, labels = labelled
    fresh = tmp_path / "fresh.zarr"
    patchify(image, labels=labels, out=fresh, patch=8, stride=4)
    work = tmp_path / "p.zarr.partial"
    patchify(image, labels=labels, out=work, patch=8, stride=4,
             execution=Execution.parse(part=(0, 2), quiet=True))  # a killed run's first half
    done = tmp_path / "p.zarr.partial.done"
    old = {p.name: p.read_text() for p in done.iterdir()}
    assert old and all(name.isdigit() for name in old)
    for p in done.iterdir():
        p.unlink()
    for name, count in old.items():  # exactly what the previous version wrote
        with open(done / name, "w") as f:
            f.write(count)
    (done / f".{next(iter(old))}.tmp-4242").write_text("9")  # a killed writer's temporary file
    zarr.open_group(str(work), mode="r+")["patches"][0] = 7  # proves finished ranges are not redone
    patchify(image, labels=labels, out=tmp_path / "p.zarr", patch=8, stride=4)
    assert not work.exists() and not done.exists()
    got, want = zarr.open_group(str(tmp_path / "p.zarr"), mode="r"), zarr.open_group(str(fresh), mode="r")
    assert (got["patches"][0] == 7).all()
    np.testing.assert_array_equal(got["patches"][1:], want["patches"][1:])
    np.testing.assert_array_equal(got["labels"][:], want["labels"][:])
    for key in ("foreground_patches", "complete"):
        assert got.attrs["volseg"][key] == want.attrs["volseg"][key]


def test_a_predict_output_with_old_markers_made_by_hand_resumes(tmp_path):
    """predict's markers rewritten by hand the old way (the sub-group's zarr.json and empty
    ``c<i>.<j>.<k>`` files): the rerun writes only the chunks without one."""
    import torch

    from volseg.inference import predict
    from volseg.models import build_model

    torch.manual_seed(0)
    cfg = {"type": "unet", "in_channels": 1, "out_ch": 1, "ch": 4, "depth": 2}
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"format": "volseg-run", "version": 1, "model_config": cfg,
                "state_dict": build_model(cfg).state_dict()}, run / "model.pt")
    np.save(tmp_path / "v.npy", np.random.default_rng(0).normal(size=(32, 16, 16)).astype(np.float32))
    out = tmp_path / "out.zarr"
    kw = dict(patch=16, stitch=True, chunks=16, device="cpu", quiet=True)
    first = predict(run, tmp_path / "v.npy", out, *predict_options(**kw))
    ref = zarr.open_array(str(out / "0"), mode="r")[:]
    names = sorted(n for n in os.listdir(out / MARKERS) if n != "zarr.json")
    assert names == ["c0.0.0", "c1.0.0"]
    for name in os.listdir(out / MARKERS):
        (out / MARKERS / name).unlink()
    (out / MARKERS / "zarr.json").write_text(OLD_GROUP_JSON)
    (out / MARKERS / "c1.0.0").touch()
    zarr.open_array(str(out / "0"), mode="r+")[:] = 0
    again = predict(run, tmp_path / "v.npy", out, *predict_options(**kw))
    assert again["chunks_written"] == 1 and again["chunks_done_before"] == first["chunks_total"] - 1
    got = zarr.open_array(str(out / "0"), mode="r")[:]
    np.testing.assert_array_equal(got[:16], ref[:16])
    assert not got[16:].any()  # the chunk with a marker was not redone


def test_remote_markers_are_objects_and_count_like_files(tmp_path):
    from remote_servers import moto_s3

    import s3fs

    from volseg.io.completion import remote_completion

    with moto_s3() as endpoint:
        fs = s3fs.S3FileSystem(key="testing", secret="testing", endpoint_url=endpoint)
        fs.mkdir("markers")  # moto keeps buckets per process: one name per test file
        url = "s3://markers/out.zarr"
        fs.pipe("markers/out.zarr/zarr.json", json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {
            "volseg": {"complete": False, "blocks_total": 3, "blocks_unit": "chunks", "marker_prefix": "c"}}}).encode())
        markers = Markers(url)
        assert isinstance(markers, RemoteMarkers)
        markers.create()
        markers.mark((0, 0, 1))
        fs.pipe(f"markers/out.zarr/{MARKERS}/c0.0.0", b"")  # an old marker object, made by hand
        assert fs.cat(f"markers/out.zarr/{MARKERS}/c0.0.1") == b""
        assert fs.cat(f"markers/out.zarr/{MARKERS}/zarr.json").decode() == OLD_GROUP_JSON
        assert markers.done() == {(0, 0, 0), (0, 0, 1)}
        assert remote_completion(url) == {"complete": False, "done": 2, "total": 3, "unit": "chunks"}
