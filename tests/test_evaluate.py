"""`volseg.metrics.evaluate`: streamed results equal the whole-volume references; inputs checked."""

import dask.array as da
import numpy as np
import pytest
from skimage.measure import label
from skimage.metrics import variation_of_information as skimage_voi

from volseg.errors import VolsegError
from volseg.metrics import (betti_numbers, dice, evaluate, surface_dice, tiled_topology, voi_score,
                            write_preview)
from volseg.metrics.evaluate import SEGMENTATION_METRICS, parse_metrics
from volseg.metrics.preview import Preview
from volseg.metrics.topology import topology_f1
from volseg.parallel import Execution

SEG = ",".join(SEGMENTATION_METRICS)


@pytest.fixture(scope="module")
def case():
    rng = np.random.default_rng(0)
    z, y, x = np.mgrid[:28, :26, :30]
    r2 = (z - 14) ** 2 + (y - 13) ** 2 + (x - 15) ** 2
    truth = ((r2 < 10 ** 2) & (r2 > 5 ** 2)).astype(np.uint8)   # a shell: b = (1, 0, 1)
    truth[:, :2] = 2                                              # ignore band
    prob = np.roll(truth == 1, 1, axis=0) * 0.8 + rng.random(truth.shape) * 0.3
    return prob.astype(np.float32), truth


def _reference(prob, truth, threshold=0.5, tolerance=2.0):
    g = truth == 1
    p = (prob > threshold) & (truth != 2)
    gl, pl = label(g, connectivity=3), label(p, connectivity=3)
    u = g | p
    h_pg, h_gp = skimage_voi(pl[u], gl[u])                    # H(P|G), H(G|P)
    voi = h_pg + h_gp
    bp, bg = betti_numbers(p), betti_numbers(g)
    tiled = tiled_topology(p, g)
    topo = tiled.pop("topology")
    sd = surface_dice(p, g, tolerance=tolerance)
    f1s = [topology_f1(m, n, t) for m, n, t in zip(tiled["matched"], tiled["pred"], tiled["truth"])]
    return {"dice": dice(p, g), "surface_dice": sd, "voi": voi, "voi_split": h_pg, "voi_merge": h_gp,
            "betti": {"pred": list(bp), "truth": list(bg)}, "topology": topo, "topology_counts": tiled,
            "topology_f1": f1s,
            "score": 0.30 * topo + 0.35 * sd + 0.35 * voi_score(voi)}


def _assert_close(got, ref):
    assert list(got) == list(ref)
    for key, value in ref.items():
        if key in ("betti", "topology_counts", "topology_f1"):
            assert got[key] == value, key
        else:
            assert got[key] == pytest.approx(value, rel=1e-12, abs=1e-12), key


@pytest.mark.parametrize("block", [(6, 7, 8), 64])
def test_streamed_equals_whole_volume(case, block):
    prob, truth = case
    got = evaluate(prob, truth, block=block, execution=Execution.parse(scheduler="synchronous", quiet=True))
    _assert_close(got, _reference(prob, truth))
    assert got["betti"]["truth"] == [1, 0, 1]                   # the whole volume: one shell
    assert got["topology_counts"]["truth"] == [0, 0, 0]         # 8 tiles cut it into 8 bowls


def test_dask_inputs_and_thread_scheduler(case):
    prob, truth = case
    got = evaluate(da.from_array(prob, chunks=10), da.from_array(truth, chunks=10),
                   metrics="score,dice", threshold=0.7, tolerance=1,
                   execution=Execution.parse(scheduler="threads", workers=2, quiet=True))
    ref = _reference(prob, truth, threshold=0.7, tolerance=1)
    assert list(got) == ["dice", "score"]
    assert got["dice"] == pytest.approx(ref["dice"]) and got["score"] == pytest.approx(ref["score"])


def test_ignore_label_is_background_in_both(case):
    _, truth = case
    pred = truth.copy()
    pred[:, :2] = 1               # predicted foreground where the truth says ignore: not counted
    got = evaluate(pred, truth, metrics="dice,voi", block=9,
                   execution=Execution.parse(scheduler="synchronous", quiet=True))
    assert got == {"dice": 1.0, "voi": 0.0, "voi_split": 0.0, "voi_merge": 0.0}
    # Without an ignore label, 2 is not a valid label value.
    with pytest.raises(VolsegError, match="value 2"):
        evaluate(pred, truth, metrics="dice", ignore_label="none",
                 execution=Execution.parse(scheduler="synchronous", quiet=True))


