"""Cut many image/label pairs into one patch store with provenance, or into one store per pair.

Each pair is cut by :func:`volseg.data.patchify.patchify` with the same options (random mode:
``samples`` patches per pair, pair k seeded with ``seed + k``) into
``<out>.parts/<k>_<name>.zarr`` (``<out>.partial/<name>.zarr`` with ``per_volume``), each
completed store leaving a ``.json`` marker of its settings; a rerun of the same command after a
kill skips the pairs already cut (and resumes the one that was being cut), other settings cut
again. The parts are then copied, one task per pair, into
``<out>.partial`` and renamed onto ``out``. The store holds, besides the usual arrays,

* ``sources`` (N,) int32: the pair each patch came from (its index in the list below);
* attribute ``volseg.sources``: ``[{"name", "image", "label", "shape", "patches"}, ...]``;
* ``volseg.source``: ``"<k> volumes"`` and ``volseg.source_shape``: the first pair's shape.

``origins`` stay relative to each patch's own volume. With ``per_volume``, ``out`` is a folder
of ``<name>.zarr`` stores (plain single-volume stores), renamed into place when all are cut.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from volseg.data.patchify import patchify
from volseg.data.patchstore import PatchStore, create_store, is_patch_store
from volseg.data.sources import Pair
from volseg.errors import VolsegError
from volseg.io.atomic import check_output, remove_path, replace_dir
from volseg.io.completion import check_complete
from volseg.io.locks import output_lock
from volseg.io.outputs import guard_output
from volseg.parallel import Execution


@dataclass(frozen=True)
class _Copy:
    part: str
    out: str
    lo: int


def _copy_part(task: _Copy) -> int:
    """Copy one part store's arrays into rows ``[lo, lo + n)`` of the merged store."""
    import zarr

    src = PatchStore.open(task.part)
    dst = zarr.open_group(task.out, mode="r+")
    n = len(src)
    for i in range(n):  # one chunk per patch: rows of different parts never share a chunk
        dst["patches"][task.lo + i] = np.asarray(src.patches[i]).astype(dst["patches"].dtype)
        if src.labels is not None:
            dst["labels"][task.lo + i] = src.labels[i]
        if src.targets is not None:
            dst["targets"][task.lo + i] = src.targets[i]
    return n


def _cut(pair: Pair, target: Path, k: int, *, seed: int, **options) -> Path:
    """Cut one pair into ``target``, unless an earlier run of the same settings did (marker
    ``<target>.json`` written once the store is complete)."""
    marker = target.with_name(target.name + ".json")
    wanted = json.dumps({"image": str(Path(pair.image).resolve()),
                         "label": None if pair.label is None else str(Path(pair.label).resolve()),
                         "seed": seed + k, **{key: str(v) for key, v in sorted(options.items())
                                              if key not in ("execution", "command")}},
                        sort_keys=True)
    if is_patch_store(target) and marker.is_file() and marker.read_text() == wanted:
        return target
    marker.unlink(missing_ok=True)
    options = {**options, "execution": dataclasses.replace(options["execution"], overwrite=True)}
    patchify(pair.image, out=target, labels=pair.label, seed=seed + k, **options)
    marker.write_text(wanted)
    return target


def _refuse_part(execution: Execution) -> None:
    if execution.part is not None:
        raise VolsegError("--part", "applies to one VOLUME; with many pairs use --per-volume and "
                          "one job per list file")


def patchify_pairs(pairs: list[Pair], *, out: str | os.PathLike, per_volume: bool = False,
                   patch, stride=None, samples: int | None = None,
                   foreground_fraction: float | None = None, seed: int = 0, pad: bool = False,
                   execution: Execution | None = None, command: str | None = None) -> Path:
    """Cut every pair with the same options into one patch store (or one per pair).

    Parameters
    ----------
    pairs : list of Pair
        From :func:`volseg.data.sources.gather_pairs`.
    out : str or os.PathLike
        The merged patch store, or with ``per_volume`` the folder of per-pair stores.
    per_volume : bool
        One store per pair (``<out>/<name>.zarr``) instead of one merged store.
    patch, stride, samples, foreground_fraction, seed, pad
        As :func:`volseg.data.patchify.patchify` (``samples`` per pair, pair k uses
        ``seed + k``).
    execution : volseg.parallel.Execution, optional
        Scheduler, workers, ``overwrite`` (replace an existing ``out``) and ``quiet``; None:
        the defaults, without a progress bar. A ``part`` is refused.
    command : str, optional
        The producing command line, recorded in the store(s).

    Returns
    -------
    pathlib.Path
        ``out``.
    """
    execution = execution if execution is not None else Execution.parse(quiet=True)
    overwrite = execution.overwrite
    _refuse_part(execution)
    if not pairs:
        raise VolsegError("--images", "no image/label pairs given")
    inputs = [p for pair in pairs for p in (pair.image, pair.label)]
    out = guard_output(out, inputs=inputs, kind="patches", overwrite=overwrite)
    check_complete(*inputs)  # unfinished outputs (killed, one --part): their gaps would read as 0
    out = Path(out)
    check_output(out, overwrite=overwrite)
    with output_lock(out):  # one writer of `out` and its work folders; checked again under the lock
        guard_output(out, inputs=inputs, kind="patches", overwrite=overwrite)
        check_output(out, overwrite=overwrite)
        return _cut_all(pairs, out, per_volume=per_volume, seed=seed, options=dict(
            patch=patch, stride=stride, samples=samples, foreground_fraction=foreground_fraction, pad=pad,
            execution=execution, command=command))


