"""Cut a volume (and its labels / target) into a patch store, in parallel with Dask.

Two modes, axis order (z, y, x), sizes in voxels:

* grid: patches of ``patch`` every ``stride`` voxels (default: the patch, no overlap), the last
  one flush with the border (:func:`volseg.geometry.grid_origins`), in C order;
* random: ``samples`` patches at seeded random positions; with ``foreground_fraction`` F and
  labels, ``round(F * samples)`` patches contain label 1 and the others are drawn to avoid it
  (see :mod:`volseg.data.sampling`). Patch k depends only on ``(seed, k)``, so the result is the
  same for any scheduler, worker count or ``--part`` split.

Work is split into tasks that each write a disjoint, contiguous range of patch indices (one Zarr
chunk per patch; in random mode the ``origins`` chunks are aligned to the task ranges), so
tasks never write the same chunk, and leave a completion marker (see
:mod:`volseg.data.patch_tasks`). Without ``part`` the store is built under the sibling name
``<out>.partial`` and renamed onto ``out`` when complete; a killed run leaves ``<out>.partial``
behind and running the same command again resumes it, skipping finished ranges (other settings
start it afresh). With ``part`` (job arrays) every part writes into the same store:
the first part to find it missing creates it under a temporary name and renames it into place
(an atomic rename, so concurrent parts cannot both create it); the others open it and require
identical settings (recorded in the ``volseg`` attribute as ``settings``); a rerun of a part
skips its finished ranges. Markers of a store written by parts live in ``<out>.done`` until the
part that completes the store removes them.

``pad``: an axis shorter than the patch is padded with zeros at its far end up to the patch size
(see :mod:`volseg.geometry`); without it such a volume is an error.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from volseg.data.patch_tasks import RANDOM_TASK, PatchJob, done_counts, marker_dir, plan_jobs, write_job
from volseg.data.patchstore import PatchStore, create_store, is_patch_store
from volseg.data.sampling import parse_fraction
from volseg.errors import VolsegError
from volseg.geometry import grid_counts, padded_shape, parse_size3, parse_stride, select_part
from volseg.io.atomic import check_output, remove_path, replace_dir, temp_sibling
from volseg.io.locks import output_lock
from volseg.io.completion import update_attrs
from volseg.io.completion import check_complete
from volseg.io.outputs import guard_output, input_stamp
from volseg.parallel import Execution


def _resolve_inputs(volume: Path, labels, targets):
    from volseg.io import find_labels
    from volseg.io.remote import is_url

    if is_url(volume):  # URLs: labels only when given (no folder to look into)
        return labels, targets
    if labels is None and volume.is_dir():
        labels = find_labels(volume)
    if targets is None and volume.is_dir() and (volume / "target").is_dir():
        targets = volume / "target"
    return (None if labels is None else Path(labels)), (None if targets is None else Path(targets))


def _check_shape(path: Path, shape, expected) -> None:
    if tuple(shape) != tuple(expected):
        raise VolsegError(path, f"has shape {'x'.join(map(str, shape))} but the image has "
                          f"{'x'.join(map(str, expected))}; labels/targets must match the image voxel for voxel")


def patchify(volume: str | os.PathLike, *, out: str | os.PathLike, labels=None, targets=None, patch,
             stride=None, samples: int | None = None, foreground_fraction: float | None = None,
             seed: int = 0, pad: bool = False, execution: Execution | None = None,
             command: str | None = None) -> Path:
    """Cut ``volume`` into patches and write a patch store at ``out``.

    Parameters
    ----------
    volume : str or os.PathLike
        Any input :func:`volseg.io.open_volume` reads. For an image group, labels default to its
        first NGFF label image and targets to ``<volume>/target`` when present.
    out : str or os.PathLike
        The patch store to write.
    labels, targets : str or os.PathLike, optional
        Label volume (uint8 0/1/2) and target volume, same shape as the image.
    patch : int, str or (D, H, W)
        Patch size in voxels (``64`` or ``"32x64x64"``).
    stride : int, str or (D, H, W), optional
        Grid mode step, each side in [1, patch] (default: the patch).
    samples : int, optional
        Random mode: number of patches.
    foreground_fraction : float, optional
        Random mode with labels: share of patches that contain label 1, in [0, 1].
    seed : int
        Random mode positions.
    pad : bool
        Allow a patch larger than the volume (zero padding at the far end).
    execution : volseg.parallel.Execution, optional
        Scheduler, workers, ``part`` (only part i of n of the tasks), ``overwrite`` (replace an
        existing store; not with a part) and ``quiet``; None: the defaults, without a progress
        bar.
    command : str, optional
        The producing command line, recorded in the store.

    Returns
    -------
    pathlib.Path
        ``out``.

    Examples
    --------
    >>> from volseg.data.synth import write_synth
    >>> scroll = write_synth("scroll", "scroll.zarr", shape=32, chunks=16)
    >>> store = PatchStore.open(patchify(scroll, out="patches.zarr", patch=16))
    >>> len(store), store.patch
    (8, (16, 16, 16))
    """
    from volseg.io import open_volume, read_meta

    execution = execution if execution is not None else Execution.parse(quiet=True)
    part, overwrite = execution.part, execution.overwrite
    out = guard_output(out, inputs=[volume, labels, targets], kind="patches", overwrite=overwrite)
    from volseg.io.remote import is_url

    volume, out = (volume if is_url(volume) else Path(volume)), Path(out)
    meta = read_meta(volume)
    shape = tuple(int(s) for s in meta.shape)
    patch = parse_size3(patch, name="--patch")
    if any(p > s for p, s in zip(patch, shape)) and not pad:
        raise VolsegError("--patch", f"{'x'.join(map(str, patch))} is larger than the volume {volume} "
                          f"({'x'.join(map(str, shape))}); use a smaller patch or --pad to zero-pad")
    labels, targets = _resolve_inputs(volume, labels, targets)
    guard_output(out, inputs=[volume, labels, targets], kind="patches", overwrite=overwrite)
    check_complete(volume, labels, targets)  # unfinished outputs (killed, one --part): gaps read as 0
    for extra in (labels, targets):
        if extra is not None:
            _check_shape(extra, read_meta(extra).shape, shape)
    full = padded_shape(shape, patch)
    foreground_fraction = parse_fraction(foreground_fraction)
    if samples is None:
        if foreground_fraction is not None:
            raise VolsegError("--foreground-fraction", "applies to random mode only; add --samples N")
        mode = "grid"
        stride = patch if stride is None else parse_stride(stride, patch)
        n = int(np.prod(grid_counts(full, patch, stride)))
    else:
        mode = "random"
        if stride is not None:
            raise VolsegError("--stride", "applies to grid mode only; drop it or drop --samples")
        if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 1:
            raise VolsegError("--samples", f"expected a positive number of patches, got {samples!r}")
        if foreground_fraction is not None and labels is None:
            raise VolsegError("--foreground-fraction", f"needs labels; {volume} has none, pass --labels")
        n = int(samples)
    if part is not None and overwrite:
        raise VolsegError("--overwrite", "cannot be combined with --part (parts share one store); "
                          "remove the store once before launching the parts")

    settings = {"source": _absolute(volume), "labels": _absolute(labels),
                "targets": _absolute(targets), "source_shape": list(shape),
                "patch": list(patch), "stride": None if stride is None else list(stride), "mode": mode,
                "samples": n, "foreground_fraction": foreground_fraction, "seed": int(seed), "pad": bool(pad),
                "source_stamp": input_stamp(volume),
                "labels_stamp": None if labels is None else input_stamp(labels)}
    attrs = {"kind": "patches", "source": str(volume), "source_shape": list(shape), "spacing": list(meta.spacing),
             "patch": list(patch), "stride": settings["stride"], "mode": mode, "padded_shape": list(full),
             "labels": None if labels is None else str(labels), "targets": None if targets is None else str(targets),
             "command": command or "volseg.data.patchify.patchify", "settings": settings}

    jobs = plan_jobs(mode, out=out, volume=volume, labels=labels, targets=targets, patch=patch, stride=stride,
                     full=full, n=n, seed=seed, fraction=foreground_fraction, open_volume=open_volume)
    origins = np.concatenate([j.origins for j in jobs]) if mode == "grid" else None
    attrs.update({"complete": False, "blocks_total": len(jobs), "blocks_unit": "patch ranges",
                  "marker_prefix": ""})
    create = dict(n=n, channels=1, patch=patch, dtype=meta.dtype, labels=labels is not None,
                  targets=targets is not None, origins=origins,
                  origins_chunk=RANDOM_TASK if mode == "random" else None)
    if part is not None:
        _ensure_shared_store(out, attrs, create)
        _run(select_part(jobs, part), out, execution=execution)
        if _finish(out, len(jobs), n, labels is not None):
            remove_path(marker_dir(out))  # every part is done: the store is complete
        return out
    check_output(out, overwrite=overwrite)
    with output_lock(out):  # one writer of `out` (and of its work folder) at a time
        work = out.with_name(out.name + ".partial")
        resumed = _resumable(work, attrs["settings"])
        if not resumed:
            remove_path(work)
            remove_path(marker_dir(work))
            create_store(work, attrs=attrs, **create)
        try:
            _run(jobs, work, execution=execution)
        except Exception:
            # A failed --overwrite run leaves nothing (an interrupted one is resumed by its rerun);
            # otherwise a work store with finished patch ranges is kept for the rerun to resume.
            if overwrite or not (resumed or done_counts(work)):
                remove_path(work)
                remove_path(marker_dir(work))
            raise
        _finish(work, len(jobs), n, labels is not None)
        replace_dir(work, out)
        remove_path(marker_dir(work))
    return out


def _absolute(path) -> str | None:
    """A settings entry for an input: a URL as given, a local path resolved (None: no input)."""
    from volseg.io.remote import is_url

    if path is None:
        return None
    return path if is_url(path) else str(Path(path).resolve())


def _run(jobs: list[PatchJob], store: Path, *, execution) -> None:
    """Run the jobs without a completion marker in ``store``, writing into ``store``."""
    from dataclasses import replace

    done = done_counts(store)
    todo = [replace(j, out=str(store)) for j in jobs if j.lo not in done]
    with execution.executor() as executor:
        executor.map(write_job, todo, description="patchify")


def _resumable(work: Path, settings: dict) -> bool:
    """True when ``work`` is an unfinished store of an earlier run with the same settings."""
    if not is_patch_store(work):
        return False
    try:
        return PatchStore.open(work).attrs.get("settings") == settings
    except VolsegError:
        return False


def _finish(store: Path, n_jobs: int, n: int, labels: bool) -> bool:
    """Once every job has its marker, record how many patches contain label 1; True when complete."""
    done = done_counts(store)
    if len(done) < n_jobs:
        return False
    extra = {}
    if labels:
        with_fg = int(sum(done.values()))
        extra = {"foreground_patches": with_fg, "foreground_fraction_actual": with_fg / n if n else 0.0}
    update_attrs(store, {**extra, "complete": True})
    return True


def _ensure_shared_store(out: Path, attrs: dict, create: dict) -> None:
    """Create the store for ``--part`` runs exactly once (atomic rename), or check the existing one."""
    if not out.exists():
        tmp = temp_sibling(out, "new")
        remove_path(tmp)
        out.parent.mkdir(parents=True, exist_ok=True)
        create_store(tmp, attrs=attrs, **create)
        try:
            os.rename(tmp, out)  # fails when another part created `out` first
        except OSError:
            remove_path(tmp)
    if not is_patch_store(out):
        raise VolsegError(out, "exists but is not a patch store; remove it or choose another -o")
    existing = PatchStore.open(out).attrs.get("settings")
    if existing != attrs["settings"]:
        raise VolsegError(out, "exists with other patchify settings; every --part must use the same "
                          "options (or remove the store and start again)")


__all__ = ["patchify", "RANDOM_TASK"]
