"""One identity for every input and output (volseg.io.identity) and guard_output through it:
local paths, ``file://`` URLs, symlinks and URLs written differently name one place."""

import os

import pytest
import zarr


@pytest.fixture()
def box(tmp_path, monkeypatch):
    """s.zarr (a group with labels/surface), foreign.zarr, notes/ and lnk -> s.zarr, as the
    working directory."""
    root = zarr.open_group(str(tmp_path / "s.zarr"), mode="w")
    root.create_group("labels").create_array("surface", shape=(4, 4, 4), dtype="u1")
    zarr.open_group(str(tmp_path / "foreign.zarr"), mode="w").create_array("a", shape=(4,), dtype="u1")
    (tmp_path / "notes").mkdir()
    os.symlink("s.zarr", tmp_path / "lnk")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("a, b", [
    ("s3://b/k", "s3://b//k/"), ("s3://b/k", "s3://B/./k"), ("s3://b/k", "s3://b/x/../k"),
    ("http://h/x", "http://h:80/x"), ("https://h/x", "HTTPS://H:443/x/"), ("gs://b/k", "gcs://b/k"),
])
def test_one_identity_for_urls_written_differently(a, b):
    from volseg.io.identity import identity

    assert identity(a) == identity(b)


@pytest.mark.parametrize("a, b", [("http://h:8080/x", "http://h/x"), ("s3://b/k", "s3://c/k"),
                                  ("s3://b/k", "gs://b/k"), ("s3://b/k", "s3://b/kk")])
def test_different_places_keep_different_identities(a, b):
    from volseg.io.identity import identity

    assert identity(a) != identity(b) and not identity(a).contains(identity(b))


def test_local_paths_file_urls_and_links_share_one_identity(box):
    from volseg.errors import VolsegError
    from volseg.io.identity import enclosing_store, identity, local_path, store_root

    here = identity("s.zarr")
    for form in (f"file://{box}/s.zarr", f"file://localhost{box}/s.zarr", "./s.zarr/", "lnk",
                 f"{box}/notes/../s.zarr", "file://s.zarr"):
        assert identity(form) == here, form
    assert identity("s.zarr").contains(identity("s.zarr/labels/surface"))
    assert store_root(identity("s.zarr/labels/surface")) == here
    assert store_root(identity("s3://b/s.zarr/labels/surface")) == identity("s3://b/s.zarr")
    assert enclosing_store("lnk/labels/zarr.json") == box / "s.zarr" and enclosing_store("s.zarr") is None
    assert local_path("s3://b/k") == "s3://b/k" and local_path(None) is None
    with pytest.raises(VolsegError, match="has no path"):
        local_path("file://")


def test_guard_uses_the_identity(box):
    from volseg.errors import VolsegError
    from volseg.io.outputs import guard_output

    cases = [
        (f"file://{box}/s.zarr", ["s.zarr"], "volume", "is the input"),
        ("s.zarr", [f"file://{box}/s.zarr"], "volume", "is the input"),
        ("s.zarr/zarr.json", ["s.zarr/labels/surface"], "json", "lies inside the Zarr store"),
        ("lnk/labels/zarr.json", ["s.zarr/labels/surface"], "json", "lies inside the Zarr store"),
        ("foreign.zarr/zarr.json", [], "json", "lies inside the Zarr store"),
        ("s.zarr/sub.zarr", [], "volume", "lies inside the Zarr store"),
        (f"file://{box}/..", [], "volume", "contains the working directory"),
        ("http://h:80/x.zarr", ["http://h/x.zarr/"], "volume", "is the input"),
        ("s3://b/s.zarr/p.zarr", ["s3://b//s.zarr/labels/surface"], "volume", "lies inside the Zarr store"),
    ]
    for output, inputs, kind, fragment in cases:
        with pytest.raises(VolsegError, match=fragment):
            guard_output(output, inputs=inputs, kind=kind, overwrite=True)
    assert guard_output(f"file://{box}/new.zarr", inputs=["s.zarr"], kind="volume") == box / "new.zarr"
