"""Export a trained UNet run to a deployable file: ONNX, ``torch.export`` (.pt2) or TorchScript.

The exported model is exactly :func:`volseg.models.load_model`'s module: RAW voxel values
(N, C, z, y, x), cast to float32, in; per-voxel probabilities (sigmoid for one class, softmax
over several) out, input normalisation included. Batch and the three spatial axes are dynamic;
each spatial side must be a multiple of ``2**depth`` (the exported graph says so: ONNX shapes
read ``4*z`` etc.). What :mod:`volseg.models.exported` and ``volseg predict`` need travels in the
file as one JSON document ``volseg`` (ONNX ``metadata_props``; ``volseg.json`` extra file of a
.pt2 or TorchScript archive): kind, channels, depth, default patch, output kind, normalisation,
the source checkpoint and its SHA-256.

* ``onnx`` (``.onnx``): the ``torch.export``-based ONNX exporter, opset :data:`OPSET` (read by
  onnxruntime >= 1.14). Needs the ``onnx`` extra (onnx, onnxscript).
* ``pt2`` (``.pt2``): a ``torch.export`` ExportedProgram (``torch.export.load``).
* ``torchscript`` (``.ts``): a traced TorchScript module (``torch.jit.load``). PyTorch
  deprecates TorchScript in favour of ``torch.export``; it is kept for older C++/LibTorch
  deployments.

An nnU-Net v2 model folder is exported by :mod:`volseg.models.nnunet.export` (the CLI picks it
for a folder), through the same :func:`write_checked`.

Diffusion runs are refused: their prediction is a DDIM loop of about ten denoiser calls with
patch blending at every step, which ``volseg predict RUN`` runs; a lone denoiser file would not
be a model ``predict`` (or a user) can apply to a volume.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from volseg.errors import VolsegError

from volseg.models.exported import EXPORT_FORMAT, FORMATS, META_FILE, META_KEY, SUFFIXES  # noqa: F401

OPSET = 18


def parse_format(output: str | os.PathLike, fmt: str | None = None) -> str:
    """The export format: ``fmt`` (``--format``) or the suffix of ``output``."""
    if fmt is not None:
        name = str(fmt).strip().lower()
        name = {"ts": "torchscript", "torch.export": "pt2"}.get(name, name)
        if name not in FORMATS:
            raise VolsegError("--format", f"unknown format {fmt!r}; use onnx, pt2 or torchscript")
        return name
    suffix = Path(output).suffix.lower()
    if suffix not in SUFFIXES:
        raise VolsegError(output, f"cannot tell the format from the suffix {suffix or '(none)'!r}; "
                                  "name it .onnx, .pt2 or .ts, or pass --format")
    return SUFFIXES[suffix]


def sha256_file(path) -> str:
    """The sha256 hex digest of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def export_metadata(payload: dict[str, Any], source: Path, fmt: str) -> dict[str, Any]:
    """The ``volseg`` document stored in an exported file (plain JSON data)."""
    from volseg import __version__

    cfg = payload["model_config"]
    patch = ((payload.get("config") or {}).get("data") or {}).get("patch")
    if patch:
        patch = [int(p) for p in (list(patch) * 3 if len(patch) == 1 else patch)]
    out_ch = int(cfg.get("out_ch", 1))
    return {"format": EXPORT_FORMAT, "version": 1, "export_format": fmt, "kind": "unet",
            "in_channels": int(cfg.get("in_channels", 1)), "out_channels": out_ch,
            "depth": int(cfg.get("depth", 3)), "patch": patch or None,
            "output": "probabilities (sigmoid)" if out_ch == 1 else "probabilities (softmax)",
            "input": "raw voxel values as float32, (N, C, z, y, x); normalisation inside",
            "norm_mean": cfg.get("norm_mean"), "norm_std": cfg.get("norm_std"),
            "source": str(source), "source_sha256": sha256_file(source),
            "step": payload.get("step"), "volseg_version": __version__,
            "opset": OPSET if fmt == "onnx" else None}


