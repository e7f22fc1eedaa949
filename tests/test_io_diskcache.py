"""The on-disk read cache: sizes, LRU eviction by size, absent objects, several processes."""

import multiprocessing
import os
import time

import pytest
from typer.testing import CliRunner

from volseg.cli import app
from volseg.errors import VolsegError
from volseg.io.diskcache import DiskCache, parse_size


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
