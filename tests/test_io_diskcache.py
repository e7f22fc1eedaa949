"""The on-disk read cache: sizes, LRU eviction by size, absent objects, several processes; the
cache owns its folder (marker file) and evicts only its own entries."""

import json
import multiprocessing
import os
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli_checks import tree
from volseg.cli import app
from volseg.errors import VolsegError
from remote_servers import CountingServer, write_published_store
from volseg.io.diskcache import MARKER, DiskCache, claim, parse_size


def test_parse_size():
    assert parse_size("20GiB") == 20 * 2**30 and parse_size("500MB") == 500 * 10**6 and parse_size(1234) == 1234
    for bad in ("lots", "-1GB", "0"):
        with pytest.raises(VolsegError, match="--cache-size"):
            parse_size(bad)


def test_lru_eviction_keeps_the_bound_and_the_recent_entries(tmp_path):
    cache = DiskCache(tmp_path / "c", max_bytes=10_000)
    for i in range(30):
        cache.put(f"k{i}", bytes(1000))
        if i == 2:
            time.sleep(0.01)
        os.utime(cache._path(f"k{i}"), (i, i))  # deterministic ages: k0 oldest
        cache.get("k0") if i < 3 else None
    cache.evict()
    assert cache.size() <= 10_000
    assert cache.get("k29") == bytes(1000) and cache.get("k1") is None
    cache.put("gone", None)
    assert cache.get("gone") is DiskCache.ABSENT and cache.get("never") is None


def _writer(root, n):
    cache = DiskCache(root, max_bytes=50_000)
    for i in range(n):
        cache.put(f"k{i % 20}", bytes([i % 20]) * 2000)
        got = cache.get(f"k{(i * 7) % 20}")
        assert got is None or got == bytes([(i * 7) % 20]) * 2000


def test_several_processes_share_a_cache_without_torn_entries(tmp_path):
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(tmp_path / "c", 200)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    assert (tmp_path / "c" / MARKER).is_file()
    cache = DiskCache(tmp_path / "c", 50_000)
    for k in range(20):
        assert cache.get(f"k{k}") in (None, bytes([k]) * 2000)
    assert not [p for p in (tmp_path / "c").rglob("*.tmp-*")]


