"""Resumable outputs at URLs (``-o s3://bucket/pred.zarr``): object stores have no rename.

The local recipe (build under a temporary name, rename when complete) becomes, on an object
store:

1. **create**: the empty output (array metadata, the ``volseg_markers`` group) is built in a
   local temporary folder and uploaded object by object, the root ``zarr.json`` (which carries
   the settings fingerprint) **last**. An output without its root metadata is an interrupted
   creation: it is never resumed from, never read as a volume, and is created again.
2. **fill in place**: each task writes its whole chunk objects (a PUT is atomic per object), and
   only then its empty marker object ``volseg_markers/<chunk>``.
3. **resume / refuse**: a rerun with the same settings lists the markers and does only the
   chunks without one (a killed task left none); other settings are refused unless
   ``--overwrite``. The output is complete when every chunk has its marker.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path

from volseg.errors import VolsegError
from volseg.io.markers import MARKERS, BlockMarkers, RemoteMarkers, fingerprint
from volseg.io.markers import differences as _differences
from volseg.io.remote import filesystem


def _writable(url: str) -> None:
    if url.lower().startswith(("http://", "https://")):
        raise VolsegError(url, "plain HTTP is read-only; write outputs to s3://, gs:// or a local path")


def _read_root(fs, root: str) -> dict | None:
    try:
        return json.loads(fs.cat_file(f"{root}/zarr.json"))
    except FileNotFoundError:
        return None
    except ValueError:
        return {}


def open_remote_output(url: str, *, settings: dict, create: Callable[[Path, dict], None],
                       overwrite: bool = False, total: int = 0, unit: str = "chunks",
                       prefix: str = "c") -> tuple[str, BlockMarkers, bool]:
    """:func:`volseg.io.resume.open_output` for a URL (see the module docstring)."""
    _writable(url)
    url = url.rstrip("/")
    fs, root = filesystem(url)
    attrs = {"settings": settings, "fingerprint": fingerprint(settings), "complete": False,
             "blocks_total": int(total), "blocks_unit": unit, "marker_prefix": prefix}
    fs.invalidate_cache()
    meta = _read_root(fs, root)
    if meta is not None:
        info = (meta.get("attributes") or {}).get("volseg") or {}
        if info.get("fingerprint") == attrs["fingerprint"]:
            return url, RemoteMarkers(url), True
        if not overwrite:
            if "fingerprint" not in info:
                raise VolsegError(url, "exists and is not a resumable volseg output; pass --overwrite to "
                                  "replace it or choose another -o")
            raise VolsegError(url, f"exists with other settings: {_differences(info.get('settings') or {}, settings)}; "
                              "pass --overwrite to replace it or choose another -o")
        fs.rm(root, recursive=True)
    elif fs.exists(root) and fs.ls(root, detail=False):
        interrupted = fs.exists(f"{root}/{MARKERS}/zarr.json")
        if not (interrupted or overwrite):
            raise VolsegError(url, "exists and is not a volseg output; pass --overwrite to replace it or "
                              "choose another -o")
        fs.rm(root, recursive=True)
    with tempfile.TemporaryDirectory(prefix="volseg-out-") as tmp:
        local = Path(tmp) / "out.zarr"
        create(local, attrs)
        BlockMarkers(local).create()
        files = sorted(p for p in local.rglob("*") if p.is_file())
        top = local / "zarr.json"
        for f in [p for p in files if p != top] + [top]:  # the root metadata last: "created"
            fs.pipe_file(f"{root}/{f.relative_to(local).as_posix()}", f.read_bytes())
    return url, RemoteMarkers(url), False


def finish_remote_output(url: str, *, total: int, prefix: str = "c") -> bool:
    """:func:`volseg.io.resume.finish_output` for a URL: once every block has its marker
    object, rewrite the root ``zarr.json`` with ``volseg.complete: true`` (one PUT, atomic per
    object; parts finishing at once write the same bytes). True when complete."""
    url = url.rstrip("/")
    fs, root = filesystem(url)
    if len(RemoteMarkers(url).done(prefix)) < total:
        return False
    fs.invalidate_cache()
    meta = _read_root(fs, root) or {}
    info = (meta.setdefault("attributes", {})).setdefault("volseg", {})
    if not info.get("complete"):
        info["complete"] = True
        fs.pipe_file(f"{root}/zarr.json", json.dumps(meta, indent=2).encode())
    return True
