"""patchify: exact grid patches, padding, parts, seeded label-balanced random patches, errors."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import zarr

from volseg.data.patchify import patchify
from volseg.data.patchstore import PatchStore
from volseg.errors import VolsegError
from volseg.geometry import grid_origins
from volseg.parallel import Execution


@pytest.fixture(scope="module")
def tif(tmp_path_factory):
    path = tmp_path_factory.mktemp("pf") / "vol.tif"
    data = np.random.default_rng(0).integers(0, 65535, (23, 30, 27), dtype=np.uint16)
    tifffile.imwrite(path, data)
    return path, data


@pytest.fixture(scope="module")
def sparse(tmp_path_factory):
    """A synthetic scroll whose label 1 is kept only in one corner box: sparse foreground."""
    from volseg.data.synth import synth_scroll
    from volseg.io import write_label_image, write_volume

    ct, lab = synth_scroll((48, 48, 48), seed=1)
    keep = np.zeros_like(lab, dtype=bool)
    keep[8:24, 8:24, 8:24] = True
    lab = np.where((lab == 1) & ~keep, 0, lab).astype(np.uint8)
    path = tmp_path_factory.mktemp("pf") / "sparse.zarr"
    write_volume(path, ct, chunks=16)
    write_label_image(path, "surface", lab, chunks=16)
    return path, ct, lab


def _read(path):
    g = zarr.open_group(str(path), mode="r")
    return {k: g[k][:] for k in g.array_keys()}, dict(g.attrs["volseg"])


def test_grid_patches_from_a_tiff_equal_the_voxels(tif, tmp_path):
    path, data = tif
    out = patchify(path, out=tmp_path / "p.zarr", patch=(8, 12, 10), stride=(5, 9, 10),
                   execution=Execution.parse(workers=2))
    arrays, attrs = _read(out)
    assert np.array_equal(arrays["origins"], grid_origins(data.shape, (8, 12, 10), (5, 9, 10)))
    assert arrays["patches"].dtype == np.uint16 and arrays["patches"].shape[1:] == (1, 8, 12, 10)
    for p, (z, y, x) in zip(arrays["patches"], arrays["origins"]):
        assert np.array_equal(p[0], data[z:z + 8, y:y + 12, x:x + 10])
    assert attrs["kind"] == "patches" and attrs["mode"] == "grid" and attrs["source_shape"] == [23, 30, 27]
    assert attrs["patch"] == [8, 12, 10] and attrs["stride"] == [5, 9, 10]
    assert not list(tmp_path.glob("*.tmp-*"))


def test_pad_zero_fills_beyond_the_volume(tif, tmp_path):
    path, data = tif
    with pytest.raises(VolsegError, match="--pad"):
        patchify(path, out=tmp_path / "p.zarr", patch=(32, 16, 16))
    assert not (tmp_path / "p.zarr").exists()
    out = patchify(path, out=tmp_path / "p.zarr", patch=(32, 16, 16), pad=True)
    arrays, attrs = _read(out)
    assert attrs["padded_shape"] == [32, 30, 27] and attrs["source_shape"] == [23, 30, 27]
    for p, (z, y, x) in zip(arrays["patches"], arrays["origins"]):
        assert z == 0
        assert np.array_equal(p[0, :23], data[:, y:y + 16, x:x + 16])
        assert not p[0, 23:].any()


def test_parts_together_equal_one_run(tif, tmp_path):
    path, _ = tif
    whole, _ = _read(patchify(path, out=tmp_path / "whole.zarr", patch=8, stride=6))
    for i in range(3):
        patchify(path, out=tmp_path / "parts.zarr", patch=8, stride=6,
                 execution=Execution.parse(scheduler="synchronous", part=(i, 3)))
    parts, _ = _read(tmp_path / "parts.zarr")
    assert np.array_equal(whole["patches"], parts["patches"])
    assert np.array_equal(whole["origins"], parts["origins"])
    with pytest.raises(VolsegError, match="same options"):
        patchify(path, out=tmp_path / "parts.zarr", patch=8, stride=4, execution=Execution.parse(part=(0, 3)))
    with pytest.raises(VolsegError, match="--overwrite"):
        patchify(path, out=tmp_path / "parts.zarr", patch=8, stride=6,
                 execution=Execution.parse(part=(0, 3), overwrite=True))


@pytest.mark.parametrize("fraction", [0.0, 0.3, 0.75, 1.0])
def test_label_balanced_sampling_meets_the_fraction(sparse, tmp_path, fraction):
    path, _, lab = sparse
    assert (lab == 1).mean() < 0.02  # sparse
    out = patchify(path, out=tmp_path / "r.zarr", patch=8, samples=100, foreground_fraction=fraction, seed=2)
    arrays, attrs = _read(out)
    has_fg = (arrays["labels"] == 1).reshape(100, -1).any(axis=1)
    assert abs(has_fg.mean() - fraction) <= 0.05
    assert attrs["foreground_fraction_actual"] == pytest.approx(has_fg.mean())
    for lab_patch, (z, y, x) in zip(arrays["labels"], arrays["origins"]):
        assert np.array_equal(lab_patch[0], lab[z:z + 8, y:y + 8, x:x + 8])


def test_random_mode_is_seeded_and_independent_of_the_scheduler(sparse, tmp_path):
    path, ct, _ = sparse
    kw = dict(patch=(8, 16, 8), samples=40, foreground_fraction=0.5)
    a, _ = _read(patchify(path, out=tmp_path / "a.zarr", seed=7, **kw,
                          execution=Execution.parse(scheduler="synchronous")))
    b, _ = _read(patchify(path, out=tmp_path / "b.zarr", seed=7, **kw,
                          execution=Execution.parse(scheduler="processes", workers=2)))
    c, _ = _read(patchify(path, out=tmp_path / "c.zarr", seed=8, **kw))
    assert np.array_equal(a["origins"], b["origins"]) and np.array_equal(a["patches"], b["patches"])
    assert not np.array_equal(a["origins"], c["origins"])
    assert len({tuple(o) for o in a["origins"]}) > 30
    for p, (z, y, x) in zip(a["patches"], a["origins"]):
        assert np.array_equal(p[0], ct[z:z + 8, y:y + 16, x:x + 8])


def test_targets_come_from_a_scan_group(tmp_path):
    from volseg.data.synth import write_synth
    from volseg.io import open_volume

    scan = write_synth("scan", tmp_path / "scan.zarr", shape=24, seed=0, chunks=16)
    store = PatchStore.open(patchify(scan, out=tmp_path / "p.zarr", patch=12))
    assert store.targets is not None and store.labels is None
    clean = open_volume(scan / "target").compute()
    item = store.read(len(store) - 1)
    z, y, x = item["origin"]
    assert item["target"].dtype == np.float32
    assert np.array_equal(item["target"][0], clean[z:z + 12, y:y + 12, x:x + 12])


def test_bad_inputs(tif, sparse, tmp_path):
    path, data = tif
    other = tmp_path / "other.tif"
    tifffile.imwrite(other, np.zeros((23, 30, 26), np.uint8))
    empty = tmp_path / "empty.tif"
    tifffile.imwrite(empty, np.zeros(data.shape, np.uint8))
    out = tmp_path / "p.zarr"
    cases = [
        (dict(labels=other, patch=8), str(other)),
        (dict(labels=empty, patch=8, samples=5, foreground_fraction=0.5), str(empty)),
        (dict(labels=empty, patch=8, samples=5, foreground_fraction=1.5), "--foreground-fraction"),
        (dict(patch=8, samples=5, foreground_fraction=0.5), "--foreground-fraction"),
        (dict(patch=8, foreground_fraction=0.5), "--foreground-fraction"),
        (dict(patch=8, stride=0), "--stride"),
        (dict(patch=8, stride="-1"), "--stride"),
        (dict(patch=8, stride=9), "--stride"),
        (dict(patch=8, samples=4, stride=4), "--stride"),
        (dict(patch=8, samples=0), "--samples"),
        (dict(patch=64), "--patch"),
    ]
    for kwargs, where in cases:
        with pytest.raises(VolsegError) as err:
            patchify(path, out=out, **kwargs)
        assert err.value.path == where, kwargs
        assert not out.exists()
    # empty labels are fine without balancing
    assert PatchStore.open(patchify(path, out=out, labels=empty, patch=8, samples=3)).labels is not None


def test_existing_output_is_kept_on_error(tif, tmp_path):
    path, _ = tif
    out = patchify(path, out=tmp_path / "p.zarr", patch=8)
    before = _read(out)[0]["patches"]
    with pytest.raises(VolsegError, match="exists"):
        patchify(path, out=out, patch=4)
    with pytest.raises(VolsegError):
        patchify(path, out=out, patch=8, stride=0, execution=Execution.parse(overwrite=True))
    assert np.array_equal(_read(out)[0]["patches"], before)
    patchify(path, out=out, patch=4, execution=Execution.parse(overwrite=True))
    assert PatchStore.open(out).patch == (4, 4, 4)


def test_a_rerun_resumes_an_unfinished_store(tif, tmp_path):
    """An interrupted run leaves <out>.partial with markers; the rerun only does the missing ranges."""
    path, data = tif
    out = tmp_path / "p.zarr"
    work = tmp_path / "p.zarr.partial"
    # what a run killed half-way leaves behind: the first half of the ranges, with markers
    patchify(path, out=work, patch=8, stride=6, execution=Execution.parse(part=(0, 2)))
    g = zarr.open_group(str(work), mode="r+")
    g["patches"][0] = 7  # a sentinel: proves finished ranges are not redone
    patchify(path, out=out, patch=8, stride=6)
    assert not work.exists() and not (tmp_path / "p.zarr.partial.done").exists()
    arrays, _ = _read(out)
    assert (arrays["patches"][0] == 7).all()
    for p, (z, y, x) in list(zip(arrays["patches"], arrays["origins"]))[1:]:
        assert np.array_equal(p[0], data[z:z + 8, y:y + 8, x:x + 8])
    # other settings start afresh
    patchify(path, out=tmp_path / "q.zarr.partial", patch=8, stride=4, execution=Execution.parse(part=(0, 2)))
    patchify(path, out=tmp_path / "q.zarr", patch=8, stride=6)
    assert not (_read(tmp_path / "q.zarr")[0]["patches"][0] == 7).all()


def test_a_failed_run_leaves_no_work_store_and_keeps_the_old_output(tif, tmp_path):
    """--overwrite: a failure leaves the old output as it was and no <out>.partial; without it, a
    run that finished no patch range removes its work store too."""
    path, data = tif
    bad = tmp_path / "bad.npy"
    np.save(bad, np.full(data.shape, 7, np.uint8))  # label 7 in every patch: every range fails
    out = tmp_path / "p.zarr"
    patchify(path, out=out, patch=8)
    before = _read(out)[0]["patches"]
    for overwrite in (True, False):
        target = out if overwrite else tmp_path / "new.zarr"
        with pytest.raises(VolsegError, match="the value 7"):
            patchify(path, out=target, labels=bad, patch=8, execution=Execution.parse(overwrite=overwrite))
        left = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(target.name))
        assert left == ([out.name] if overwrite else []), left
    assert np.array_equal(_read(out)[0]["patches"], before)


def test_a_failed_rerun_keeps_the_ranges_it_can_resume(tif, tmp_path):
    path, data = tif
    work = tmp_path / "p.zarr.partial"
    patchify(path, out=work, patch=8, stride=6,
             execution=Execution.parse(part=(0, 2)))  # a killed run's first half
    done = sorted(p.name for p in (tmp_path / "p.zarr.partial.done").iterdir())
    with pytest.raises(VolsegError), pytest.MonkeyPatch.context() as mp:
        mp.setenv("VOLSEG_CONNECT_TIMEOUT", "2s")  # an unreachable cluster, found out quickly
        patchify(path, out=tmp_path / "p.zarr", patch=8, stride=6,
                 execution=Execution.parse(scheduler="tcp://127.0.0.1:1"))
    assert work.is_dir() and sorted(p.name for p in (tmp_path / "p.zarr.partial.done").iterdir()) == done