def check_output(output: str | os.PathLike, run: Path, fmt: str | None, overwrite: bool) -> Path:
    """The checked output file (a ``file://`` URL as its local path): not empty, not the
    working directory, not in the run, its suffix the format's, and an existing file replaced
    only when it carries volseg's export mark and ``overwrite`` is given."""
    from volseg.io.outputs import guard_output
    from volseg.models.exported import export_mark

    from volseg.io.identity import local_path

    text = local_path(os.fspath(output))
    run_dir = run if run.is_dir() else run.parent
    resolved = Path(text).resolve()
    if text.strip() and (resolved == run.resolve() or run_dir.resolve() in resolved.parents):
        raise VolsegError(text, f"lies inside the run {run_dir} being exported; write it next "
                                "to the run (e.g. -o model.onnx)")
    output = Path(guard_output(text, inputs=[run], kind="file", overwrite=overwrite))
    name = parse_format(output, fmt)
    if output.suffix.lower() != FORMATS[name]:
        raise VolsegError(output, f"a {name} model must be named *{FORMATS[name]} (volseg predict tells "
                                  f"the format by the suffix); use -o {output.with_suffix(FORMATS[name]).name}")
    if output.is_dir():
        raise VolsegError(output, "is a directory; give a file name such as model.onnx")
    if os.path.lexists(output) and export_mark(resolved) is None:
        raise VolsegError(output, "exists and is not a model volseg exported (it has no volseg metadata); "
                                  "volseg will not replace it, --overwrite included: choose another -o")
    if os.path.lexists(output) and not overwrite:
        raise VolsegError(output, "exists; pass --overwrite to replace it")
    return resolved


