"""Load an exported model (``volseg export``) and call it like the torch model.

:class:`ExportedModel` wraps an onnxruntime session, a ``torch.export`` program or a TorchScript
module behind one call: a float (N, C, z, y, x) torch tensor of RAW voxel values in, the
probabilities (N, out_channels, z, y, x) as a torch tensor out. It carries ``in_channels``,
``out_channels``, ``depth`` and the file's ``volseg`` metadata, which is what
``volseg predict`` reads from a model. An ONNX file without that metadata (a foreign one) is
read from its graph and run with the options of :mod:`volseg.models.foreign`.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

from volseg.errors import VolsegError

# The exported-file contract, shared with volseg.models.export (which writes what this reads).
FORMATS = {"onnx": ".onnx", "pt2": ".pt2", "torchscript": ".ts"}
SUFFIXES = {suffix: name for name, suffix in FORMATS.items()}
EXPORT_FORMAT = "volseg-export"
META_KEY = "volseg"
META_FILE = "volseg.json"

RUNTIMES = {"onnx": "onnxruntime", "pt2": "torch.export", "torchscript": "torchscript"}


def is_exported(path: str | os.PathLike) -> bool:
    """Whether ``path`` names an exported model file (by its suffix; a directory never does)."""
    path = Path(str(path))
    return path.suffix.lower() in SUFFIXES and not path.is_dir()


def export_mark(path: str | os.PathLike) -> dict[str, Any] | None:
    """The ``volseg`` document of an existing file if ``volseg export`` wrote it, else None.

    Read without loading the model: the ``extra/volseg.json`` member of a .pt2/TorchScript
    archive, or the ONNX ``metadata_props`` (through ``onnx``, without external data). Any file
    that is neither (notes, another tool's model) has no mark.
    """
    import zipfile

    text = None
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                name = next((n for n in archive.namelist() if n.endswith(f"/extra/{META_FILE}")), None)
                text = archive.read(name) if name else None
        else:
            import onnx

            proto = onnx.load(os.fspath(path), load_external_data=False)
            text = next((p.value for p in proto.metadata_props if p.key == META_KEY), None)
    except Exception:  # not an archive or ONNX protobuf, or onnx is not installed: no mark
        return None
    try:
        return _check_meta(Path(path), text)
    except VolsegError:
        return None


def _require_onnxruntime(path: Path):
    try:
        import onnxruntime
    except ImportError:
        raise VolsegError(path, "running an ONNX model needs onnxruntime: pip install "
                                "'volseg[onnx]'") from None
    return onnxruntime


def _check_meta(path: Path, text: str | bytes | None) -> dict[str, Any]:
    try:
        meta = json.loads(text) if text else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        meta = None
    if not isinstance(meta, dict) or meta.get("format") != EXPORT_FORMAT:
        raise VolsegError(path, "has no volseg metadata; export the model with `volseg export "
                                "RUN -o FILE`")
    return meta


def _open(path: Path, device: str, threads: int | None, patch=None):
    """(metadata, callable on torch tensors, runtime name) of an exported file.

    An ONNX file without ``volseg`` metadata is a foreign one: its metadata is read from the
    graph (:func:`volseg.models.foreign.foreign_meta`, probing with ``patch`` if needed).
    """
    import torch

    fmt = SUFFIXES[path.suffix.lower()]
    if not path.is_file():
        raise VolsegError(path, "does not exist; pass a run directory or a file written by "
                                "`volseg export`")
    if fmt == "onnx":
        ort = _require_onnxruntime(path)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        if str(device).startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise VolsegError(path, f"is not a readable ONNX model ({type(exc).__name__}); "
                                    "export it again") from None
        text = session.get_modelmeta().custom_metadata_map.get(META_KEY)
        meta = None if text is None else _check_meta(path, text)  # None: a foreign ONNX file
        inputs = session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 5:
            got = ", ".join(f"{i.name} {list(i.shape)}" for i in inputs) or "none"
            raise VolsegError(path, f"takes the input {got}, not one (N, C, z, y, x) tensor; predict runs "
                              "ONNX models with a single 5D input: export the model with one such input")
        name = inputs[0].name

        def call(x):
            out = session.run(None, {name: x.detach().float().cpu().numpy()})[0]
            return torch.from_numpy(out).to(x.device)

        if meta is None:
            from volseg.models.foreign import foreign_meta

            return foreign_meta(path, session, call, patch), call, RUNTIMES[fmt]
        return meta, call, RUNTIMES[fmt]
    files = {META_FILE: ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TorchScript's deprecation notices
            if fmt == "pt2":
                module = torch.export.load(str(path), extra_files=files).module().to(device)
            else:
                module = torch.jit.load(str(path), map_location=device, _extra_files=files)
    except Exception as exc:  # torch raises several types for a file that is not an archive
        raise VolsegError(path, f"is not a readable {fmt} model ({type(exc).__name__}); "
                                "export it again") from None
    meta = _check_meta(path, files[META_FILE])
    return meta, module, RUNTIMES[fmt]


class ExportedModel:
    """An exported volseg model: ``model(x)`` maps raw (N, C, z, y, x) to probabilities.

    Parameters
    ----------
    path : path
        A ``.onnx``, ``.pt2`` or ``.ts`` file written by ``volseg export``, or any ONNX file with one
        5D (N, C, z, y, x) input (a foreign one, see ``foreign``).
    device : str
        ``cpu`` or ``cuda[:N]`` (onnxruntime uses CUDA when its CUDA provider is installed).
    threads : int, optional
        Intra-op threads of the onnxruntime session.
    foreign : volseg.models.foreign.Foreign, optional
        For an ONNX file without ``volseg`` metadata (:mod:`volseg.models.foreign`): the
        normalization and activation applied around the graph, and the patch of a probe forward.
        Ignored for files from ``volseg export``.
    """

    def __init__(self, path: str | os.PathLike, *, device: str = "cpu",
                 threads: int | None = None, foreign=None):
        from volseg.models.foreign import FOREIGN_FORMAT, Foreign, wrap

        self.path = Path(path)
        self.meta, self._call, self.runtime = _open(self.path, str(device), threads,
                                                    foreign.patch if foreign is not None else None)
        self.foreign = self.meta.get("format") == FOREIGN_FORMAT
        if self.foreign:
            self._call = wrap(self._call, foreign or Foreign(), self.meta["batch"])
        self.in_channels = int(self.meta["in_channels"])
        self.out_channels = None if self.meta["out_channels"] is None else int(self.meta["out_channels"])
        self.depth = int(self.meta["depth"])

    def __call__(self, x):
        return self._call(x)

    def payload(self) -> dict[str, Any]:
        """A run-checkpoint-like view (``model_config`` and ``config.data.patch``) for predict."""
        return exported_payload(self.path, meta=self.meta)


def exported_payload(path: str | os.PathLike, *, meta: dict | None = None) -> dict[str, Any]:
    """What ``predict`` reads of a run (``model_config``, ``config``), from an exported file."""
    if meta is None:
        meta = load_exported(path).meta
    return {"model_config": {"type": meta["kind"], "depth": meta["depth"],
                             "in_channels": meta["in_channels"], "out_ch": meta["out_channels"]},
            "config": {"data": {"patch": meta.get("patch")}}, "export": meta}


def load_exported(path: str | os.PathLike, *, device: str = "cpu",
                  threads: int | None = None, foreign=None) -> ExportedModel:
    """Open an exported model, or a foreign ONNX file (see :class:`ExportedModel`)."""
    return ExportedModel(path, device=device, threads=threads, foreign=foreign)
