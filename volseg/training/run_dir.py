"""The run directory: ``model.pt`` (last), ``best.pt`` (best validation), ``config.yml``,
``metrics.jsonl``.

Checkpoints are plain dicts of tensors and plain data written with ``torch.save`` to a
temporary sibling and renamed (never half-written under their final name), and read back with
``torch.load(weights_only=True)`` (:func:`volseg.models.load_run`). RNG states are stored as
tensors and lists, never as numpy objects, so they load weights-only.
"""

from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from volseg.errors import VolsegError
from volseg.models import RUN_FORMAT

MODEL_FILE = "model.pt"
BEST_FILE = "best.pt"
CONFIG_FILE = "config.yml"
METRICS_FILE = "metrics.jsonl"
PROGRESS_FILE = "progress.png"
RUN_FILES = (MODEL_FILE, BEST_FILE, CONFIG_FILE, METRICS_FILE, PROGRESS_FILE)
FORMAT_VERSION = 1


def check_run_dir(path: str | os.PathLike, *, resume: bool, overwrite: bool) -> Path:
    """Validate the output run directory for a new run, ``--resume`` or ``--overwrite``.

    A folder holding run files but no checkpoint (a run stopped before its first one) takes a
    new run without ``--overwrite``: it has nothing to resume.

    Raises
    ------
    VolsegError
        The directory holds a checkpoint but neither flag was given; ``--resume`` without a
        checkpoint; both flags; a file where the directory should be.
    """
    path = Path(path)
    if resume and overwrite:
        raise VolsegError("--resume", "give either --resume or --overwrite, not both")
    if path.exists() and not path.is_dir():
        raise VolsegError(path, "is a file; give a directory for the run (-o RUN_DIR)")
    if resume:
        resume_file(path)
        return path
    if has_checkpoint(path) and not overwrite:
        raise VolsegError(path, "exists; pass --resume to continue its training or --overwrite "
                                "to replace it")
    return path


def has_checkpoint(path: str | os.PathLike) -> bool:
    """True when the run directory holds ``model.pt`` or ``best.pt``."""
    return any((Path(path) / name).is_file() for name in (MODEL_FILE, BEST_FILE))


def resume_file(path: str | os.PathLike) -> Path:
    """The checkpoint ``--resume`` continues from: ``model.pt``, else ``best.pt`` (a run cut
    between the two saves of a step, e.g. by a full disk, has only the best one).

    Raises
    ------
    VolsegError
        Neither file exists.
    """
    path = Path(path)
    for name in (MODEL_FILE, BEST_FILE):
        if (path / name).is_file():
            return path / name
    raise VolsegError(path, "has no checkpoint (model.pt or best.pt) to resume from; drop --resume "
                            "to start a new run")


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """``torch.save`` ``payload`` to ``<path>.tmp-<pid>`` and rename it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(dict(payload, format=RUN_FORMAT, version=FORMAT_VERSION), tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        raise _save_error(exc, path, payload) from None
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _save_error(exc: Exception, path: Path, payload: dict[str, Any]) -> Exception:
    """A failed ``torch.save`` (full disk: torch's "inline_container" / "file write failed"
    RuntimeError) as a one-line error naming the file and the bytes needed."""
    from volseg.io.outputs import os_error, space_note

    if isinstance(exc, OSError):
        return os_error(exc, path, need=_nbytes(payload))
    text = str(exc)
    if "inline_container" in text or "file write failed" in text or "PytorchStreamWriter" in text:
        return VolsegError(path, "cannot be written (torch.save failed writing the checkpoint; the disk "
                           f"may be full{space_note(path, _nbytes(payload))}); free some space or choose another -o")
    return exc


def _nbytes(value: Any) -> int:
    """Bytes of the tensors in a checkpoint payload (what torch.save must write)."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(_nbytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_nbytes(v) for v in value)
    return 0


def write_config(run_dir: Path, cfg: dict[str, Any]) -> None:
    """Write the resolved config as ``config.yml`` (atomically; a full disk is a one-line
    error naming the file)."""
    from volseg.io.outputs import os_error
    from volseg.training.config import to_yaml

    run_dir.mkdir(parents=True, exist_ok=True)
    target = run_dir / CONFIG_FILE
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    text = to_yaml(cfg)
    try:
        tmp.write_text(text)
        os.replace(tmp, target)
    except OSError as exc:
        raise os_error(exc, target, need=len(text.encode())) from None
    finally:
        tmp.unlink(missing_ok=True)


def append_metrics(run_dir: Path, record: dict[str, Any]) -> None:
    """Append one JSON object line to ``metrics.jsonl`` (a non-finite number is written as null,
    so every line stays valid JSON)."""
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
    with open(run_dir / METRICS_FILE, "a") as fh:
        fh.write(json.dumps(clean, allow_nan=False) + "\n")


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of ``metrics.jsonl`` (empty when absent)."""
    file = Path(run_dir) / METRICS_FILE
    if not file.is_file():
        return []
    return [json.loads(line) for line in file.read_text().splitlines() if line.strip()]


def truncate_metrics(run_dir: Path, step: int) -> None:
    """Drop records after ``step`` (a resumed run rewrites what followed its checkpoint)."""
    records = [r for r in read_metrics(run_dir) if int(r.get("step", 0)) <= step]
    tmp = run_dir / f"{METRICS_FILE}.tmp-{os.getpid()}"
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    os.replace(tmp, run_dir / METRICS_FILE)


def rng_state(generator: torch.Generator | None = None) -> dict[str, Any]:
    """Python, numpy, torch (CPU, CUDA) and ``generator`` RNG states as weights-only data."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": _plain(random.getstate()),
        "numpy": [str(kind), torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos),
                  int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def set_rng_state(state: dict[str, Any], generator: torch.Generator | None = None) -> None:
    """Restore what :func:`rng_state` saved."""
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in state:
        kind, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None and "generator" in state:
        generator.set_state(state["generator"])


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value
