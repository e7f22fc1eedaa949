"""Build an nnU-Net v2 network from its plans, as nnU-Net's ``get_network_from_plans`` does.

The plans' ``configurations[cfg]["architecture"]`` names the network class
(``network_class_name``, a dotted path, normally in ``dynamic_network_architectures``), its
keyword arguments (``arch_kwargs``) and which of those are dotted class names to import
(``_kw_requires_import``: ``conv_op``, ``norm_op``, ...). ``dynamic_network_architectures`` is
the optional extra ``volseg[nnunet]`` and is imported only here, when a folder is loaded.

Trainers that build their own network instead of the plans' (the MedNeXt trainers of the villa
and other forks, nnU-Net's Primus trainers) cannot be built without their code: they are refused
by name. ``nnUNetTrainerBN`` swaps the plans' norm for batch norm, as nnU-Net does.
"""

from __future__ import annotations

import importlib
import itertools
import pkgutil
import pydoc
from pathlib import Path
from typing import Any

from volseg.errors import VolsegError

INSTALL = "pip install 'volseg[nnunet]' (dynamic-network-architectures)"
# Trainer-name fragments of trainers whose build_network_architecture ignores the plans.
OWN_NETWORK = {"mednext": "MedNeXt (villa's / the nnU-Net forks' MedNeXt trainers)",
               "primus": "Primus (nnU-Net's Primus trainers)"}


def check_trainer(trainer: str, where: Path) -> None:
    """Refuse a trainer whose network is not the plans' architecture, naming what it needs."""
    for fragment, network in OWN_NETWORK.items():
        if fragment in trainer.lower():
            raise VolsegError(where, f"trainer {trainer} builds its own {network} network, not the "
                                     "architecture in plans.json, and volseg cannot build it: run it "
                                     "with nnU-Net and the package that defines the trainer, or export it "
                                     "to ONNX and run `volseg predict model.onnx`")


def _locate_class(name: str) -> Any:
    """The class at dotted ``name``; else nnU-Net's fallback, by its last part in the architectures."""
    found = pydoc.locate(name)
    if found is not None:
        return found
    import dynamic_network_architectures.architectures as archs

    short = name.rpartition(".")[2]
    for info in pkgutil.walk_packages(archs.__path__, archs.__name__ + "."):
        try:
            module = importlib.import_module(info.name)
        except Exception:  # an optional architecture whose own dependency is missing
            continue
        if isinstance(getattr(module, short, None), type):
            return getattr(module, short)
    return None


def build_network(architecture: dict, in_channels: int, out_channels: int, trainer: str,
                  plans_path: Path):
    """Instantiate the plans' network without deep supervision, in eval mode (random weights).

    Parameters
    ----------
    architecture : dict
        The configuration's ``architecture`` entry.
    in_channels, out_channels : int
        From dataset.json: channels, and labels (or regions) without ``ignore``.
    trainer : str
        The checkpoint's ``trainer_name`` (``nnUNetTrainerBN`` switches to batch norm).
    plans_path : Path
        plans.json, named in errors.

    Returns
    -------
    torch.nn.Module
    """
    try:
        import dynamic_network_architectures  # noqa: F401
    except ImportError:
        raise VolsegError(plans_path, f"building an nnU-Net network needs dynamic-network-architectures: "
                                      f"{INSTALL}") from None
    if not isinstance(architecture, dict) or "network_class_name" not in architecture:
        raise VolsegError(plans_path, "has no architecture.network_class_name in this configuration: "
                                      "plans from nnU-Net before 2.4 are not supported; re-plan with a "
                                      "current nnU-Net")
    name = architecture["network_class_name"]
    kwargs = dict(architecture.get("arch_kwargs") or {})
    if trainer.startswith("nnUNetTrainerBN"):
        kwargs["norm_op"] = (kwargs.get("conv_op") or "").replace("conv.Conv", "batchnorm.BatchNorm")
        kwargs["norm_op_kwargs"] = {"eps": 1e-5, "affine": True}
    for key in architecture.get("_kw_requires_import") or ():
        if kwargs.get(key) is not None:
            located = pydoc.locate(kwargs[key])
            if located is None:
                raise VolsegError(plans_path, f"architecture argument {key}={kwargs[key]!r} cannot be "
                                              "imported; install the package that defines it")
            kwargs[key] = located
    network_class = _locate_class(name)
    if network_class is None:
        raise VolsegError(plans_path, f"network class {name} (trainer {trainer}) cannot be imported: "
                                      f"{INSTALL}, or install the package that defines it")
    kwargs["deep_supervision"] = False
    try:
        network = network_class(input_channels=in_channels, num_classes=out_channels, **kwargs)
    except (TypeError, ValueError, AssertionError, KeyError, IndexError, RuntimeError) as exc:
        raise VolsegError(plans_path, f"network {name} cannot be built from arch_kwargs "
                                      f"({type(exc).__name__}: {exc}); use the plans.json trained with "
                                      "this folder") from None
    return network.eval()


def load_weights(network, weights: dict, checkpoint: Path, trainer: str) -> None:
    """Load a fold's state dict strictly; a mismatch names the checkpoint and what differs."""
    try:
        network.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        own = network.state_dict()
        missing = sorted(set(own) - set(weights))
        extra = sorted(set(weights) - set(own))
        shapes = [k for k in set(own) & set(weights) if tuple(own[k].shape) != tuple(weights[k].shape)]
        detail = "; ".join(part for part in (
            f"{len(missing)} missing (e.g. {missing[0]})" if missing else "",
            f"{len(extra)} unexpected (e.g. {extra[0]})" if extra else "",
            f"{len(shapes)} of other shape (e.g. {sorted(shapes)[0]}: "
            f"{tuple(weights[sorted(shapes)[0]].shape)} vs {tuple(own[sorted(shapes)[0]].shape)} "
            "from plans.json/dataset.json)" if shapes else "") if part) or str(exc).splitlines()[0]
        raise VolsegError(checkpoint, f"weights do not fit the network that plans.json and dataset.json "
                                      f"describe ({detail}); trainer {trainer} may build another "
                                      "network, or the folder mixes files of different models") from None


def mirror_combinations(axes) -> list[tuple[int, ...]]:
    """nnU-Net's test-time mirroring: every non-empty combination of the allowed spatial axes.

    In nnU-Net's order (``itertools.combinations`` by size, then lexicographic), as axes of an
    (N, C, z, y, x) tensor; empty when ``axes`` is None or empty.
    """
    spatial = [int(a) + 2 for a in (axes or ())]
    return [c for i in range(len(spatial)) for c in itertools.combinations(spatial, i + 1)]


def mirrored_logits(network, batch, combinations: list[tuple[int, ...]]):
    """The network's logits averaged with its mirrored predictions, summed in nnU-Net's order."""
    import torch

    prediction = network(batch)
    for axes in combinations:
        prediction += torch.flip(network(torch.flip(batch, axes)), axes)
    if combinations:
        prediction /= len(combinations) + 1
    return prediction
