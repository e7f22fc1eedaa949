"""Score a prediction volume against the truth, streamed block by block with Dask.

Every block of the volume is one task (:meth:`volseg.parallel.Executor.layers`): it reads the block
with the halo its metrics need, and returns counts, sums, the labels on its faces and its
contingency pairs. Blocks are submitted one group of z-layers at a time and the component
labels are merged across faces as layers arrive (:class:`~volseg.metrics.components.FaceMerger`),
so memory is bounded by the blocks in flight and one layer of faces, never by the volume.

Segmentation metrics see binary masks: an integer volume must hold only 0 (background),
1 (foreground) and the ignore label; a float volume (probabilities) is foreground where it is
``> threshold``. Voxels where the truth has the ignore label are background in both masks
before every metric. Axis order (z, y, x); distances in voxels.

``topology`` counts features per leaderboard tile (2 x 2 x 2, :mod:`volseg.metrics.leaderboard_tiles`):
every block is split at the tile cuts, so one pass gives both the whole volume's Betti numbers
(``betti``) and every tile's (merges across a tile cut count for the first only).
"""

from __future__ import annotations

import functools
import os
from typing import Any, Sequence

import numpy as np

from volseg.errors import VolsegError
from volseg.io.boxes import read_box
from volseg.io.finite import check_array, count_nonfinite, guard, parse_finite, parse_nan_value, warn_replaced
from volseg.metrics import components as cc
from volseg.metrics import intensity, overlap, topology, voi
from volseg.metrics import leaderboard_tiles as tiles
from volseg.metrics.masks import binary_mask
from volseg.parallel import Execution

METRICS = ("dice", "surface_dice", "voi", "betti", "topology", "betti_matching", "score", "psnr", "ssim")
SEGMENTATION_METRICS = ("dice", "surface_dice", "voi", "betti", "topology", "score")  # the default
INTENSITY_METRICS = ("psnr", "ssim")
SCORE_WEIGHTS = {"topology": 0.30, "surface_dice": 0.35, "voi_score": 0.35}
_NEEDS = {"score": {"topology", "surface_dice", "voi"}, "topology": {"betti"}}
_BATCH_BLOCKS = 256
#: Keys each chosen metric adds to the result, in order (the per-dimension report follows its total).
_REPORTED = {"topology": ("topology", "topology_counts", "topology_f1"), "voi": ("voi", "voi_split", "voi_merge")}


def combined_score(topology_score: float, surface_dice: float, voi_bits: float) -> float:
    """Leaderboard-style score 0.30 topology + 0.35 surface Dice + 0.35 / (1 + 0.3 VOI).

    Summed in percent so that a perfect result is exactly 1.0.
    """
    parts = (topology_score, surface_dice, voi.voi_score(voi_bits))
    weights = (SCORE_WEIGHTS["topology"], SCORE_WEIGHTS["surface_dice"], SCORE_WEIGHTS["voi_score"])
    return sum(round(100 * w) * v for w, v in zip(weights, parts)) / 100


def parse_metrics(text: str | Sequence[str] | None, *, truth_dtype=None) -> tuple[str, ...]:
    """``--metrics a,b,c`` -> names in canonical order; default by the truth's dtype.

    Default: the segmentation metrics for an integer/bool truth, ``psnr, ssim`` for a float one.
    """
    if text is None or (isinstance(text, str) and not text.strip()):
        kind = np.dtype(truth_dtype).kind if truth_dtype is not None else "u"
        return INTENSITY_METRICS if kind == "f" else SEGMENTATION_METRICS
    names = [n.strip().lower() for n in (text.split(",") if isinstance(text, str) else text)]
    names = [n for n in names if n]
    unknown = [n for n in names if n not in METRICS]
    if unknown or not names:
        raise VolsegError("--metrics", f"unknown metric {', '.join(map(repr, unknown)) or '(none)'}; "
                          f"choose from {', '.join(METRICS)}")
    return tuple(m for m in METRICS if m in names)


