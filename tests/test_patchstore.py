"""The patch store layout: creation, validation errors naming the path, reading, summaries."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from volseg.data.patchstore import PatchStore, create_store, is_patch_store, store_summary
from volseg.errors import VolsegError

ATTRS = {"kind": "patches", "source": "vol.tif", "source_shape": [10, 20, 30], "patch": [4, 5, 6],
         "mode": "grid", "command": "test"}


def test_create_open_read_roundtrip(tmp_path):
    origins = np.arange(9, dtype=np.int64).reshape(3, 3)
    g = create_store(tmp_path / "p.zarr", n=3, channels=2, patch=(4, 5, 6), dtype="uint16", attrs=ATTRS,
                     labels=True, targets=True, origins=origins)
    g["patches"][1] = np.full((2, 4, 5, 6), 7, np.uint16)
    g["labels"][1] = 1
    store = PatchStore.open(tmp_path / "p.zarr")
    assert len(store) == 3 and store.patch == (4, 5, 6) and store.channels == 2
    assert store.patches.chunks == (1, 2, 4, 5, 6)
    assert store.attrs["version"] and store.attrs["stride"] is None and store.spacing == (1.0, 1.0, 1.0)
    item = store.read(1)
    assert item["image"].shape == (2, 4, 5, 6) and (item["image"] == 7).all()
    assert item["label"].dtype == np.uint8 and item["target"].dtype == np.float32
    assert np.array_equal(item["origin"], [3, 4, 5])
    s = store_summary(tmp_path / "p.zarr")
    assert s["patches"] == 3 and s["labels"] and s["targets"] and s["dtype"] == "uint16"


def test_open_errors_name_the_path(tmp_path):
    with pytest.raises(VolsegError) as err:
        PatchStore.open(tmp_path / "missing.zarr")
    assert err.value.path == str(tmp_path / "missing.zarr")
    zarr.open_group(str(tmp_path / "g.zarr"), mode="w").create_array("x", shape=(2,), dtype="u1")
    assert not is_patch_store(tmp_path / "g.zarr")
    with pytest.raises(VolsegError, match="not a patch store"):
        PatchStore.open(tmp_path / "g.zarr")
    g = create_store(tmp_path / "bad.zarr", n=2, channels=1, patch=(2, 2, 2), dtype="u1", attrs=ATTRS)
    del g["origins"]
    g.create_array("origins", shape=(3, 3), dtype="int64")
    with pytest.raises(VolsegError, match="origins") as err:
        PatchStore.open(tmp_path / "bad.zarr")
    assert err.value.path == str(tmp_path / "bad.zarr")
    g = create_store(tmp_path / "noattr.zarr", n=1, channels=1, patch=(2, 2, 2), dtype="u1", attrs=ATTRS)
    g.attrs["volseg"] = {"kind": "patches"}
    with pytest.raises(VolsegError, match="attributes"):
        PatchStore.open(tmp_path / "noattr.zarr")


def test_create_requires_the_attributes(tmp_path):
    with pytest.raises(VolsegError, match="attributes"):
        create_store(tmp_path / "p.zarr", n=1, channels=1, patch=(2, 2, 2), dtype="u1", attrs={"kind": "patches"})


@pytest.mark.parametrize("name", ["patches", "labels", "targets", "origins"])
def test_a_damaged_chunk_names_the_array_and_the_chunk_key(tmp_path, name):
    origins = np.arange(9, dtype=np.int64).reshape(3, 3)
    g = create_store(tmp_path / "p.zarr", n=3, channels=1, patch=(4, 5, 6), dtype="float32", attrs=ATTRS,
                     labels=True, targets=True, origins=origins)
    for arr in ("patches", "labels", "targets"):
        g[arr][:] = 1
    key = "c/0/0" if name == "origins" else "c/2/0/0/0/0"
    chunk = tmp_path / "p.zarr" / name / key
    chunk.write_bytes(chunk.read_bytes()[:5])
    store = PatchStore.open(tmp_path / "p.zarr")
    if name != "origins":
        assert store.read(1)["image"].shape == (1, 4, 5, 6)  # the sound patches still read
    with pytest.raises(VolsegError) as err:
        store.read(2)
    assert err.value.path == str(tmp_path / "p.zarr" / name)
    assert err.value.message.startswith(f"has a damaged chunk {key} (") and "restore it" in err.value.message