@contextlib.contextmanager
def _quiet_exporters():
    """Silence the exporters' deprecation warnings and info logging (not errors)."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo",
                                               "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _example(meta: dict[str, Any], sides: tuple[int, int, int], batch: int) -> torch.Tensor:
    factor = 2 ** meta["depth"]
    gen = torch.Generator().manual_seed(0)
    mean = torch.as_tensor(meta["norm_mean"] if meta["norm_mean"] is not None else 0.0)
    std = torch.as_tensor(meta["norm_std"] if meta["norm_std"] is not None else 1.0)
    shape = (batch, meta["in_channels"], *(s * factor for s in sides))
    noise = torch.randn(shape, generator=gen)
    return noise * std.reshape(-1, 1, 1, 1) + mean.reshape(-1, 1, 1, 1)


def _exported_program(model: torch.nn.Module, example: torch.Tensor, depth: int):
    from torch.export import Dim

    factor = 2 ** depth
    spatial = {axis: (factor * Dim(name, min=1) if factor > 1 else Dim(name, min=1))
               for axis, name in zip((2, 3, 4), ("z", "y", "x"))}
    return torch.export.export(model, (example,),
                               dynamic_shapes={"x": {0: Dim("batch", min=1), **spatial}})


def _write_onnx(model, example, meta, tmp: Path) -> None:
    try:
        import onnx
        import onnxscript  # noqa: F401  (the torch.export-based ONNX exporter needs it)
    except ImportError:
        raise VolsegError(tmp.with_name(tmp.name.split(".tmp-")[0] + tmp.suffix),
                          "writing ONNX needs onnx and onnxscript: pip install 'volseg[onnx]'") from None
    program = _exported_program(model, example, meta["depth"])
    onnx_program = torch.onnx.export(program, (example,), input_names=["x"],
                                     output_names=["probabilities"], opset_version=OPSET,
                                     dynamo=True, verbose=False)
    proto = onnx_program.model_proto
    onnx.helper.set_model_props(proto, {META_KEY: json.dumps(meta)})
    onnx.checker.check_model(proto)
    onnx.save(proto, str(tmp))


def _write_pt2(model, example, meta, tmp: Path) -> None:
    program = _exported_program(model, example, meta["depth"])
    torch.export.save(program, str(tmp), extra_files={META_FILE: json.dumps(meta)})


def _write_torchscript(model, example, meta, tmp: Path) -> None:
    with torch.no_grad():
        traced = torch.jit.trace(model, example)
    torch.jit.save(traced, str(tmp), _extra_files={META_FILE: json.dumps(meta)})


_WRITERS = {"onnx": _write_onnx, "pt2": _write_pt2, "torchscript": _write_torchscript}


def export_model(run: str | os.PathLike, output: str | os.PathLike, *, fmt: str | None = None,
                 overwrite: bool = False, check: bool = True) -> dict[str, Any]:
    """Export the UNet of a run (``best.pt`` if present, else ``model.pt``) to ``output``.

    Parameters
    ----------
    run : path
        Run directory or a run checkpoint (``model.pt``, ``best.pt``).
    output : path
        The file to write (``.onnx``, ``.pt2``, ``.ts``; a ``file://`` URL is its local path;
        a symlink is written through to its target). Written to a temporary sibling, loaded
        back and checked, and only then renamed over the target, so an existing file is never
        half-replaced nor replaced by a broken one.
    fmt : {"onnx", "pt2", "torchscript"}, optional
        ``--format``; default: from the suffix of ``output``.
    overwrite : bool
        Replace an existing ``output``: only a file ``volseg export`` wrote (its ``volseg``
        metadata, :func:`volseg.models.exported.export_mark`); any other file is refused.
    check : bool
        Load the written file back and compare it with the torch model on an input of another
        shape than the export example (``max_abs_diff`` in the result).

    Returns
    -------
    dict
        ``{"output", "format", "bytes", "seconds", "metadata", "max_abs_diff"}``.

    Examples
    --------
    >>> export_model("run", "model.onnx")["format"]  # a trained run  # doctest: +SKIP
    'onnx'
    """
    import time

    from volseg.io.identity import local_path
    from volseg.models import load_model, load_run, model_file

    t0 = time.perf_counter()
    run = Path(local_path(os.fspath(run)))
    source = model_file(run)
    target = check_output(output, run, fmt, overwrite)
    name = parse_format(target, fmt)
    payload = load_run(source)
    kind = str(payload["model_config"].get("type", "unet")).lower()
    if kind != "unet":
        raise VolsegError(run, "is a diffusion run; export supports UNet runs only (diffusion "
                               "sampling is a loop of denoiser calls with blending at every step: "
                               "run it with `volseg predict RUN`)")
    meta = export_metadata(payload, source, name)
    model = load_model(source, device="cpu")
    result = write_checked(model, meta, target, name, output, _example, check=check)
    result["seconds"] = round(time.perf_counter() - t0, 3)
    return result


def write_checked(model: torch.nn.Module, meta: dict[str, Any], target: Path, name: str,
                  output: str | os.PathLike, example, *, check: bool = True) -> dict[str, Any]:
    """Write ``model`` as ``name`` to a temporary sibling of ``target``, load it back, compare it
    with ``model`` on an input of another shape (``max_abs_diff``) and only then rename it over
    ``target``; ``example(meta, sides, batch)`` makes the raw inputs (sides in units of ``2**depth``).

    Returns ``{"output", "format", "metadata", "max_abs_diff", "bytes"}``.
    """
    from volseg.io.identity import local_path

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.stem}.tmp-{os.getpid()}{target.suffix}")
    result = {"output": str(Path(local_path(os.fspath(output)))), "format": name, "metadata": meta,
              "max_abs_diff": None}
    try:
        with _quiet_exporters():
            _WRITERS[name](model, example(meta, (2, 3, 4), batch=2), meta, tmp)
        result["bytes"] = tmp.stat().st_size
        if check:  # the new file is loaded back and compared before it replaces anything
            from volseg.models.exported import load_exported

            probe = example(meta, (3, 2, 5), batch=1)
            with torch.no_grad():
                expected = model(probe)
                got = load_exported(tmp)(probe)
            result["max_abs_diff"] = float((got - expected).abs().max())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return result