def parse_ignore_label(value) -> int | None:
    """``--ignore-label``: an integer label, or ``none`` to disable."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "off")):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise VolsegError("--ignore-label",
                          f"expected an integer label such as 2 or 'none', got {value!r}") from None


def evaluate(pred, truth, *, metrics: str | Sequence[str] | None = None, threshold: float = 0.5,
             tolerance: float = 2.0, ignore_label: int | str | None = 2,
             data_range: float | None = None, block: int | Sequence[int] | None = None,
             execution: Execution | None = None, image=None, preview=None,
             nan_value: float | None = None) -> dict[str, Any]:
    """Compute the chosen metrics of ``pred`` against ``truth``, streamed block by block.

    Parameters
    ----------
    pred, truth : path or array_like, shape (z, y, x)
        Volumes volseg opens (paths) or numpy/dask arrays of the same shape.
    metrics : str or sequence of str, optional
        Names from ``dice, surface_dice, voi, betti, topology, betti_matching, score, psnr,
        ssim``; default the segmentation metrics but ``betti_matching`` for an integer truth,
        ``psnr, ssim`` for a float truth. ``betti_matching`` is not streamed: it reads both
        volumes whole (at most 320^3 voxels; :mod:`volseg.metrics.betti_matching`).
    threshold : float
        Float (probability) volumes are foreground where ``> threshold``.
    tolerance : float
        Surface Dice tolerance in voxels.
    ignore_label : int or None
        Truth voxels with this label are background in both masks; None disables.
    data_range : float, optional
        PSNR/SSIM data range; default the dtype's range for integer truth, else its max - min.
    block : int or 3 ints, optional
        Block size in voxels (default: the truth's chunks, grown to >= 64 voxels, or 128
        where a chunk is over 256); at least 2 per axis.
    execution : volseg.parallel.Execution, optional
        Scheduler, workers and ``quiet`` (no progress bar); None: the defaults.
    image : path or array_like, optional
        The input image, shown in the preview.
    preview : path or volseg.metrics.preview.Preview, optional
        Write a PNG of orthogonal slices (:func:`volseg.metrics.preview.write_preview`); a
        :class:`~volseg.metrics.preview.Preview` also gives the voxel its planes pass through
        (default: the centre).
    nan_value : float, optional
        Read non-finite (NaN/Inf) voxels of float volumes as this value and warn once with the
        count; default None refuses them (:mod:`volseg.io.finite`).

    Returns
    -------
    dict
        Metric name -> float; ``betti`` -> ``{"pred": [b0, b1, b2], "truth": [b0, b1, b2]}``
        (the whole volume); ``topology`` -> the TopoScore from feature counts summed over the
        leaderboard's 2 x 2 x 2 tiles (:func:`volseg.metrics.leaderboard_tiles.tiled_topology`), followed
        by ``topology_counts`` -> ``{"matched", "pred", "truth": [k=0, 1, 2], "tiles": [2, 2,
        2]}``, the summed counts it comes from (one tile along an axis under 2 voxels), and
        ``topology_f1`` -> ``[F1 of b0, b1, b2]`` (:func:`volseg.metrics.topology.dimension_f1s`,
        None where a dimension is inactive); ``voi`` -> bits, followed by ``voi_split`` (H(P|G),
        false splits) and ``voi_merge`` (H(G|P), false merges), its two terms;
        ``betti_matching`` -> ``{"matched", "pred", "truth": [k=0, 1, 2], "f1": [...],
        "topology": float}`` plus ``"score"`` (the combined score with this topology) when
        ``score`` is also chosen.

    Examples
    --------
    >>> import numpy as np
    >>> truth = np.zeros((8, 8, 8), np.uint8)
    >>> truth[2:6, 2:6, 2:6] = 1
    >>> pred = truth.copy()
    >>> pred[2, 2, 2] = 0
    >>> from volseg.parallel import Execution
    >>> round(evaluate(pred, truth, metrics="dice", execution=Execution.parse(quiet=True))["dice"], 4)
    0.9921
    """
    from volseg.geometry import chunk_counts, parse_size3
    from volseg.io.outputs import guard_reader
    from volseg.metrics.overlap import parse_tolerance
    from volseg.metrics.preview import Preview

    preview = Preview.of(preview)
    guard_reader([pred, truth, image], files={"--preview": (None if preview is None else preview.path, "png")})
    nan_value = parse_nan_value(nan_value)
    threshold = parse_finite(threshold, "--threshold")
    pred, pred_name = _open(pred, "prediction", nan_value)
    truth, truth_name = _open(truth, "truth", nan_value)
    if tuple(pred.shape) != tuple(truth.shape):
        raise VolsegError(truth_name, f"shape {tuple(truth.shape)} differs from the prediction's "
                          f"{tuple(pred.shape)} ({pred_name}); both volumes must cover the same voxels")
    if pred.ndim != 3:
        raise VolsegError(truth_name, f"expected a 3D (z, y, x) volume, got shape {tuple(pred.shape)}")
    if image is not None:
        image, image_name = _open(image, "image", nan_value)
        if tuple(image.shape) != tuple(truth.shape):
            raise VolsegError(image_name, f"shape {tuple(image.shape)} differs from the truth's "
                              f"{tuple(truth.shape)} ({truth_name})")
    chosen = parse_metrics(metrics, truth_dtype=truth.dtype)
    needed = set(chosen)
    for name in chosen:
        needed |= _NEEDS.get(name, set())
    for name in list(needed):
        needed |= _NEEDS.get(name, set())
    settings = {
        "threshold": float(threshold), "tolerance": parse_tolerance(tolerance),
        "ignore": parse_ignore_label(ignore_label), "needed": frozenset(needed),
        "data_range": intensity.parse_data_range(data_range),
        "pred_name": pred_name, "truth_name": truth_name, "cuts": tiles.tile_cuts(truth.shape),
    }
    if needed & set(INTENSITY_METRICS):
        if settings["data_range"] is None:
            lo = hi = None
            if np.dtype(truth.dtype).kind == "f":
                lo, hi = _min_max(truth)
            settings["data_range"] = intensity.default_data_range(truth.dtype, lo, hi)
        if "ssim" in needed:
            intensity.ssim_counted(truth.shape)
    if "betti_matching" in chosen:
        from volseg.metrics.betti_matching import check_size

        check_size(truth.shape)
    if preview is not None:
        from volseg.metrics.preview import parse_slice

        parse_slice(preview.centre, truth.shape)
    if block is None:
        block = _default_block(truth)
    block = tuple(max(2, b) for b in parse_size3(block, name="--block"))
    counts = chunk_counts(truth.shape, block)
    task = functools.partial(_block_task, pred=pred, truth=truth, block=block, settings=settings)
    n_tiles = int(np.prod([len(c) for c in settings["cuts"]]))
    with Execution.of(execution).executor() as executor:
        totals = _run(task, counts, needed, n_tiles, executor=executor)
    values = _finish(totals, needed, settings)
    if "betti_matching" in chosen:
        values["betti_matching"] = _betti_matching(pred, truth, settings, values)
    values = {key: values[key] for name in chosen for key in _REPORTED.get(name, (name,))}
    if preview is not None:
        from volseg.metrics.preview import write_preview

        write_preview(preview.path, pred, truth, image=image, centre=preview.centre,
                      threshold=settings["threshold"], ignore_label=settings["ignore"],
                      segmentation=bool(set(chosen) & set(SEGMENTATION_METRICS)))
    return values


def _betti_matching(pred, truth, settings, values) -> dict[str, Any]:
    """Betti matching of the whole volumes (ignore label applied as for every other metric)."""
    from volseg.metrics.betti_matching import betti_matching

    zero, shape = (0, 0, 0), tuple(truth.shape)
    t_raw, p_raw = _read(truth, zero, shape), _read(pred, zero, shape)
    p, g = _masks(p_raw, t_raw, settings)
    result = betti_matching(p, g)
    if "score" in values:
        result["score"] = combined_score(result["topology"], values["surface_dice"], values["voi"])
    return result


def _default_block(arr) -> tuple[int, int, int]:
    """Whole source chunks, at least 64 voxels per axis (slice-chunked TIFFs: 64 slices);
    chunks over 256 voxels (whole TIFF slices) are cut into 128-voxel blocks."""
    chunks = [int(c[0]) for c in arr.chunks] if getattr(arr, "chunks", None) else [64] * 3
    block = [-(-64 // c) * c if c < 64 else (c if c <= 256 else 128) for c in chunks]
    return block[0], block[1], block[2]


def _open(value, what: str, nan_value: float | None = None):
    """(array, name): a path opened lazily, its float blocks checked for NaN/Inf as they are read."""
    name = os.fspath(value) if isinstance(value, (str, os.PathLike)) else what
    if isinstance(value, (str, os.PathLike)):
        from volseg.io import open_volume

        value = open_volume(value)
    elif not hasattr(value, "shape"):
        value = np.asarray(value)
    if hasattr(value, "dask"):
        if nan_value is not None:
            warn_replaced(name, count_nonfinite(value), nan_value)
        return guard(value, name, nan_value=nan_value), name
    if nan_value is not None:
        warn_replaced(name, count_nonfinite(value), nan_value)
    return check_array(np.asarray(value), name, nan_value=nan_value), name


def _min_max(arr) -> tuple[float, float]:
    if hasattr(arr, "dask"):
        import dask

        lo, hi = dask.compute(arr.min(), arr.max())
        return float(lo), float(hi)
    arr = np.asarray(arr)
    return float(arr.min()), float(arr.max())


def _read(arr, lo, hi) -> np.ndarray:
    return read_box(arr, lo, hi, pad="none")


def _masks(p_raw: np.ndarray, t_raw: np.ndarray, settings: dict) -> tuple[np.ndarray, np.ndarray]:
    """Binary (prediction, truth) masks of one block; the truth's ignore label masks both."""
    g = binary_mask(t_raw, threshold=settings["threshold"], ignore=settings["ignore"],
                    name=settings["truth_name"])
    p = binary_mask(p_raw, threshold=settings["threshold"], ignore=settings["ignore"],
                    name=settings["pred_name"])
    if settings["ignore"] is not None and t_raw.dtype.kind in "iu":
        p &= t_raw != settings["ignore"]
    return p, g


