"""Options shared by the commands that read volumes by URL: ``--level``, ``--storage-options``,
``--cache`` and ``--cache-size`` (see :mod:`volseg.io.remote`). Imports stay light (typer only)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

LevelOpt = Annotated[Optional[int], typer.Option(
    "--level", min=0, help="Pyramid level of an OME-Zarr input (0 = full resolution), with its spacing.")]
StorageOpt = Annotated[Optional[str], typer.Option(
    "--storage-options", metavar="JSON",
    help='fsspec options for URL inputs/outputs, e.g. \'{"endpoint_url": "http://minio:9000"}\' or \'{"anon": true}\'.')]
CacheOpt = Annotated[Optional[str], typer.Option(
    "--cache", metavar="DIR", help="On-disk cache of fetched remote chunks (default: $VOLSEG_CACHE, else none): a new or empty "
    "folder, which volseg marks as its own, or one volseg made before.")]
CacheSizeOpt = Annotated[Optional[str], typer.Option(
    "--cache-size", metavar="SIZE", help="Bound of the --cache folder, e.g. 20GiB (default 20GiB).")]


def remote_setup(storage_options: str | None, cache: str | None, cache_size: str | None, *,
                 inputs=(), outputs=()) -> None:
    """Apply the remote options for this process and the workers it starts, before any work.

    The cache folder (``--cache`` or ``$VOLSEG_CACHE``) is checked against ``inputs`` (the run
    directory included) and ``outputs`` and made a volseg cache (see
    :func:`volseg.io.remote.configure`).
    """
    from volseg.io.outputs import input_paths
    from volseg.io.remote import configure

    configure(storage_options=storage_options, cache=cache, cache_size=cache_size,
              inputs=list(input_paths(inputs)), outputs=list(input_paths(outputs)))


def at_level(volume: str | None, level: int | None) -> str | None:
    """``volume`` or the path/URL of its pyramid ``level`` (checked to exist)."""
    if volume is None or level is None:
        return volume
    from volseg.io.levels import resolve_level

    return resolve_level(volume, level)