@pytest.mark.parametrize("args, where", [
    (("--storage-options", "{nope"), "--storage-options"),
    (("--storage-options", "[1]"), "--storage-options"),
    (("--cache-size", "huge"), "--cache-size"),
    (("--level", "2"), "has no level 2"),
])
def test_bad_remote_options_exit_2(tmp_path, monkeypatch, args, where):
    import numpy as np

    for name in ("VOLSEG_STORAGE_OPTIONS", "VOLSEG_CACHE", "VOLSEG_CACHE_SIZE"):
        monkeypatch.setenv(name, "")
    np.save(tmp_path / "v.npy", np.zeros((4, 4, 4), np.uint8))
    r = CliRunner().invoke(app, ["info", str(tmp_path / "v.npy"), *args])
    assert r.exit_code == 2, r.stderr
    assert r.stderr.startswith("error: ") and where in r.stderr and len(r.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------------------ the cache owns its folder
@pytest.fixture
def _no_remote_env(monkeypatch):
    for name in ("VOLSEG_STORAGE_OPTIONS", "VOLSEG_CACHE", "VOLSEG_CACHE_SIZE"):
        monkeypatch.setenv(name, "")


@pytest.fixture(scope="module")
def http_scroll(tmp_path_factory):
    import numpy as np

    root = tmp_path_factory.mktemp("cache-site")
    data = np.random.default_rng(1).integers(0, 255, (32, 32, 32), dtype=np.uint8)
    write_published_store(root / "scroll.zarr", data, chunks=16, levels=1)
    with CountingServer(root) as server:
        yield server


def _user_folder(tmp_path: Path) -> Path:
    """A folder of the user's: a thesis, photos, a volume and a run, all more than 1 KiB."""
    mine = tmp_path / "mydata"
    (mine / "photos").mkdir(parents=True)
    (mine / "thesis.pdf").write_bytes(os.urandom(5000))
    (mine / "photos" / "a.jpg").write_bytes(os.urandom(3000))
    (mine / "photos" / "b.jpg").write_bytes(os.urandom(3000))
    (mine / "ab").mkdir()  # a sub-folder named like a cache shard, with an entry-shaped name
    (mine / "ab" / ("ab" + "0" * 62)).write_bytes(os.urandom(2000))
    return mine


def _one_error(r, *words):
    assert r.exit_code == 2, (r.exit_code, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.stderr, r.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


def test_a_folder_of_the_users_is_refused_and_left_byte_for_byte(tmp_path, http_scroll, _no_remote_env,
                                                                  monkeypatch):
    mine = _user_folder(tmp_path)
    before = tree(mine)
    http_scroll.reset()
    url = http_scroll.url + "/scroll.zarr"
    r = CliRunner().invoke(app, ["info", url, "--cache", str(mine), "--cache-size", "1KiB"])
    _one_error(r, str(mine), "is not a volseg cache (it holds 3 entries volseg did not write)",
               "give an empty or new folder for --cache")
    assert not http_scroll.httpd.requests, "refused before any fetch"
    monkeypatch.setenv("VOLSEG_CACHE", str(mine))  # the environment variable is checked the same way
    r = CliRunner().invoke(app, ["info", url, "--cache-size", "1KiB"])
    _one_error(r, "is not a volseg cache", "VOLSEG_CACHE")
    assert tree(mine) == before and not (mine / MARKER).exists()


@pytest.mark.parametrize("where", ["input", "inside-input", "output", "contains-output", "run"])
def test_a_cache_that_is_near_an_input_output_or_run_is_refused(tmp_path, where, _no_remote_env):
    import numpy as np

    from volseg.data.synth import write_synth

    scroll = write_synth("scroll", tmp_path / "s.zarr", shape=16, quiet=True)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "model.pt").write_bytes(b"not read: the cache is refused first")
    np.save(tmp_path / "v.npy", np.zeros((4, 4, 4), np.uint8))
    before = tree(tmp_path)
    out = tmp_path / ("outs/out.zarr" if where == "contains-output" else "out.zarr")
    cache, words = {
        "input": (scroll, "is the input"), "inside-input": (scroll / "labels", "lies inside the input"),
        "output": (out, "is the output"), "contains-output": (tmp_path / "outs", "contains the output"),
        "run": (tmp_path / "run", "is the input"),
    }[where]
    if where == "run":
        args = ["predict", str(tmp_path / "run"), str(tmp_path / "v.npy"), "-o", str(out)]
    elif where in ("output", "contains-output"):
        args = ["prepare", str(tmp_path / "v.npy"), "-o", str(out)]
    else:
        args = ["patchify", str(scroll), "-o", str(out), "--patch", "8"]
    r = CliRunner().invoke(app, [*args, "--cache", str(cache), "--cache-size", "1KiB"])
    _one_error(r, str(cache), words, "--cache")
    assert tree(tmp_path) == before and not out.exists()


def test_empty_and_new_folders_are_adopted_marked(tmp_path):
    new, empty = tmp_path / "a" / "new", tmp_path / "empty"
    empty.mkdir()
    for root in (new, empty):
        claim(root)
        assert json.loads((root / MARKER).read_text())["format"] == "volseg-cache"
        claim(root)  # a marked folder is used as it is
    (tmp_path / "file").write_text("x")
    with pytest.raises(VolsegError, match="is a file"):
        claim(tmp_path / "file")


def test_eviction_removes_only_entries_volseg_wrote(tmp_path):
    cache = DiskCache(tmp_path / "c", max_bytes=4000)
    cache.put("first", bytes(1000))
    sub = cache._path("first").parent
    strays = {  # all inside the marked cache, none written by volseg
        tmp_path / "c" / "notes.txt": b"x" * 3000,
        sub / "notes.txt": b"y" * 3000,
        sub / (sub.name + "f" * 62): b"1 an entry-shaped name without the header" * 100,
        tmp_path / "c" / "zz" / ("zz" + "0" * 62): b"VSC11" + bytes(3000),  # not a hex shard
        sub / ("00" + "0" * 62 if sub.name != "00" else "01" + "0" * 62): b"VSC11" + bytes(3000),  # wrong shard
    }
    for path, data in strays.items():
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
        os.utime(path, (1, 1))  # older than every entry: first in line if they counted
    for i in range(20):
        cache.put(f"k{i}", bytes(1000))
    cache.evict()
    assert cache.size() <= 4000 and cache.get("k19") == bytes(1000) and cache.get("first") is None
    for path, data in strays.items():
        assert path.read_bytes() == data, path


def test_old_entries_without_the_header_are_misses(tmp_path):
    cache = DiskCache(tmp_path / "c")
    cache.put("k", b"abc")
    assert cache.get("k") == b"abc"
    cache._path("k").write_bytes(b"1abc")  # the format before the header
    assert cache.get("k") is None


def test_check_place_compares_resolved_paths_and_file_urls(tmp_path):
    from volseg.io.diskcache import check_place

    inp = tmp_path / "s.zarr"
    inp.mkdir()
    (tmp_path / "link").symlink_to(inp, target_is_directory=True)
    with pytest.raises(VolsegError, match="is the input"):
        check_place(tmp_path / "link", inputs=[inp])
    with pytest.raises(VolsegError, match="lies inside the input file://"):
        check_place(inp / "c", inputs=[f"file://{inp}"])
    with pytest.raises(VolsegError, match="contains the output"):
        check_place(tmp_path, outputs=[tmp_path / "sub" / ".." / "o.zarr"])
    check_place(tmp_path / "c", inputs=["s3://bucket/s.zarr", None, str(inp)], outputs=["-"])


@pytest.mark.parametrize("form", ["path", "file-url", "symlink"])
@pytest.mark.parametrize("where", ["input", "store-of-sub-path-input", "other-store", "run", "output"])
def test_cache_goes_through_the_output_guard_in_every_form(tmp_path, where, form, _no_remote_env):
    """--cache is compared like -o: the same place however written, and never inside the Zarr
    store that holds a sub-path input or inside any other store."""
    import numpy as np

    from volseg.data.synth import write_synth

    scroll = write_synth("scroll", tmp_path / "s.zarr", shape=16, quiet=True)
    write_synth("scan", tmp_path / "other.zarr", shape=16, quiet=True)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "model.pt").write_bytes(b"not read: the cache is refused first")
    np.save(tmp_path / "v.npy", np.zeros((4, 4, 4), np.uint8))
    out = tmp_path / "out.zarr"
    target, words, args = {
        "input": (scroll, "is the input", ["info", str(scroll)]),
        "store-of-sub-path-input": (scroll / "cache", "lies inside the Zarr store",
                                    ["evaluate", str(scroll / "labels" / "surface"), str(scroll / "labels" / "surface")]),
        "other-store": (tmp_path / "other.zarr" / "cache", "lies inside the Zarr store", ["info", str(scroll)]),
        "run": (tmp_path / "run", "is the input", ["predict", str(tmp_path / "run"), str(tmp_path / "v.npy"), "-o", str(out)]),
        "output": (out, "is the output", ["patchify", str(scroll), "-o", str(out), "--patch", "8"]),
    }[where]
    if form == "symlink":
        (tmp_path / "links").mkdir()
        link = tmp_path / "links" / "c"
        link.symlink_to(target, target_is_directory=True)
        cache = str(link)
    else:
        cache = f"file://{target}" if form == "file-url" else str(target)
    before = tree(tmp_path)
    r = CliRunner().invoke(app, [*args, "--cache", cache, "--cache-size", "1KiB"])
    _one_error(r, words, "--cache")
    assert tree(tmp_path) == before and not out.exists()
    assert not os.path.lexists(tmp_path / "file:")