def _block_task(index, *, pred, truth, block, settings) -> dict:
    from volseg.geometry import chunk_bounds, with_halo

    shape = tuple(truth.shape)
    needed = settings["needed"]
    start, stop = chunk_bounds(index, block, shape)
    halo = 1 if needed & {"betti"} else 0
    if "surface_dice" in needed:
        halo = max(halo, overlap.surface_halo(settings["tolerance"]))
    if "ssim" in needed:
        halo = max(halo, intensity.SSIM_PAD)
    lo, hi = with_halo(start, stop, halo, shape)
    p_raw, t_raw = _read(pred, lo, hi), _read(truth, lo, hi)
    inner = tuple(slice(a - r, b - r) for a, b, r in zip(start, stop, lo))
    out: dict[str, Any] = {"index": tuple(index)}
    if "psnr" in needed:
        out["sse"] = intensity.squared_error(p_raw[inner], t_raw[inner])
    if "ssim" in needed:
        out["ssim"] = intensity.ssim_block_sum(p_raw, t_raw, lo, start, stop, shape,
                                               data_range=settings["data_range"])
    if not needed & set(SEGMENTATION_METRICS):
        return out
    p, g = _masks(p_raw, t_raw, settings)
    if "dice" in needed:
        out["dice"] = overlap.dice_counts(p[inner], g[inner])
    if "surface_dice" in needed:
        out["surface"] = overlap.surface_counts(p, g, inner, tolerance=settings["tolerance"])
    cuts = settings["cuts"]
    if needed & {"voi", "betti"}:
        pl, n_p, p_extra = tiles.label_cells(p[inner], start, stop, shape, cuts, connectivity=3)
        gl, n_g, g_extra = tiles.label_cells(g[inner], start, stop, shape, cuts, connectivity=3)
        out["fg"] = ((n_p, cc.block_faces(pl), (), p_extra), (n_g, cc.block_faces(gl), (), g_extra))
        if "voi" in needed:
            out["pairs"] = voi.pair_counts(gl, pl)
    if "betti" in needed:
        out["euler"], out["tile_euler"] = tiles.euler_pair(p, g, lo, start, stop, shape, cuts)
        bg = []
        for mask in (p[inner], g[inner]):
            labels, n, extra = tiles.label_cells(~mask, start, stop, shape, cuts, connectivity=1)
            bg.append((n, cc.block_faces(labels), extra["border"], extra))
        out["bg"] = tuple(bg)
    return out


