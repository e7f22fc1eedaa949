"""The patch store: a Zarr group of equally sized 3D patches cut from one source volume.

Layout (see ``docs/ARCHITECTURE.md``), axis order (N, C, z, y, x), sizes in voxels:

* ``patches``  (N, C, D, H, W), the source dtype (patchify) or float16/float32 (predict);
  one chunk per patch, so tasks that write different patch indices never share a chunk;
* ``origins``  (N, 3) int64, the (z, y, x) corner of each patch in the source volume;
* ``labels``   optional (N, 1, D, H, W) uint8 (0 background, 1 foreground, 2 ignore);
* ``targets``  optional (N, 1, D, H, W) float32 (translation targets);
* attribute ``volseg``: ``kind``, ``source``, ``source_shape``, ``spacing``, ``patch``, ``stride``,
  ``mode``, ``command``, ``version`` and any extra settings of the producer.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from volseg.errors import VolsegError

KINDS = ("patches", "predictions")
MODES = ("grid", "random")
REQUIRED_ATTRS = ("kind", "source", "source_shape", "patch", "mode")


def volseg_version() -> str:
    """The installed volseg version ('unknown' when running from an uninstalled tree)."""
    try:
        from importlib.metadata import version

        return version("volseg")
    except Exception:  # not installed
        return "unknown"


def create_store(path: str | os.PathLike, *, n: int, channels: int, patch: Sequence[int],
                 dtype, attrs: dict[str, Any], labels: bool = False, targets: bool = False,
                 origins: np.ndarray | None = None, origins_chunk: int | None = None):
    """Create an empty patch store at ``path`` (an existing folder is replaced) and return the group.

    Parameters
    ----------
    path : str or os.PathLike
        The store folder to create.
    n, channels : int
        Number of patches N and channels C.
    patch : sequence of int
        (D, H, W) in voxels.
    dtype
        dtype of ``patches``.
    attrs : dict
        The ``volseg`` attribute (must hold at least ``kind``, ``source``, ``source_shape``,
        ``patch``, ``mode``); ``version`` is filled in when missing.
    labels, targets : bool
        Also create ``labels`` (uint8) / ``targets`` (float32) arrays of shape (N, 1, D, H, W).
    origins : numpy.ndarray, optional
        (N, 3) origins to write now (grid mode). Otherwise writers fill them per patch range.
    origins_chunk : int, optional
        Rows per chunk of ``origins``; writers of disjoint patch ranges must align their ranges
        to it (default: all rows in one chunk, written once at creation).
    """
    import zarr

    missing = [k for k in REQUIRED_ATTRS if k not in attrs]
    if missing:
        raise VolsegError(path, f"patch store attributes lack {missing}")
    d, h, w = (int(p) for p in patch)
    group = zarr.open_group(str(path), mode="w")
    n = int(n)
    group.create_array("patches", shape=(n, int(channels), d, h, w), chunks=(1, int(channels), d, h, w),
                       dtype=np.dtype(dtype), fill_value=0)
    rows = max(1, int(origins_chunk or n or 1))
    org = group.create_array("origins", shape=(n, 3), chunks=(rows, 3), dtype="int64", fill_value=0)
    if labels:
        group.create_array("labels", shape=(n, 1, d, h, w), chunks=(1, 1, d, h, w), dtype="uint8", fill_value=0)
    if targets:
        group.create_array("targets", shape=(n, 1, d, h, w), chunks=(1, 1, d, h, w), dtype="float32",
                           fill_value=0)
    if origins is not None and n:
        org[:] = np.asarray(origins, dtype=np.int64).reshape(n, 3)
    meta = {"version": volseg_version(), "stride": None, "spacing": [1.0, 1.0, 1.0], **attrs}
    group.attrs["volseg"] = _plain(meta)
    return group


def _plain(value):
    """Attributes as plain JSON data (tuples -> lists, numpy scalars -> Python)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