def _cut_all(pairs: list[Pair], out: Path, *, per_volume: bool, seed: int, options: dict) -> Path:
    """:func:`patchify_pairs` under the output's lock."""
    execution, command = options["execution"], options["command"]
    if per_volume:
        work = out.with_name(out.name + ".partial")
        work.mkdir(parents=True, exist_ok=True)
        for k, pair in enumerate(pairs):
            _cut(pair, work / f"{pair.name}.zarr", k, seed=seed, **options)
        for marker in work.glob("*.zarr.json"):
            marker.unlink()
        replace_dir(work, out)
        return out
    parts_dir = out.with_name(out.name + ".parts")
    parts_dir.mkdir(parents=True, exist_ok=True)
    parts = [_cut(pair, parts_dir / f"{k:05d}_{pair.name}.zarr", k, seed=seed, **options)
             for k, pair in enumerate(pairs)]
    work = out.with_name(out.name + ".partial")
    remove_path(work)
    _merge(pairs, parts, work, command=command, execution=execution)
    replace_dir(work, out)
    remove_path(parts_dir)
    return out


def _merge(pairs: list[Pair], parts: list[Path], work: Path, *, command, execution) -> None:
    stores = [PatchStore.open(p) for p in parts]
    first = stores[0]
    for pair, store in zip(pairs, stores):
        for name in ("labels", "targets"):
            if (getattr(store, name) is None) != (getattr(first, name) is None):
                raise VolsegError(pair.image, f"has {'no ' if getattr(store, name) is None else ''}"
                                  f"{name} unlike {pairs[0].image}; every pair needs the same")
    counts = [len(s) for s in stores]
    n = int(sum(counts))
    dtype = np.result_type(*[s.patches.dtype for s in stores])
    records = [{"name": pair.name, "image": str(pair.image),
                "label": None if pair.label is None else str(pair.label),
                "shape": list(s.attrs["source_shape"]), "patches": c}
               for pair, s, c in zip(pairs, stores, counts)]
    attrs = {key: first.attrs.get(key) for key in ("patch", "stride", "mode", "spacing")}
    attrs.update({"kind": "patches", "source": f"{len(pairs)} volumes",
                  "source_shape": list(first.attrs["source_shape"]), "sources": records,
                  "command": command or "volseg.data.patchify_many.patchify_pairs"})
    fg = [s.attrs.get("foreground_patches") for s in stores]
    if all(f is not None for f in fg) and n:
        attrs.update(foreground_patches=int(sum(fg)), foreground_fraction_actual=sum(fg) / n)
    origins = np.concatenate([np.asarray(s.origins[:]) for s in stores]) if n else None
    group = create_store(work, n=n, channels=first.channels, patch=first.patch, dtype=dtype,
                         attrs=attrs, labels=first.labels is not None,
                         targets=first.targets is not None, origins=origins)
    group.create_array("sources", shape=(n,), chunks=(max(n, 1),), dtype="int32", fill_value=0)
    if n:
        group["sources"][:] = np.repeat(np.arange(len(stores), dtype=np.int32), counts)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(int)
    with execution.executor() as executor:
        executor.map(_copy_part, [_Copy(str(p), str(work), int(lo)) for p, lo in zip(parts, starts)],
                     description="merge")


def patchify_many_cli(volume, *, images, labels, list_file, out, per_volume: bool, execution: Execution,
                      **options) -> dict:
    """What ``volseg patchify --images DIR --labels DIR`` / ``--list FILE`` does: gather the
    pairs, cut them, and return the summary figures (``--json``)."""
    import shlex

    from volseg.data.patchstore import store_summary
    from volseg.data.sources import gather_pairs

    if volume is not None:
        raise VolsegError(volume, "give either VOLUME or --images/--labels or --list, not both")
    _refuse_part(execution)
    pairs = gather_pairs(images=images, labels=labels, list_file=list_file)
    words = ["volseg", "patchify", "-o", str(out)] + (
        ["--list", str(list_file)] if list_file is not None
        else ["--images", str(images), "--labels", str(labels)])
    for key in ("patch", "stride", "samples", "foreground_fraction", "seed"):
        if options.get(key) is not None:
            words += [f"--{key.replace('_', '-')}", str(options[key])]
    if per_volume:
        words.append("--per-volume")
    out = patchify_pairs(pairs, out=out, per_volume=per_volume, command=shlex.join(words),
                         execution=execution, **options)
    if per_volume:
        stores = [store_summary(out / f"{p.name}.zarr") for p in pairs]
        return {"output": str(out), "volumes": len(pairs),
                "patches": int(sum(s["patches"] for s in stores)), "stores": stores}
    summary = store_summary(out)
    summary["volumes"] = len(pairs)
    summary["sources"] = PatchStore.open(out).attrs.get("sources")
    return summary


__all__ = ["patchify_pairs", "patchify_many_cli"]
