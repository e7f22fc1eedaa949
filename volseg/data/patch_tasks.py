"""Patchify tasks: plan the disjoint patch-index ranges and cut/write one range.

Each task writes patches ``[lo, hi)`` of a patch store (one Zarr chunk per patch; random mode
aligns the ``origins`` chunks to the ranges), so no two tasks write the same chunk, then leaves
a completion marker ``<store>.done/<lo>`` (a sibling folder, outside the Zarr hierarchy; the
scheme of :mod:`volseg.io.markers`) holding how many of its patches contain label 1. A rerun
skips ranges with a marker (resume). Axis order (z, y, x), voxels.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from volseg.data.sampling import ForegroundIndex, direct_array, draw_patch, item_rng, uniform_origin
from volseg.errors import VolsegError
from volseg.io.boxes import read_box
from volseg.io.labelcheck import check_label_patches
from volseg.io.markers import PATCH_PREFIX, BlockMarkers
from volseg.geometry import grid_counts, grid_origins

RANDOM_TASK = 32           # patches per task (and origins rows per chunk) in random mode
BACKGROUND_TRIES = 32      # uniform draws tried per background patch before accepting one with label 1
_READ_BUDGET = 16 * 2**20  # voxels of one grid task's bounding box read


@dataclass(frozen=True)
class PatchJob:
    """One task: write patches ``[lo, hi)`` of the store at ``out``."""

    out: str
    image: str
    labels: str | None
    targets: str | None
    patch: tuple
    lo: int
    hi: int
    origins: np.ndarray | None = None  # grid mode: the rows [lo, hi)
    region: tuple | None = None        # random mode: padded (z, y, x) shape
    seed: int = 0
    foreground: np.ndarray | None = None  # random mode: per-patch "must contain label 1" flags
    index: ForegroundIndex | None = None


def plan_jobs(mode, *, out, volume, labels, targets, patch, stride, full, n, seed, fraction,
              open_volume) -> list[PatchJob]:
    """The tasks of a patchify run (grid: index ranges within grid rows; random: RANDOM_TASK each)."""
    base = dict(out=str(out), image=str(volume), labels=None if labels is None else str(labels),
                targets=None if targets is None else str(targets), patch=tuple(patch))
    if mode == "grid":
        origins = grid_origins(full, patch, stride)
        return [PatchJob(lo=lo, hi=hi, origins=origins[lo:hi], **base) for lo, hi in _grid_ranges(full, patch, stride)]
    index = flags = None
    if fraction is not None:
        lab = open_volume(labels)
        index = ForegroundIndex.build(lab)
        if fraction > 0 and index.total == 0:
            raise VolsegError(labels, "has no foreground (label 1) voxels, so no patch can contain any; "
                              "use --foreground-fraction 0 or other labels")
        n_fg = int(round(fraction * n))
        flags = np.random.default_rng([int(seed) & 0xFFFFFFFF, 7]).permutation(n) < n_fg
    return [PatchJob(lo=lo, hi=min(lo + RANDOM_TASK, n), region=tuple(full), seed=int(seed),
                 foreground=None if flags is None else flags[lo:lo + RANDOM_TASK], index=index, **base)
            for lo in range(0, n, RANDOM_TASK)]


def _grid_ranges(full, patch, stride) -> list[tuple[int, int]]:
    """Contiguous index ranges, each inside one (z, y) row of the grid, whose bounding box stays
    under the read budget."""
    nz, ny, nx = grid_counts(full, patch, stride)
    per_x = max(1, int(_READ_BUDGET // max(1, patch[0] * patch[1] * max(patch[2], stride[2]))))
    ranges = []
    for row in range(nz * ny):
        for x0 in range(0, nx, per_x):
            ranges.append((row * nx + x0, row * nx + min(nx, x0 + per_x)))
    return ranges


def write_job(job: PatchJob) -> int:
    """Cut and write one task's patches; returns how many contain label 1."""
    import zarr

    from volseg.io import open_volume

    image = direct_array(open_volume(job.image))
    labels = None if job.labels is None else direct_array(open_volume(job.labels))
    targets = None if job.targets is None else direct_array(open_volume(job.targets))
    p = np.asarray(job.patch, dtype=np.int64)
    if job.origins is not None:
        origins = np.asarray(job.origins, dtype=np.int64)
        cut = {"patches": _cut(image, origins, p)}
        if labels is not None:
            cut["labels"] = _cut(labels, origins, p)
            check_label_patches(cut["labels"], origins, job.labels)
            cut["labels"] = cut["labels"].astype(np.uint8, copy=False)
    else:
        origins, cut = _draw(job, image, labels)
    if targets is not None:
        cut["targets"] = _cut(targets, origins, p).astype(np.float32)
    group = zarr.open_group(job.out, mode="r+")
    for name, data in cut.items():
        group[name][job.lo:job.hi] = data[:, None]
    if job.origins is None:
        group["origins"][job.lo:job.hi] = origins
    count = 0 if "labels" not in cut else int(
        np.count_nonzero((cut["labels"] == 1).reshape(len(origins), -1).any(axis=1)))
    _mark_done(job.out, job.lo, count)
    return count


