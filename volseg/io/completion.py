"""Completion of block-wise outputs (stdlib only; URLs go through volseg.io.remote, imported lazily).

predict, stitch and patchify record in the ``volseg`` attributes of their output's root group
``complete`` (false until every block has its marker), ``blocks_total``, ``blocks_unit`` and
``marker_prefix``. :func:`check_complete` refuses an unfinished output as an input (evaluate,
stitch, postprocess); :func:`describe_completion` is what ``volseg info`` shows.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from volseg.errors import VolsegError
from volseg.io.markers import PATCH_PREFIX, BlockMarkers, RemoteMarkers


def _is_url(text: str) -> bool:
    return "://" in text


def attrs(path: str | os.PathLike) -> dict:
    """The ``volseg`` attributes of a Zarr v3 group (``{}`` when none or unreadable)."""
    try:
        with open(Path(path) / "zarr.json") as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return {}
    info = (meta.get("attributes") or {}).get("volseg") if isinstance(meta, dict) else None
    return info if isinstance(info, dict) else {}


def completion(path: str | os.PathLike) -> dict | None:
    """``{"complete": bool, "done": n, "total": m, "unit": str}`` of a block-wise volseg output.

    None when ``path`` is not such an output (a volume from prepare/synth, a foreign Zarr, a
    file): those are complete by construction.
    """
    path = Path(path)
    info = attrs(path)
    if "complete" not in info:
        return None
    total, unit = int(info.get("blocks_total") or 0), str(info.get("blocks_unit") or "blocks")
    if info["complete"]:
        return {"complete": True, "done": total, "total": total, "unit": unit}
    return {"complete": False, "done": count_markers(path, str(info.get("marker_prefix") or "c")),
            "total": total, "unit": unit}


def remote_completion(url: str) -> dict | None:
    """:func:`completion` of an output at a URL (``-o s3://...``): its root ``zarr.json`` and, for
    an unfinished one, a listing of its marker objects. None when it is no block-wise output."""
    from volseg.io.remote import filesystem

    fs, root = filesystem(url.rstrip("/"))
    try:
        meta = json.loads(fs.cat_file(f"{root}/zarr.json"))
    except Exception:  # absent (a Zarr v2 store, a sub-path) or unreadable: not ours to judge
        return None
    info = (meta.get("attributes") or {}).get("volseg") if isinstance(meta, dict) else None
    if not isinstance(info, dict) or "complete" not in info:
        return None
    total, unit = int(info.get("blocks_total") or 0), str(info.get("blocks_unit") or "blocks")
    if info["complete"]:
        return {"complete": True, "done": total, "total": total, "unit": unit}
    prefix = str(info.get("marker_prefix") or "c")
    try:
        done = len(RemoteMarkers(url).done(prefix))
    except Exception:  # an unreadable listing counts as none written
        done = 0
    return {"complete": False, "done": done, "total": total, "unit": unit}


def count_markers(path: str | os.PathLike, prefix: str) -> int:
    """Completion markers of ``path`` (:mod:`volseg.io.markers`): ``volseg_markers/<prefix>...``
    inside, or else ``<path>.done/<lo>`` beside it (a patch store's markers, always prefix ``""``)."""
    inside = BlockMarkers.inside(path)
    if inside.root.is_dir():
        return len(inside.done(prefix))
    return len(BlockMarkers.beside(path).done(PATCH_PREFIX))


def check_complete(*paths: str | os.PathLike | None) -> None:
    """Refuse an unfinished block-wise output as an input (killed, failed or one ``--part`` only).

    Raises
    ------
    VolsegError
        ``error: half.zarr: 412 of 512 chunks written; finish it with the same command``.
    """
    for path in paths:
        if path is None:
            continue
        if _is_url(os.fspath(path)):
            state = remote_completion(os.fspath(path))
        elif os.path.isdir(path):
            state = completion(path)
        else:
            continue
        if state is not None and not state["complete"]:
            raise VolsegError(path, f"{state['done']} of {state['total']} {state['unit']} written; "
                              "finish it with the same command (every --part) before using it")


def describe_completion(path: str | os.PathLike) -> str | None:
    """``complete`` or ``412 of 512 chunks written`` for ``volseg info``; None when not block-wise."""
    state = completion(path)
    if state is None:
        return None
    return "complete" if state["complete"] else f"{state['done']} of {state['total']} {state['unit']} written"


def set_complete(path: str | os.PathLike, **extra) -> None:
    """Record ``complete: true`` (and ``extra``) in the ``volseg`` attributes, atomically."""
    update_attrs(path, {"complete": True, **extra})


def update_attrs(path: str | os.PathLike, values: dict) -> None:
    """Merge ``values`` into the ``volseg`` attributes of the Zarr v3 group at ``path`` (atomic rename)."""
    meta_path = Path(path) / "zarr.json"
    meta = json.loads(meta_path.read_text())
    attrs = meta.setdefault("attributes", {})
    attrs["volseg"] = {**(attrs.get("volseg") or {}), **values}
    tmp = meta_path.with_name(f".zarr.json.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(meta, indent=2))
    os.replace(tmp, meta_path)
