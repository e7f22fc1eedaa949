"""Read and validate a trained nnU-Net v2 model folder (``Trainer__Plans__configuration/``).

The folder holds ``plans.json``, ``dataset.json`` and one ``fold_K/`` per trained fold with
``checkpoint_final.pth`` (and ``checkpoint_best.pth``). Every problem is a
:class:`~volseg.errors.VolsegError` naming the file and the fix.

Checkpoints are pickles. :func:`load_checkpoint` reads them with ``torch.load(weights_only=True)``
first. nnU-Net's trainer also pickles its training log, whose numbers are numpy scalars
(``numpy.float64``/``float32``, e.g. ``_best_ema`` and the per-epoch Dice), which the
weights-only unpickler refuses; the second try allows exactly those numpy scalar and dtype
constructors (``torch.serialization.safe_globals``; data only, no code runs) and logs that at
INFO. A checkpoint that needs any other class is refused with its name, unless the caller passes
``trust=True``, which loads it with ``weights_only=False`` (arbitrary code) after a WARNING.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
from pathlib import Path
from typing import Any

from volseg.errors import VolsegError

log = logging.getLogger("volseg.nnunet")

CHECKPOINTS = {"final": "checkpoint_final.pth", "best": "checkpoint_best.pth"}
REQUIRED_KEYS = ("network_weights", "trainer_name")
_FOLD = re.compile(r"^fold_(\d+|all)$")


def _numpy_allow_list() -> list:
    """numpy's scalar and dtype constructors, under both module names numpy pickles use."""
    import numpy as np

    scalar = np._core.multiarray.scalar if hasattr(np, "_core") else np.core.multiarray.scalar
    dtypes = [type(np.dtype(t)) for t in ("f2", "f4", "f8", "i1", "i2", "i4", "i8", "u1", "u2", "u4",
                                          "u8", "?")]
    return [scalar, (scalar, "numpy.core.multiarray.scalar"),
            (scalar, "numpy._core.multiarray.scalar"), np.dtype, *dtypes]


def _first_line(exc: BaseException) -> str:
    """The useful line of a torch.load error (the weights-only unpickler's own reason if given)."""
    text = str(exc)
    reason = re.search(r"WeightsUnpickler error:\s*([^\n]+)", text)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return (reason.group(1).strip() if reason else lines[0] if lines else type(exc).__name__)[:200]


def read_json(path: Path, what: str) -> dict:
    """A JSON object from ``path``, or a VolsegError saying what the file should be."""
    if not path.is_file():
        raise VolsegError(path, f"missing: an nnU-Net model folder holds {what}; pass the folder "
                                "Trainer__Plans__configuration that nnUNetv2_train wrote")
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise VolsegError(path, f"is not valid JSON ({exc}); restore it from the model folder") from None
    if not isinstance(doc, dict):
        raise VolsegError(path, f"holds a {type(doc).__name__}, expected a JSON object ({what})")
    return doc


def available_folds(folder: Path, checkpoint: str = "final") -> list[int | str]:
    """The folds of ``folder`` that have the checkpoint, sorted (numbers first, then ``"all"``)."""
    name = CHECKPOINTS[checkpoint]
    found = []
    for child in folder.iterdir() if folder.is_dir() else ():
        match = _FOLD.match(child.name)
        if match and (child / name).is_file():
            fold = match.group(1)
            found.append(int(fold) if fold.isdigit() else fold)
    return sorted(found, key=lambda f: (isinstance(f, str), f if isinstance(f, int) else 0))


def checkpoint_paths(folder: Path, folds: list[int | str] | None, checkpoint: str) -> dict:
    """fold -> checkpoint path for the requested folds (all present when ``folds`` is None)."""
    if checkpoint not in CHECKPOINTS:
        raise VolsegError("--checkpoint", f"{checkpoint!r} is not one of {', '.join(CHECKPOINTS)}")
    present = available_folds(folder, checkpoint)
    listed = ", ".join(map(str, present)) or "none"
    if folds is None:
        if not present:
            raise VolsegError(folder, f"has no fold_K/{CHECKPOINTS[checkpoint]}; train a fold with "
                                      "nnUNetv2_train, or pass --checkpoint best/final to match what is there")
        folds = present
    if not folds:
        raise VolsegError("--folds", "is empty; name at least one fold")
    out = {}
    for fold in folds:
        fold = int(fold) if str(fold).isdigit() else fold
        if fold != "all" and not isinstance(fold, int):
            raise VolsegError("--folds", f"{fold!r} is not a fold number or 'all'")
        path = folder / f"fold_{fold}" / CHECKPOINTS[checkpoint]
        if not path.is_file():
            raise VolsegError(path, f"missing: fold {fold} has no {CHECKPOINTS[checkpoint]}; folds with "
                                    f"one: {listed} (pass --folds from these, or --checkpoint "
                                    f"{'best' if checkpoint == 'final' else 'final'})")
        if fold in out:
            raise VolsegError("--folds", f"fold {fold} is named twice")
        out[fold] = path
    return out