def _cut(array, origins: np.ndarray, patch: np.ndarray) -> np.ndarray:
    """Patches (n, D, H, W) at ``origins``, read through one bounding box (zero padded outside)."""
    lo, hi = origins.min(axis=0), origins.max(axis=0) + patch
    box = read_box(array, lo, hi, pad="constant")
    out = np.empty((len(origins),) + tuple(int(s) for s in patch), dtype=box.dtype)
    for k, o in enumerate(origins - lo):
        out[k] = box[o[0]:o[0] + patch[0], o[1]:o[1] + patch[1], o[2]:o[2] + patch[2]]
    return out


def _draw(job: PatchJob, image, labels) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Random mode: draw patches ``[lo, hi)`` (patch k seeded by ``(seed, k)``) and read them."""
    p = np.asarray(job.patch, dtype=np.int64)
    start, stop = (0, 0, 0), job.region
    origins, imgs, labs = [], [], []
    for k in range(job.lo, job.hi):
        rng = item_rng(job.seed, k)
        if job.foreground is not None:
            origin, lab = draw_patch(rng, patch=p, start=start, stop=stop, labels=labels, index=job.index,
                                     foreground=bool(job.foreground[k - job.lo]), tries=BACKGROUND_TRIES)
        else:
            origin = uniform_origin(rng, start, stop, p)
            lab = None if labels is None else read_box(labels, origin, origin + p, pad="constant")
        origins.append(origin)
        imgs.append(read_box(image, origin, origin + p, pad="constant"))
        if lab is not None:
            labs.append(lab)
    cut = {"patches": np.stack(imgs)}
    origins = np.stack(origins).astype(np.int64)
    if labs:
        cut["labels"] = np.stack(labs)
        check_label_patches(cut["labels"], origins, job.labels)
        cut["labels"] = cut["labels"].astype(np.uint8)
    return origins, cut


def marker_dir(store: str | os.PathLike) -> Path:
    """The folder of completion markers of ``store``: ``<store>.done`` next to it
    (:meth:`volseg.io.markers.BlockMarkers.beside`)."""
    return BlockMarkers.beside(store).root


def done_counts(store: str | os.PathLike) -> dict[int, int]:
    """Completed task ranges of a store: {lo: patches with label 1}, from the markers."""
    done = {}
    for (lo,), text in BlockMarkers.beside(store).texts(PATCH_PREFIX).items():
        try:
            done[lo] = int(text or 0)
        except ValueError:
            continue
    return done


def _mark_done(store: str, lo: int, count: int) -> None:
    BlockMarkers.beside(store).mark((lo,), PATCH_PREFIX, text=str(int(count)))
