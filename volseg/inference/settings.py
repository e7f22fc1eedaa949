"""What ``volseg predict`` computes, as frozen objects parsed and validated once.

:class:`PredictSettings` holds how to predict (patch grid, blending, batching, TTA, device, padding,
tiling, input NaN policy), with :class:`DiffusionSettings` for the DDIM sampler of diffusion
runs, and :class:`OutputOptions` how the blended values are written (dtype, threshold, channel).
They are built by ``parse`` from option values as the CLI passes them (text or numbers), or from
a YAML file with :func:`from_sources` (defaults < file < explicit options), and travel whole
through :func:`volseg.inference.predict.predict`. The execution options (scheduler, workers,
``--part``, ``--overwrite``, ``--quiet``) are :class:`volseg.parallel.Execution`.

Axis order (z, y, x); sizes in voxels.

Examples
--------
>>> s = PredictSettings.parse(patch="32x64x64", overlap=0.25, stitch=True)
>>> s.patch, s.overlap, s.chunks, s.tile
((32, 64, 64), 0.25, (128, 128, 128), (1024, 1024))
>>> PredictSettings.parse(overlap=1.5)
Traceback (most recent call last):
    ...
volseg.errors.VolsegError: --overlap: must be in [0, 1), got 1.5
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

from volseg.errors import VolsegError
from volseg.inference.output import OutputOptions
from volseg.io.finite import parse_finite, parse_whole

#: File name of the resolved settings written next to (inside) every predict output.
SETTINGS_FILE = "volseg-predict.yml"


def parse_eta(eta) -> float:
    """``--eta``: DDIM stochasticity, a number >= 0 (0 = deterministic)."""
    eta = parse_finite(eta, "--eta")
    if not eta >= 0.0:
        raise VolsegError("--eta", f"must be >= 0, got {eta}")
    return eta


@dataclass(frozen=True)
class DiffusionSettings:
    """DDIM sampling of a diffusion run: steps (None = the model's), eta, noise seed, samples.

    ``samples`` > 1 writes the mean of that many samples and their per-voxel standard
    deviation (``OUT/uncertainty``).
    """

    sampling_steps: int | None = None
    eta: float = 0.0
    seed: int = 0
    samples: int = 1

    @classmethod
    def parse(cls, *, sampling_steps=None, eta=0.0, seed=0, samples=1) -> "DiffusionSettings":
        steps = None if sampling_steps is None else parse_whole(
            sampling_steps, "--sampling-steps", low=1, fix="e.g. --sampling-steps 10")
        return cls(steps, parse_eta(eta), parse_whole(seed, "--seed", low=0, fix="e.g. --seed 0"),
                   parse_whole(samples, "--samples", low=1, fix="use 1 for one sample, or e.g. 4 for their mean "
                              "and an uncertainty volume"))


@dataclass(frozen=True)
class PredictSettings:
    """How ``predict`` runs a model over a volume (see :func:`volseg.inference.predict.predict`).

    Attributes
    ----------
    patch : (z, y, x) or None
        Patch size; None = the run's training patch (else 64).
    overlap : float
        Fractional patch overlap in [0, 1).
    batch_size, tta, amp, device
        Patches per forward pass (None = ``auto``: chosen by the patch size,
        :func:`volseg.inference.runtime.auto_batch_size`), 8-flip mirroring TTA, autocast,
        ``auto|cpu|cuda|cuda:N``.
    runtime : {"auto", "torch", "onnx"}
        The engine that runs the model (:mod:`volseg.inference.runtime`). Like ``batch_size``
        it is not part of the fingerprint: outputs agree within 1e-5 whatever it is.
    stitch : bool
        Stream into a blended volume (False: a patch store for ``volseg stitch``).
    blend, sigma_scale
        Blending window and gaussian sigma / patch.
    skip_value : float or None
        Patches whose input is all this value get the model's answer for a constant patch.
    chunks : (z, y, x)
        Output chunk size: the unit of tasks, markers and ``--part``.
    pad : bool
        Mirror-pad axes shorter than the patch (False: refuse them).
    tile : (y, x) or None
        Column tile in voxels of fused and diffusion passes (None: the whole cross-section).
    nan_value : float or None
        Read NaN/Inf input voxels as this value (None: refuse them).
    whole : bool
        Runs trained on whole resized volumes are run that way (False: patch-wise).
    diffusion : DiffusionSettings
        The sampler of diffusion runs.
    folds, checkpoint, label, trust_checkpoint, spacing
        nnU-Net model folders only (:mod:`volseg.inference.nnunet_pass`): the folds to ensemble
        (None = all present), ``final``/``best`` checkpoint, the output (None = probability of
        the first foreground label, a label name, or ``argmax`` for nnU-Net's label map),
        whether to unpickle checkpoints the weights-only loader refuses, and the spacing policy
        (``check``: refuse a volume whose spacing differs from the plans', ``ignore``).
    roi : str or None
        ``--roi``: the box ``z0:z1,y0:y1,x0:x1`` (level-0 voxels) computed; the rest is 0
        (:mod:`volseg.inference.support`).
    mask, mask_level : str or None, int or None
        ``--mask MASK[@LEVEL]``: only patches over the mask's nonzero voxels run.
    tta_rotate : float
        Also average over rotations by +/- this many degrees about z (:mod:`volseg.inference.tta`).
    ensemble_mean : str
        How an ensemble of runs averages its members' outputs: ``arithmetic`` or ``geometric``
        (:mod:`volseg.inference.ensemble`).
    normalize, activation : str or None
        Foreign ONNX files only (:mod:`volseg.models.foreign`): ``zscore`` (per patch and channel),
        ``ct:LOW,HIGH,MEAN,STD`` or ``none`` before the graph; ``sigmoid``, ``softmax`` or ``none``
        after it. None = not given (then ``none``); any other run refuses them.
    """

    patch: tuple[int, int, int] | None = None
    overlap: float = 0.5
    batch_size: int | None = None
    tta: bool = False
    amp: bool = False
    device: str = "auto"
    stitch: bool = False
    blend: str = "gaussian"
    sigma_scale: float = 0.125
    skip_value: float | None = None
    chunks: tuple[int, int, int] = (128, 128, 128)
    pad: bool = True
    tile: tuple[int, int] | None = (1024, 1024)
    nan_value: float | None = None
    whole: bool = True
    diffusion: DiffusionSettings = field(default_factory=DiffusionSettings)
    # --- nnU-Net model folders (defaults = unused; kept together, see NNUNET_DEFAULTS) ---
    folds: tuple[int | str, ...] | None = None
    checkpoint: str = "final"
    label: str | None = None
    trust_checkpoint: bool = False
    spacing: str = "check"
    # where predict computes (volseg.inference.support): recorded in fingerprints only when set
    roi: str | None = None
    mask: str | None = None
    mask_level: int | None = None
    tta_rotate: float = 0.0
    ensemble_mean: str = "arithmetic"
    runtime: str = "auto"
    # foreign ONNX files only (volseg.models.foreign); None = not given, recorded only when set
    normalize: str | None = None
    activation: str | None = None

    @classmethod
    def parse(cls, *, diffusion: DiffusionSettings | dict | None = None, **options) -> "PredictSettings":
        """Validate option values (CLI text or numbers); unknown names are an error naming them."""
        from volseg.geometry import parse_size3, stride_from_overlap
        from volseg.inference.blend import parse_predict_blend, parse_sigma_scale
        from volseg.inference.column_tiles import parse_tile
        from volseg.inference.ensemble_mean import parse_ensemble_mean
        from volseg.inference.tta import parse_tta_rotate
        from volseg.inference.runtime import parse_batch_option, parse_runtime
        from volseg.io.finite import parse_nan_value
        from volseg.io.streaming import parse_chunks
        from volseg.models.foreign import parse_activation, parse_normalize

        from volseg.inference.support import parse_mask
        from volseg.roi import parse_roi

        names = {f.name for f in dataclasses.fields(cls)} - {"diffusion"}
        unknown = sorted(set(options) - names)
        if unknown:
            raise VolsegError("settings", f"unknown predict setting(s) {', '.join(unknown)}; known: "
                              f"{', '.join(sorted(names | set(DIFFUSION_KEYS) | set(OUTPUT_KEYS)))}")
        v = {**{f.name: f.default for f in dataclasses.fields(cls) if f.name != "diffusion"}, **options}
        patch = None if v["patch"] is None else parse_size3(v["patch"], name="--patch")
        stride_from_overlap(patch or (64, 64, 64), v["overlap"])  # checks [0, 1)
        skip = None if v["skip_value"] is None else parse_finite(v["skip_value"], "--skip-value")
        if not isinstance(diffusion, DiffusionSettings):
            diffusion = DiffusionSettings.parse(**(diffusion or {}))
        mask, mask_level = parse_mask(v["mask"], v["mask_level"])
        return cls(patch, float(v["overlap"]),
                   parse_batch_option(v["batch_size"]),
                   bool(v["tta"]), bool(v["amp"]), str(v["device"]), bool(v["stitch"]),
                   parse_predict_blend(v["blend"]), parse_sigma_scale(v["sigma_scale"]), skip,
                   parse_chunks(v["chunks"]), bool(v["pad"]), parse_tile(v["tile"]),
                   parse_nan_value(v["nan_value"]), bool(v["whole"]), diffusion,
                   roi=parse_roi(v["roi"]), mask=mask, mask_level=mask_level,
                   tta_rotate=parse_tta_rotate(v["tta_rotate"]),
                   ensemble_mean=parse_ensemble_mean(v["ensemble_mean"]), runtime=parse_runtime(v["runtime"]),
                   normalize=parse_normalize(v["normalize"]), activation=parse_activation(v["activation"]),
                   **parse_nnunet_options(v))

    def replace(self, **changes) -> "PredictSettings":
        """A copy with ``changes`` (already valid values, e.g. the resolved patch)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """The settings as plain YAML/JSON values, diffusion sampler keys flattened in.

        The nnU-Net keys (:data:`NNUNET_DEFAULTS`) appear only where not at their defaults.
        """
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "diffusion"
               and not (f.name in NNUNET_DEFAULTS and getattr(self, f.name) == NNUNET_DEFAULTS[f.name])}
        out.update(dataclasses.asdict(self.diffusion))
        for name, unset in (("roi", None), ("mask", None), ("mask_level", None), ("tta_rotate", 0.0),
                            ("ensemble_mean", "arithmetic"), ("runtime", "auto"), ("normalize", None),
                            ("activation", None)):  # only when set: other runs' files stay as they were
            if out[name] == unset:
                del out[name]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    def fingerprint(self, *, model_sha256: str, volume: str, volume_stamp, volume_shape, stride, kind: str,
                    conditions: tuple = (), support: dict | None = None) -> dict:
        """The settings a resumable output records and compares (keys and order as in 0.x outputs).

        ``self`` is the resolved object (patch, amp and chunks as run); the arguments are the
        facts of this model and input; ``support`` those of ``--roi``/``--mask``
        (:func:`volseg.inference.support.build_support`), recorded only when set.
        """
        out: dict[str, Any] = {
            "model_sha256": model_sha256, "volume": volume, "volume_stamp": volume_stamp,
            "volume_shape": list(volume_shape), "patch": list(self.patch or ()), "overlap": float(self.overlap),
            "stride": list(stride), "tta": self.tta, "amp": self.amp, "skip_value": self.skip_value,
            "chunks": list(self.chunks), "blend": self.blend_settings(), "pad": self.pad, "kind": kind}
        if self.nan_value is not None:
            out["nan_value"] = self.nan_value
        if self.tta_rotate:  # only then: fingerprints without rotations stay as they were
            out["tta_rotate"] = self.tta_rotate
        for name in ("normalize", "activation"):  # foreign ONNX files only: other fingerprints unchanged
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if conditions:  # only then: the settings of single-input runs stay as they were
            names, stamps = zip(*conditions)
            out["condition"] = list(names)
            out["condition_stamps"] = list(stamps)
        out.update(support or {})  # only with --roi/--mask: other outputs keep their fingerprint
        return out

    def nnunet_options(self) -> dict:
        """The nnU-Net keys that differ from their defaults, by CLI option name."""
        return {NNUNET_OPTIONS[k]: getattr(self, k) for k, v in NNUNET_DEFAULTS.items() if getattr(self, k) != v}

    def blend_settings(self) -> dict:
        """The blend as patch stores and fingerprints record it."""
        return {"mode": self.blend, "sigma_scale": self.sigma_scale}


#: The nnU-Net settings and their defaults (a volseg run refuses any other value).
NNUNET_DEFAULTS = {"folds": None, "checkpoint": "final", "label": None, "trust_checkpoint": False,
                   "spacing": "check"}
NNUNET_OPTIONS = {"folds": "--folds", "checkpoint": "--checkpoint", "label": "--label",
                  "trust_checkpoint": "--trust-checkpoint", "spacing": "--ignore-spacing"}


def parse_folds(value) -> tuple[int | str, ...] | None:
    """``--folds``: ``0,1,4`` (or a list), ``all`` for the fold_all model; None = every fold present."""
    if value is None:
        return None
    items = value if isinstance(value, (list, tuple)) else str(value).replace(" ", "").split(",")
    out = []
    for item in items:
        text = str(item).strip().lower()
        if text == "all":
            out.append("all")
        elif text.isdigit():
            out.append(int(text))
        else:
            raise VolsegError("--folds", f"{value!r} is not a list of fold numbers; use e.g. --folds 0,1,4 "
                              "(or 'all' for fold_all)")
    if len(set(out)) != len(out):
        raise VolsegError("--folds", f"{value!r} names a fold twice")
    return tuple(out) or None


def parse_nnunet_options(v: dict) -> dict:
    """Validate the nnU-Net keys of a settings mapping (see :class:`PredictSettings`)."""
    checkpoint = str(v["checkpoint"]).strip().lower()
    if checkpoint not in ("final", "best"):
        raise VolsegError("--checkpoint", f"{v['checkpoint']!r} is not final or best")
    spacing = str(v["spacing"]).strip().lower()
    if spacing not in ("check", "ignore"):
        raise VolsegError("--ignore-spacing", f"spacing policy {v['spacing']!r} is not check or ignore")
    label = None if v["label"] is None else str(v["label"]).strip()
    if label == "":
        raise VolsegError("--label", "is empty; name a label of the model's dataset.json, or argmax")
    return {"folds": parse_folds(v["folds"]), "checkpoint": checkpoint, "label": label,
            "trust_checkpoint": bool(v["trust_checkpoint"]), "spacing": spacing}


#: Keys of a settings file (and of :func:`from_sources`) that belong to the sampler and output.
DIFFUSION_KEYS = tuple(f.name for f in dataclasses.fields(DiffusionSettings))
OUTPUT_KEYS = tuple(f.name for f in dataclasses.fields(OutputOptions))


def from_sources(flags: dict, *, config: str | os.PathLike | None = None) -> tuple[PredictSettings, OutputOptions]:
    """Settings and output options from defaults < the YAML ``config`` < ``flags``.

    ``flags`` holds only the options given explicitly (the CLI leaves out the ones at their
    defaults); ``config`` is a file as :func:`settings_text` writes it (keys of
    :meth:`PredictSettings.to_dict` and ``dtype``/``threshold``/``channel``; a top-level
    ``predict:`` mapping is accepted too).
    """
    values = {**(read_config(config) if config is not None else {}), **flags}
    diffusion = {k: values.pop(k) for k in DIFFUSION_KEYS if k in values}
    output = {k: values.pop(k) for k in OUTPUT_KEYS if k in values}
    return PredictSettings.parse(diffusion=diffusion, **values), OutputOptions.parse(**output)


def read_config(path: str | os.PathLike) -> dict:
    """The mapping of a predict settings YAML file (``--config``), checked to be one."""
    import yaml

    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except FileNotFoundError:
        raise VolsegError(path, "no such settings file (--config)") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise VolsegError(path, f"is not a readable YAML settings file: {' '.join(str(exc).split())}") from None
    if isinstance(data, dict) and isinstance(data.get("predict"), dict):
        data = data["predict"]
    if not isinstance(data, dict):
        raise VolsegError(path, "must hold a mapping of predict settings such as `patch: 64`")
    data = {str(k).replace("-", "_"): v for k, v in data.items() if k not in ("run", "volume", "volseg")}
    known = {f.name for f in dataclasses.fields(PredictSettings)} | set(DIFFUSION_KEYS) | set(OUTPUT_KEYS)
    unknown = sorted(set(data) - known)
    if unknown:
        raise VolsegError(path, f"unknown predict setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return data


def settings_text(settings: PredictSettings, output: OutputOptions, *, run: str, volume: str) -> str:
    """The YAML written inside every new predict output (:data:`SETTINGS_FILE`); rerun with ``volseg predict RUN VOLUME -o OUT --config FILE``."""
    import yaml

    from volseg import __version__

    body = {**settings.to_dict(), **dataclasses.asdict(output)}
    return (f"# volseg {__version__}: the resolved settings of `volseg predict {run} {volume}`.\n"
            "# Repeat the prediction with `volseg predict RUN VOLUME -o OUT --config THIS_FILE`.\n"
            + yaml.safe_dump(body, sort_keys=False, default_flow_style=None))


EXECUTION_KEYS = ("scheduler", "workers", "part", "overwrite", "quiet")


def predict_options(**options) -> tuple:
    """Loose keyword options (as ``volseg predict``'s flags) -> ``(settings, output_options, execution)``.

    For scripts and notebooks: ``predict(run, volume, out, *predict_options(patch=64, stitch=True))``.

    Examples
    --------
    >>> settings, output, execution = predict_options(patch=32, threshold=0.5, workers=1)
    >>> settings.patch, output.threshold, execution.workers
    ((32, 32, 32), 0.5, 1)
    """
    from volseg.parallel import Execution

    execution = Execution.parse(**{k: options.pop(k) for k in EXECUTION_KEYS if k in options})
    return (*from_sources(options), execution)
