"""Training configuration: defaults per model type, YAML loading, validation, CLI overrides.

A config is a nested dict of plain data with the sections ``data``, ``augment`` (passed to the
dataset unvalidated), ``model``, ``diffusion``, ``training``, ``optim`` and ``loss``; keys follow
the original 2D code (``data.image_size``, ``data.depth``, ``data.channels``, ``model.type``,
``model.in_channels``, ``model.out_ch``, ``model.ch``, ``model.ch_mult``,
``training.batch_size``, ``diffusion.*``). Precedence: defaults < ``--config`` file < CLI flags.
Unknown keys, keys that do not apply to the model type and wrong types are refused by name.
"""

from __future__ import annotations

import copy
import difflib
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from volseg.errors import VolsegError

MODEL_TYPES = ("unet", "diffusion")
_ALIASES = {"sg": "diffusion", "simple": "diffusion", "unet3d": "unet"}

# key -> (kind, default). Kinds: int, float, bool, str, intlist, dict; "?" suffix: may be null.
_COMMON = {
    "data": {
        "dataset": ("str?", None), "image_size": ("int?", None), "depth": ("int?", None),
        "patch": ("intlist?", None), "channels": ("int", 1), "val_fraction": ("float", 0.1),
        "samples_per_epoch": ("int", 256), "foreground_fraction": ("float", 0.5),
        "workers": ("int", 0), "weights": ("str", "size"), "condition": ("strlist?", None),
        "whole": ("bool", False),
    },
    "training": {
        "batch_size": ("int", 2), "global_batch_size": ("int?", None), "n_iters": ("int?", None), "n_epochs": ("int?", None),
        "validation_freq": ("int", 100), "snapshot_freq": ("int", 100), "log_freq": ("int", 10),
        "val_batches": ("int", 16), "seed": ("int", 0), "device": ("str", "auto"),
        "amp": ("bool", False), "checkpoint": ("bool", False), "max_seconds": ("float?", None),
        "tensorboard": ("bool", False),
        "max_cpu_seconds": ("float?", None),
    },
    "optim": {
        "optimizer": ("str", "adamw"), "lr": ("float", 2e-3), "weight_decay": ("float", 1e-4),
        "beta1": ("float", 0.9), "eps": ("float", 1e-8), "amsgrad": ("bool", False),
        "grad_clip": ("float?", 1.0), "warmup": ("int", 0),
        "schedule": ("str", "constant"), "poly_exponent": ("float", 0.9),
        "min_lr": ("float", 0.0), "schedule_steps": ("int?", None),
    },
}
_MODEL = {
    "unet": {
        "type": ("str", "unet"), "in_channels": ("int?", None), "out_ch": ("int", 1),
        "ch": ("int", 16), "depth": ("int", 3), "separable": ("bool", False),
        "groups": ("int", 8), "norm_mean": ("floatlist?", None), "norm_std": ("floatlist?", None),
        "target_mean": ("float?", None), "target_std": ("float?", None),
    },
    "diffusion": {
        "type": ("str", "diffusion"), "in_channels": ("int?", None), "out_ch": ("int", 1),
        "ch": ("int", 32), "ch_mult": ("intlist", [1, 2, 4]), "num_res_blocks": ("int", 1),
        "dropout": ("float", 0.0), "attn": ("bool", True), "resamp_with_conv": ("bool", True),
        "var_type": ("str", "fixedsmall"), "ema": ("bool", True), "ema_rate": ("float", 0.999),
        "norm_mean": ("floatlist?", None), "norm_std": ("floatlist?", None),
        "target_mean": ("float?", None), "target_std": ("float?", None),
        "target_range": ("floatlist?", None),
    },
}
_EXTRA = {
    "unet": {"loss": {"type": ("str", "segmentation"), "bce_weight": ("float", 1.0), "dice_weight": ("float", 1.0),
                      "skeleton_recall_weight": ("float", 0.0), "skeleton_tube_radius": ("int", 1),
                      "cldice_weight": ("float", 0.0), "cldice_iters": ("int", 3),
                      "ignore_label": ("int?", 2)}},
    "diffusion": {"diffusion": {
        "beta_schedule": ("str", "linear"), "beta_start": ("float", 1e-4),
        "beta_end": ("float", 0.02), "num_diffusion_timesteps": ("int", 1000),
        "timesteps": ("int", 10), "scheduler_type": ("str", "uniform"), "eta": ("float", 0.0),
        "clip_x0": ("bool", True), "start_t": ("int?", None),
        "prediction": ("str", "x0"), "val_samples": ("int", 2)}},
}
_TYPE_DEFAULTS = {
    "unet": {"training.batch_size": 2, "optim.lr": 2e-3},
    "diffusion": {"training.batch_size": 1, "optim.lr": 2e-4, "optim.weight_decay": 0.0},
}
_CHOICES = {
    "training.device": None, "optim.optimizer": ("adam", "adamw"), "data.weights": ("size", "equal"),
    "optim.schedule": ("constant", "poly", "cosine"),
    "diffusion.beta_schedule": ("linear",), "diffusion.scheduler_type": ("uniform", "non-uniform"),
    "diffusion.prediction": ("eps", "x0", "v"), "loss.type": ("segmentation", "l1", "l2"),
    "model.var_type": ("fixedsmall", "fixedlarge"),
}
_POSITIVE = {"data.channels", "training.batch_size", "training.global_batch_size", "training.n_iters", "training.n_epochs",
             "training.validation_freq", "training.snapshot_freq", "training.log_freq",
             "training.val_batches", "data.samples_per_epoch", "model.in_channels",
             "model.out_ch", "model.ch", "model.depth", "model.groups", "model.num_res_blocks",
             "diffusion.num_diffusion_timesteps", "diffusion.timesteps", "data.image_size",
             "data.depth", "loss.cldice_iters"}