class PatchStore:
    """A validated, read-only view of a patch store.

    Attributes
    ----------
    path : pathlib.Path
    attrs : dict
        The ``volseg`` attribute.
    patches, origins, labels, targets : volseg.io.checked.CheckedZarr
        The arrays, read through :class:`~volseg.io.checked.CheckedZarr` so that a damaged chunk
        is an error naming the array and the chunk key (``labels``/``targets`` may be None).
    """

    def __init__(self, path: Path, group):
        from volseg.io.checked import checked

        self.path = path
        self.group = group
        self.attrs = dict(group.attrs.get("volseg", {}))
        self.patches = checked(group["patches"], path)
        self.origins = checked(group["origins"], path)
        self.labels = checked(group["labels"], path) if "labels" in group else None
        self.targets = checked(group["targets"], path) if "targets" in group else None

    @classmethod
    def open(cls, path: str | os.PathLike, *, mode: str = "r") -> "PatchStore":
        """Open and validate the patch store at ``path``.

        Raises
        ------
        VolsegError
            ``path`` is missing, not a Zarr group, lacks ``patches``/``origins`` or the ``volseg``
            attribute, or its arrays disagree in N or patch size.
        """
        import zarr

        path = Path(path)
        if not path.exists():
            raise VolsegError(path, "does not exist; create it with `volseg patchify`")
        if not is_patch_store(path):
            raise VolsegError(path, "is not a patch store (a Zarr group with `patches` and `origins`); "
                              "create one with `volseg patchify`")
        try:
            group = zarr.open_group(str(path), mode=mode)
            store = cls(path, group)
        except VolsegError:
            raise
        except Exception as exc:
            raise VolsegError(path, f"is not a readable patch store ({type(exc).__name__}: {exc})") from None
        store._validate()
        return store

    def _validate(self) -> None:
        p = self.patches
        if p.ndim != 5:
            raise VolsegError(self.path, f"`patches` has shape {p.shape}; expected (N, C, D, H, W)")
        n = p.shape[0]
        if self.origins.shape != (n, 3):
            raise VolsegError(self.path, f"`origins` has shape {self.origins.shape}; expected ({n}, 3)")
        for name, arr in (("labels", self.labels), ("targets", self.targets)):
            if arr is not None and tuple(arr.shape) != (n, 1) + tuple(p.shape[2:]):
                raise VolsegError(self.path, f"`{name}` has shape {arr.shape}; expected "
                                  f"{(n, 1) + tuple(p.shape[2:])}")
        missing = [k for k in REQUIRED_ATTRS if k not in self.attrs]
        if missing:
            raise VolsegError(self.path, f"lacks the volseg attributes {missing}; recreate it with "
                              "`volseg patchify --overwrite`")

    def __len__(self) -> int:
        return int(self.patches.shape[0])

    @property
    def patch(self) -> tuple[int, int, int]:
        """(D, H, W) in voxels."""
        return tuple(int(s) for s in self.patches.shape[2:])  # type: ignore[return-value]

    @property
    def channels(self) -> int:
        return int(self.patches.shape[1])

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(s) for s in self.attrs.get("spacing") or (1.0, 1.0, 1.0))  # type: ignore

    def read(self, index: int) -> dict[str, np.ndarray]:
        """Patch ``index`` as numpy arrays: ``image`` (C, D, H, W), ``origin`` (3,) and, when stored,
        ``label`` (1, D, H, W) uint8 and ``target`` (1, D, H, W) float32."""
        index = int(index)
        out = {"image": np.asarray(self.patches[index]), "origin": np.asarray(self.origins[index])}
        if self.labels is not None:
            out["label"] = np.asarray(self.labels[index])
        if self.targets is not None:
            out["target"] = np.asarray(self.targets[index])
        return out


def is_patch_store(path: str | os.PathLike) -> bool:
    """True when ``path`` looks like a patch store (a Zarr group holding ``patches`` and ``origins``)."""
    path = Path(path)
    if not path.is_dir():
        return False
    has_group = (path / "zarr.json").exists() or (path / ".zgroup").exists()
    return has_group and (path / "patches").is_dir() and (path / "origins").is_dir()


def open_store(path: str | os.PathLike) -> PatchStore:
    """Shorthand for :meth:`PatchStore.open`."""
    return PatchStore.open(path)


def store_summary(path: str | os.PathLike) -> dict[str, Any]:
    """Figures of a patch store for reports and ``--json``: path, patches, patch, mode, arrays."""
    store = PatchStore.open(path)
    a = store.attrs
    return {"output": str(store.path), "patches": len(store), "channels": store.channels,
            "patch": list(store.patch), "stride": a.get("stride"), "mode": a.get("mode"),
            "source": a.get("source"), "source_shape": a.get("source_shape"),
            "dtype": str(store.patches.dtype), "labels": store.labels is not None,
            "targets": store.targets is not None,
            "foreground_fraction_actual": a.get("foreground_fraction_actual")}