def test_default_metrics_follow_truth_dtype():
    assert parse_metrics(None, truth_dtype=np.uint8) == SEGMENTATION_METRICS
    assert parse_metrics(None, truth_dtype=np.float32) == ("psnr", "ssim")
    assert parse_metrics("ssim, dice") == ("dice", "ssim")


@pytest.mark.parametrize("call,where", [
    (lambda: evaluate(np.zeros((4, 5, 6)), np.zeros((4, 5, 7), np.uint8)), "differs"),
    (lambda: evaluate(np.zeros((8, 8, 8), np.uint8), np.full((8, 8, 8), 3, np.uint8)), "value 3"),
    (lambda: evaluate(np.zeros((8, 8, 8), np.uint8), np.zeros((8, 8, 8), np.uint8), metrics="dice,iou"), "'iou'"),
    (lambda: evaluate(np.zeros((8, 8, 8), np.uint8), np.zeros((8, 8, 8), np.uint8), ignore_label="x"), "--ignore-label"),
    (lambda: evaluate(np.zeros((8, 8, 8)), np.zeros((8, 8, 8)), metrics="psnr", data_range=-1), "--data-range"),
    (lambda: evaluate(np.zeros((4, 8, 8)), np.zeros((4, 8, 8)), metrics="ssim"), "at least 7"),
])
def test_bad_inputs_raise_volseg_error(call, where):
    with pytest.raises(VolsegError, match=where):
        call()


def test_label_check_names_the_volume(case):
    _, truth = case
    bad = truth.copy()
    bad[3, 3, 3] = 7
    with pytest.raises(VolsegError, match="prediction.*value 7"):
        evaluate(bad, truth, metrics="dice", execution=Execution.parse(scheduler="synchronous", quiet=True))


def test_preview_png(case, tmp_path):
    from PIL import Image

    prob, truth = case
    out = evaluate(prob, truth, metrics="dice", image=prob * 100, preview=Preview(tmp_path / "p.png", "5,6,7"),
                   execution=Execution.parse(scheduler="synchronous", quiet=True))
    assert set(out) == {"dice"}
    img = np.asarray(Image.open(tmp_path / "p.png"))
    assert img.ndim == 3 and img.shape[2] == 3 and img.shape[0] > 100 and img.shape[1] > 300
    write_preview(tmp_path / "q.png", prob, prob)      # intensity layout without an image
    assert (tmp_path / "q.png").stat().st_size > 0
    assert not list(tmp_path.glob(".*tmp*"))
    with pytest.raises(VolsegError, match="--slice"):
        write_preview(tmp_path / "r.png", prob, truth, centre="1,2")


def test_betti_matching_through_evaluate(case):
    from volseg.metrics.betti_matching import betti_matching

    prob, truth = case
    got = evaluate(prob, truth, metrics="betti_matching,score",
                   execution=Execution.parse(scheduler="synchronous", quiet=True))
    assert list(got) == ["betti_matching", "score"]
    g = truth == 1
    p = (prob > 0.5) & (truth != 2)
    expected = betti_matching(p, g)
    bm = got["betti_matching"]
    assert {k: bm[k] for k in expected} == expected
    assert set(bm) == {"matched", "pred", "truth", "f1", "topology", "score"}
    ref = _reference(prob, truth)
    assert bm["score"] == pytest.approx(0.30 * bm["topology"] + 0.35 * ref["surface_dice"]
                                        + 0.35 * voi_score(ref["voi"]))
    assert got["score"] == pytest.approx(ref["score"])            # count-based tiled topology
    same = evaluate(truth, truth, metrics="betti_matching",
                    execution=Execution.parse(scheduler="synchronous", quiet=True))
    assert same["betti_matching"]["topology"] == 1.0 and "score" not in same["betti_matching"]


def test_betti_matching_refuses_volumes_over_320_cubed():
    import dask.array as da

    big = da.zeros((330, 320, 320), dtype=np.uint8, chunks=160)
    with pytest.raises(VolsegError, match="320\\^3.*'topology'"):
        evaluate(big, big, metrics="betti_matching", execution=Execution.parse(quiet=True))