_POSITIVE_FLOAT = {"optim.lr"}
_UNIT_INTERVAL = {"data.val_fraction"}
_NONNEGATIVE = {"training.seed", "data.workers", "optim.warmup", "optim.weight_decay", "optim.eps"}


def schema(model_type: str) -> dict[str, dict[str, tuple[str, Any]]]:
    """Allowed sections and keys for ``model_type``: {section: {key: (kind, default)}}."""
    out = copy.deepcopy(_COMMON)
    out["model"] = copy.deepcopy(_MODEL[model_type])
    out.update(copy.deepcopy(_EXTRA[model_type]))
    return out


def defaults(model_type: str) -> dict[str, Any]:
    """The default config for ``model_type`` ("unet" or "diffusion")."""
    cfg: dict[str, Any] = {section: {key: copy.deepcopy(default) for key, (_, default)
                                     in keys.items()}
                           for section, keys in schema(model_type).items()}
    cfg["augment"] = None
    for dotted, value in _TYPE_DEFAULTS[model_type].items():
        section, key = dotted.split(".")
        cfg[section][key] = value
    return cfg


def parse_model_type(value: str | None, *, where: str = "--model") -> str:
    """Normalise a model type name ('sg' is the original's name for the diffusion model)."""
    text = str(value).strip().lower()
    text = _ALIASES.get(text, text)
    if text not in MODEL_TYPES:
        raise VolsegError(where, f"unknown model {value!r}; use unet or diffusion")
    return text


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML config file into a dict (an empty file gives {})."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise VolsegError(path, "config file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise VolsegError(path, f"is not valid YAML{where}; fix the syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise VolsegError(path, "must hold a mapping of sections (data:, model:, training:, ...)")
    return data


def _suggest(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check_value(kind: str, value: Any, dotted: str, where: str) -> Any:
    nullable = kind.endswith("?")
    base = kind.rstrip("?")
    if value is None:
        if nullable:
            return None
        raise VolsegError(where, f"{dotted!r} must not be empty (expected {base})")
    bad = VolsegError(where, f"{dotted!r} must be {_KIND_TEXT[base]}, got {value!r}")
    if base == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
    elif base == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        value = float(value)
        if not math.isfinite(value):
            raise VolsegError(where, f"{dotted!r} must be a finite number, got {value!r}")
    elif base == "bool":
        if not isinstance(value, bool):
            raise bad
    elif base == "str":
        if not isinstance(value, str):
            raise bad
    elif base == "strlist":
        if not isinstance(value, list) or not value or any(
                not isinstance(v, str) or not v.strip() or v.strip() in (".", "..") for v in value):
            raise bad
    elif base == "intlist":
        if not isinstance(value, list) or not value or any(
                isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value):
            raise bad
    elif base == "floatlist":
        if isinstance(value, bool):
            raise bad
        if isinstance(value, (int, float)):
            return float(value)
        if not isinstance(value, list) or not value or any(
                isinstance(v, bool) or not isinstance(v, (int, float)) for v in value):
            raise bad
        value = [float(v) for v in value]
    if dotted in _POSITIVE and isinstance(value, int) and value < 1:
        raise VolsegError(where, f"{dotted!r} must be at least 1, got {value}")
    if dotted in _POSITIVE_FLOAT and value <= 0:
        raise VolsegError(where, f"{dotted!r} must be a positive number, got {value!r}; e.g. 2e-3")
    if dotted in _UNIT_INTERVAL and not 0.0 <= value < 1.0:
        raise VolsegError(where, f"{dotted!r} must be in [0, 1), got {value!r}; e.g. 0.1")
    if dotted in _NONNEGATIVE and value < 0:
        raise VolsegError(where, f"{dotted!r} must be 0 or more, got {value!r}")
    choices = _CHOICES.get(dotted)
    if choices and value not in choices:
        raise VolsegError(where, f"{dotted!r} must be one of {', '.join(choices)}, got {value!r}")
    return value


_KIND_TEXT = {"int": "an integer", "float": "a number", "bool": "true or false",
              "strlist": "a list of image names (e.g. [flair])",
              "str": "a string", "intlist": "a list of positive integers",
              "floatlist": "a number or a list of numbers"}


def merge(cfg: dict[str, Any], updates: Mapping[str, Any], *, model_type: str,
          where: str) -> dict[str, Any]:
    """Validate ``updates`` (nested sections) against the schema and merge them into ``cfg``.

    Parameters
    ----------
    cfg : dict
        The config so far (modified copy returned).
    updates : mapping
        ``{section: {key: value}}``; ``augment`` is taken as is (a mapping or null).
    model_type : str
        Decides which ``model.*`` and extra sections are allowed.
    where : str
        What to name in errors (the config file, or the CLI option).
    """
    allowed = schema(model_type)
    known = [f"{s}.{k}" for s, keys in allowed.items() for k in keys] + ["augment"]
    out = copy.deepcopy(cfg)
    for section, values in updates.items():
        if section == "augment":  # false: off; true or null: the defaults; a mapping: changes
            if values is not None and not isinstance(values, (dict, bool)):
                raise VolsegError(where, f"'augment' must be true, false, null or a mapping of "
                                         f"settings, got {values!r}")
            out["augment"] = copy.deepcopy(values)
            continue
        if section not in allowed:
            other = next((t for t in MODEL_TYPES if t != model_type
                          and section in schema(t)), None)
            if other:
                raise VolsegError(where, f"section {section!r} applies to --model {other}, "
                                         f"not {model_type}; remove it")
            raise VolsegError(where, f"unknown section {section!r}{_suggest(section, list(allowed) + ['augment'])}")
        if values is None:
            continue
        if not isinstance(values, dict):
            raise VolsegError(where, f"section {section!r} must be a mapping of keys")
        for key, value in values.items():
            dotted = f"{section}.{key}"
            if key not in allowed[section]:
                other = next((t for t in MODEL_TYPES if t != model_type
                              and key in schema(t).get(section, {})), None)
                if other:
                    raise VolsegError(where, f"key {dotted!r} applies to --model {other}, "
                                             f"not {model_type}; remove it")
                raise VolsegError(where, f"unknown key {dotted!r}{_suggest(dotted, known)}")
            out[section][key] = _check_value(allowed[section][key][0], value, dotted, where)
    return out


def resolve(*, model_type: str | None = None, config_path: str | os.PathLike | None = None,
            overrides: Mapping[str, Any] | None = None,
            base: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build the resolved config: ``base`` or defaults < config file < CLI overrides.

    Parameters
    ----------
    model_type : str, optional
        ``--model``; when omitted the file's ``model.type`` (or ``base``'s) decides, else unet.
    config_path : path, optional
        ``--config`` YAML file.
    overrides : mapping, optional
        Dotted keys from CLI flags (``{"training.batch_size": 4}``); None values are skipped.
    base : dict, optional
        A previously resolved config (``--resume``) used instead of the defaults.

    Returns
    -------
    dict
        The complete, validated config.
    """
    file_cfg = load_yaml(config_path) if config_path is not None else {}
    where_file = str(config_path) if config_path is not None else "config"
    file_type = (file_cfg.get("model") or {}).get("type") if isinstance(
        file_cfg.get("model"), dict) else None
    if model_type is not None:
        kind = parse_model_type(model_type)
    elif file_type is not None:
        kind = parse_model_type(file_type, where=where_file)
    elif base is not None:
        kind = base["model"]["type"]
    else:
        kind = "unet"
    if file_type is not None and isinstance(file_cfg["model"], dict):
        file_cfg = dict(file_cfg, model=dict(file_cfg["model"], type=kind))
    cfg = copy.deepcopy(base) if base is not None else defaults(kind)
    for section, values in defaults(kind).items():  # keys added since the base run was made
        if isinstance(values, dict) and isinstance(cfg.get(section), dict):
            cfg[section] = {**values, **cfg[section]}
    cfg = merge(cfg, file_cfg, model_type=kind, where=where_file)
    file_data = file_cfg.get("data") if isinstance(file_cfg.get("data"), dict) else {}
    if "patch" in file_data and file_data["patch"] is None and file_data.get("image_size") is not None:
        cfg["data"]["whole"] = True  # the seed's whole resized volumes; a bare `patch: null` is the default
    ov = overrides or {}
    if ov.get("training.n_iters") is not None and ov.get("training.n_epochs") is not None:
        raise VolsegError("--steps", "give either --steps or --epochs, not both")
    if ov.get("training.n_iters") is not None:
        cfg["training"]["n_epochs"] = None
    if ov.get("training.n_epochs") is not None:
        cfg["training"]["n_iters"] = None
    nested: dict[str, dict[str, Any]] = {}
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        section, key = dotted.split(".", 1)
        nested.setdefault(section, {})[key] = value
    for section, values in nested.items():
        cfg = merge(cfg, {section: values}, model_type=kind, where=_flag_name(section, values))
    cfg["model"]["type"] = kind
    return finalize(cfg, where=where_file)


def _flag_name(section: str, values: dict) -> str:
    key = next(iter(values))
    return {"n_iters": "--steps", "n_epochs": "--epochs", "batch_size": "--batch-size",
            "val_fraction": "--val-fraction"}.get(key, f"--{key.replace('_', '-')}")


def finalize(cfg: dict[str, Any], *, where: str = "config") -> dict[str, Any]:
    """Cross-key checks and derived values (patch from image_size/depth, in_channels)."""
    data, model, training = cfg["data"], cfg["model"], cfg["training"]
    if data.get("whole"):
        _finalize_whole(data, where)
    elif data["patch"] is None and (data["image_size"] is not None or data["depth"] is not None):
        size = data["image_size"] if data["image_size"] is not None else data["depth"]
        data["patch"] = [data["depth"] if data["depth"] is not None else size, size, size]
    if data["patch"] is not None:
        if len(data["patch"]) == 1:
            data["patch"] = data["patch"] * 3
        if len(data["patch"]) != 3:
            raise VolsegError(where, f"'data.patch' must have 1 or 3 sides, got {data['patch']}")
        data["depth"], data["image_size"] = data["patch"][0], data["patch"][1]
    if data["condition"]:
        inputs = 1 + len(data["condition"])
        if data["channels"] == 1:
            data["channels"] = inputs
        elif data["channels"] != inputs:
            raise VolsegError(where, f"'data.channels' is {data['channels']} but data.condition "
                                     f"{data['condition']} gives 1 + {len(data['condition'])} = {inputs} "
                                     f"input channels; set data.channels: {inputs} or leave it out")
    expected = data["channels"] + (model["out_ch"] if model["type"] == "diffusion" else 0)
    if model["in_channels"] is None:
        model["in_channels"] = expected
    elif model["in_channels"] != expected:
        what = "data.channels + model.out_ch (condition + noisy volume)" if model["type"] == "diffusion" \
            else "data.channels"
        raise VolsegError(where, f"'model.in_channels' is {model['in_channels']} but must be "
                                 f"{what} = {expected}")
    if not 0.0 <= data["val_fraction"] < 1.0:
        raise VolsegError(where, f"'data.val_fraction' must be in [0, 1), got {data['val_fraction']}")
    for key, value in (cfg.get("loss") or {}).items():
        if key not in ("ignore_label", "type") and value < 0:
            raise VolsegError(where, f"'loss.{key}' must be >= 0, got {value}")
    if training["n_iters"] is not None and training["n_epochs"] is not None:
        raise VolsegError(where, "give either training.n_iters (--steps) or training.n_epochs "
                                 "(--epochs), not both")
    if model["type"] == "diffusion":
        span = model["target_range"]
        if span is not None and (not isinstance(span, list) or len(span) != 2
                                 or span[0] >= span[1]):
            raise VolsegError(where, f"'model.target_range' must be [low, high] with low < high, "
                                     f"got {span!r}")
        start = cfg["diffusion"]["start_t"]
        if start is not None and not 0 <= start < cfg["diffusion"]["num_diffusion_timesteps"]:
            raise VolsegError(where, f"'diffusion.start_t' must be in [0, "
                                     f"{cfg['diffusion']['num_diffusion_timesteps']}), got {start}")
        if start is not None and data["channels"] != model["out_ch"]:
            raise VolsegError(where, "'diffusion.start_t' starts sampling from the noised "
                                     "condition, so data.channels must equal model.out_ch")
        rate = model["ema_rate"]
        if not 0.0 <= rate < 1.0:
            raise VolsegError(where, f"'model.ema_rate' must be in [0, 1), got {rate}")
    from volseg.training.schedule import check_schedule

    check_schedule(cfg["optim"], where=where)
    return cfg


def _finalize_whole(data: dict[str, Any], where: str) -> None:
    """``data.patch: null``: whole cases resized to (data.depth, data.image_size, data.image_size)."""
    if data["patch"] is not None:
        raise VolsegError(where, f"'data.patch' is {data['patch']} but whole-volume training "
                                 "(data.patch: null) was asked for; drop --patch or data.patch: null")
    if data["image_size"] is None:
        raise VolsegError(where, "'data.patch' is null (whole volumes resized to data.depth x "
                                 "data.image_size x data.image_size) but data.image_size is not set; "
                                 "give e.g. data.image_size: 64 (and data.depth)")
    if data["depth"] is None:
        data["depth"] = data["image_size"]


def task_of(cfg: dict[str, Any]) -> str:
    """``segmentation`` (a UNet on labels) or ``translation`` (diffusion, or a UNet regressing an
    image with ``loss.type: l1 | l2``): what the training data must hold."""
    if cfg["model"]["type"] == "unet" and cfg["loss"].get("type", "segmentation") == "segmentation":
        return "segmentation"
    return "translation"


def parse_patch(text: str | None) -> list[int] | None:
    """``--patch``: ``64`` or ``DxHxW`` (e.g. ``32x64x64``) -> [d, h, w]."""
    if text is None:
        return None
    parts = str(text).lower().replace(",", "x").split("x")
    try:
        sides = [int(p) for p in parts]
    except ValueError:
        raise VolsegError("--patch", f"{text!r} is not a size; use e.g. 64 or 32x64x64") from None
    if len(sides) == 1:
        sides = sides * 3
    if len(sides) != 3 or min(sides) < 1:
        raise VolsegError("--patch", f"{text!r} is not a size; use e.g. 64 or 32x64x64")
    return sides


def to_yaml(cfg: dict[str, Any]) -> str:
    """The config as YAML text (sections in a fixed order)."""
    import yaml

    order = ["data", "augment", "model", "diffusion", "loss", "training", "optim"]
    ordered = {k: cfg[k] for k in order if k in cfg}
    ordered.update({k: v for k, v in cfg.items() if k not in ordered})
    return yaml.safe_dump(ordered, sort_keys=False, default_flow_style=None)
