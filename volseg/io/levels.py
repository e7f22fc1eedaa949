"""Pyramid levels of OME-Zarr images: ``--level N`` for local paths and URLs alike.

A level is addressed as the dataset's own path inside the image group (``scroll.zarr/1``,
``https://.../scroll.zarr/2``): :func:`resolve_level` checks the level exists and returns that
path, and :func:`dataset_context` lets the reader of such an array take its spacing, unit and
axes from the parent group's ``multiscales`` metadata (NGFF 0.4 and 0.5).
"""

from __future__ import annotations

import os

from volseg.errors import VolsegError


def _multiscales(attrs) -> list | None:
    ome = attrs.get("ome")
    if isinstance(ome, dict) and ome.get("multiscales"):
        return ome["multiscales"]
    return attrs.get("multiscales") or None


def _join(path, name):
    from volseg.io.remote import is_url, join

    return join(path, name) if is_url(path) else os.path.join(os.fspath(path), name)


def parse_level(level) -> int | None:
    """``--level``: None or a non-negative int."""
    if level is None:
        return None
    try:
        value = int(level)
    except (TypeError, ValueError):
        raise VolsegError("--level", f"{level!r} is not a level number; use 0, 1, 2, ...") from None
    if value < 0:
        raise VolsegError("--level", f"must be 0 or more, got {value}")
    return value


def resolve_level(path, level) -> str:
    """The path (or URL) of pyramid level ``level`` of the OME-Zarr image at ``path``.

    ``level`` None returns ``path`` unchanged. Level 0 of a volume that is not a pyramid is the
    volume itself.

    Raises
    ------
    VolsegError
        The level does not exist (the message names ``path`` and the available levels).
    """
    import zarr

    from volseg.io.remote import is_url, open_node

    level = parse_level(level)
    if level is None:
        return path
    if not is_url(path) and not os.path.isdir(path):
        if level == 0:
            return path
        raise VolsegError(path, f"has no level {level}: only OME-Zarr pyramids have levels (available: 0)")
    node = open_node(path)
    multiscales = _multiscales(node.attrs.asdict()) if isinstance(node, zarr.Group) else None
    if not multiscales:
        if level == 0:
            return path
        raise VolsegError(path, f"has no level {level}: it is not an OME-Zarr pyramid (available: 0)")
    datasets = multiscales[0].get("datasets") or []
    if level >= len(datasets):
        raise VolsegError(path, f"has no level {level}; available levels: 0..{len(datasets) - 1}")
    return _join(path, datasets[level]["path"])


def dataset_context(path):
    """For an array that is a dataset of an OME-Zarr group: (multiscales entry, dataset entry,
    number of levels, level index); else None. Reads only the parent's metadata."""
    from volseg.io.remote import is_url, open_node, parent

    if is_url(path):
        head, name = parent(path)
    else:
        full = os.path.abspath(os.fspath(path))
        head, name = os.path.dirname(full), os.path.basename(full)
    if not head or not name:
        return None
    if not is_url(path) and not any(os.path.exists(os.path.join(head, f)) for f in ("zarr.json", ".zattrs")):
        return None
    try:
        import zarr

        node = open_node(head)
        if not isinstance(node, zarr.Group):
            return None
        multiscales = _multiscales(node.attrs.asdict())
    except Exception:
        return None
    for ms in multiscales or []:
        for k, ds in enumerate(ms.get("datasets") or []):
            if str(ds.get("path")).strip("/") == name:
                return ms, ds, len(ms["datasets"]), k
    return None