def _run(task, counts, needed, n_tiles, *, executor) -> dict:
    nz, ny, nx = counts
    layer_size = ny * nx
    merge = bool(needed & {"voi", "betti"})
    per_batch = max(1, _BATCH_BLOCKS // layer_size) if merge else nz
    mergers = {key: [cc.FaceMerger(counts, connectivity=c) for _ in range(2)]
               for key, c in (("fg", 3), ("bg", 1))}
    totals: dict[str, Any] = {"dice": np.zeros(3, np.int64), "surface": np.zeros(4, np.int64),
                              "sse": [0.0, 0], "ssim": [0.0, 0], "euler": np.zeros(2, np.int64),
                              "pairs": [], "tile_euler": np.zeros((n_tiles, 2), np.int64)}
    for iz, layer in executor.layers(task, counts, per_batch=per_batch, description="evaluate"):
        for r in layer:
            for key in ("dice", "surface", "euler"):
                if key in r:
                    totals[key] += np.asarray(r[key], dtype=np.int64)
            for t, p_term, g_term in r.get("tile_euler", ()):
                totals["tile_euler"][t] += (p_term, g_term)
            for key in ("sse", "ssim"):
                if key in r:
                    totals[key][0] += r[key][0]
                    totals[key][1] += r[key][1]
        _merge_layer(iz, layer, mergers, totals)
    if merge:
        totals["fg"] = [m.finish() for m in mergers["fg"]]
    if "betti" in needed:
        totals["bg"] = [m.finish() for m in mergers["bg"]]
        for key in ("fg", "bg"):
            totals[f"{key}_tiles"] = [m.finish_groups(n_tiles) for m in mergers[key]]
    return totals


def _merge_layer(iz: int, layer: list[dict], mergers: dict, totals: dict) -> None:
    """Feed one z-layer's faces to the mergers; rename its VOI pairs to provisional ids."""
    for key, pair_of_mergers in mergers.items():
        if key in layer[0]:
            for side in (0, 1):  # 0: prediction, 1: truth
                pair_of_mergers[side].add_layer(iz, {r["index"][1:]: r[key][side] for r in layer})
    for r in layer:
        if "pairs" in r and len(r["pairs"]):
            pairs = r["pairs"].copy()
            for column, merger in ((0, mergers["fg"][1]), (1, mergers["fg"][0])):
                offset = merger.offset(r["index"])
                pairs[:, column] = np.where(pairs[:, column] > 0, pairs[:, column] + offset, 0)
            totals["pairs"].append(pairs)


def _finish(totals: dict, needed, settings) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if "dice" in needed:
        values["dice"] = overlap.dice_from_counts(*totals["dice"].tolist())
    if "surface_dice" in needed:
        values["surface_dice"] = overlap.surface_dice_from_counts(*totals["surface"].tolist())
    if "voi" in needed:
        (final_p, _, _), (final_g, _, _) = totals["fg"]
        pairs = np.concatenate(totals["pairs"]) if totals["pairs"] else np.zeros((0, 3), np.int64)
        pairs[:, 0], pairs[:, 1] = final_g[pairs[:, 0]], final_p[pairs[:, 1]]
        values["voi_split"], values["voi_merge"] = voi.voi_from_pairs(pairs)
        values["voi"] = float(values["voi_split"] + values["voi_merge"])
    if "betti" in needed:
        betti = []
        for side in (0, 1):
            _, b0, _ = totals["fg"][side]
            _, n_bg, touches = totals["bg"][side]
            cavities = n_bg - int(np.count_nonzero(touches[1:]))
            betti.append(list(topology.betti_from_counts(b0, cavities, int(totals["euler"][side]))))
        values["betti"] = {"pred": betti[0], "truth": betti[1]}
    if "topology" in needed:
        values["topology_counts"], values["topology"] = tiles.streamed_result(
            totals["fg_tiles"], totals["bg_tiles"], totals["tile_euler"], settings["cuts"])
        values["topology_f1"] = topology.dimension_f1s(values["topology_counts"])
    if "score" in needed:
        values["score"] = combined_score(values["topology"], values["surface_dice"], values["voi"])
    if "psnr" in needed:
        values["psnr"] = intensity.psnr_from_sums(*totals["sse"], settings["data_range"])
    if "ssim" in needed:
        total, count = totals["ssim"]
        values["ssim"] = total / count
    return values