def load_checkpoint(path: Path, trust: bool = False) -> dict[str, Any]:
    """Load an nnU-Net checkpoint on the CPU as safely as it allows (see the module docstring).

    Parameters
    ----------
    path : Path
        ``fold_K/checkpoint_*.pth``.
    trust : bool
        Allow ``weights_only=False`` (arbitrary code from the pickle) when the weights-only
        loader with the numpy allow-list refuses the file.

    Returns
    -------
    dict
        The checkpoint, checked for ``network_weights`` (a dict of tensors) and ``trainer_name``.
    """
    import torch

    def load(**kw):
        return torch.load(path, map_location="cpu", **kw)

    try:
        try:
            ck = load(weights_only=True)
        except pickle.UnpicklingError:
            with torch.serialization.safe_globals(_numpy_allow_list()):
                ck = load(weights_only=True)
            log.info("%s: loaded weights-only, allowing numpy scalars (nnU-Net's training log)", path)
    except pickle.UnpicklingError as exc:
        culprit = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if culprit is None:
            raise VolsegError(path, f"is not a readable torch checkpoint ({_first_line(exc)}); copy the "
                                    "fold again from the training machine") from None
        what = culprit.group(1)
        if not trust:
            raise VolsegError(path, f"needs {what} to unpickle, which may run code; volseg loads "
                                    "nnU-Net checkpoints weights-only. Pass --trust-checkpoint only "
                                    "if you trust the file's source") from None
        log.warning("%s: loading with weights_only=False (%s), trusted on request", path, what)
        ck = load(weights_only=False)
    except (OSError, RuntimeError, EOFError) as exc:
        raise VolsegError(path, f"is not a readable torch checkpoint ({_first_line(exc)}); copy the "
                                "fold again from the training machine") from None
    if not isinstance(ck, dict) or any(k not in ck for k in REQUIRED_KEYS):
        keys = sorted(ck)[:8] if isinstance(ck, dict) else type(ck).__name__
        raise VolsegError(path, f"is not an nnU-Net checkpoint: needs keys {', '.join(REQUIRED_KEYS)}, "
                                f"found {keys}")
    weights = ck["network_weights"]
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise VolsegError(path, "network_weights is not a state dict of tensors")
    return ck


def resolve_configuration(plans: dict, name: str, plans_path: Path) -> dict:
    """The plans' configuration ``name`` with ``inherits_from`` resolved, as nnU-Net's PlansManager."""
    configs = plans.get("configurations")
    if not isinstance(configs, dict) or name not in configs:
        names = ", ".join(configs) if isinstance(configs, dict) else "none"
        raise VolsegError(plans_path, f"has no configuration {name!r} (it has: {names}); use the "
                                      "plans.json that was trained with this folder")
    seen, chain = set(), []
    while name is not None:
        if name in seen or name not in configs:
            raise VolsegError(plans_path, f"configuration {name!r} inherits from a missing or circular parent")
        seen.add(name)
        chain.append(configs[name])
        name = configs[name].get("inherits_from")
    merged: dict = {}
    for conf in reversed(chain):
        merged.update(conf)
    return merged


def labels_of(dataset: dict, path: Path) -> tuple[dict[str, Any], bool]:
    """dataset.json's labels (name -> value or region tuple, no ``ignore``) and whether they are regions."""
    labels = dataset.get("labels")
    if not isinstance(labels, dict) or labels.get("background") != 0:
        raise VolsegError(path, "needs 'labels' with 'background': 0; use the dataset.json the model was "
                                "trained with")
    clean = {k: (tuple(v) if isinstance(v, list) else v) for k, v in labels.items() if k != "ignore"}
    regions = any(isinstance(v, tuple) and len(v) > 1 for v in clean.values())
    return clean, regions


def channel_count(dataset: dict, path: Path) -> int:
    """Number of input channels from dataset.json (``channel_names``, or the older ``modality``)."""
    names = dataset.get("channel_names", dataset.get("modality"))
    if not isinstance(names, dict) or not names:
        raise VolsegError(path, "needs 'channel_names' (channel index -> name); use the dataset.json the "
                                "model was trained with")
    return len(names)


def split_folder_name(folder: Path) -> tuple[str, str, str] | None:
    """(trainer, plans, configuration) from ``Trainer__Plans__configuration``, or None."""
    parts = folder.name.split("__")
    return (parts[0], parts[1], parts[2]) if len(parts) == 3 and all(parts) else None


def folder_exists(folder: str | os.PathLike) -> Path:
    """``folder`` as a Path, or a VolsegError when it is not a directory with plans.json."""
    folder = Path(folder)
    if not folder.is_dir():
        raise VolsegError(folder, "is not a folder; pass the nnU-Net model folder "
                                  "Trainer__Plans__configuration (with plans.json, dataset.json, fold_K/)")
    if not (folder / "plans.json").is_file():
        raise VolsegError(folder / "plans.json", "missing: an nnU-Net model folder holds plans.json; pass "
                                                 "the folder Trainer__Plans__configuration that "
                                                 "nnUNetv2_train wrote, not its parent or a fold")
    return folder


def is_model_folder(path) -> bool:
    """Whether ``path`` is a local folder holding ``plans.json`` or ``dataset.json``: an nnU-Net v2
    model folder (which ``volseg predict`` runs on nnU-Net's grid), or one missing a file, which
    :func:`folder_exists` and :func:`read_json` then name."""
    try:
        folder = Path(os.fspath(path))
        return folder.is_dir() and any((folder / name).is_file() for name in ("plans.json", "dataset.json"))
    except (TypeError, ValueError, OSError):
        return False
