"""An nnU-Net v2 model folder as a patch model: :class:`NnunetModel`.

nnU-Net's predictor (``nnUNetPredictor.predict_logits_from_preprocessed_data``) adds the
gaussian-weighted *logits* of every tile, per fold, divides by the summed weights, averages the
folds' logit maps and applies softmax (sigmoid for region-based models) once at the end. Because
that is linear in the logits up to the last step, a tiler that wants nnU-Net's numbers blends
:meth:`NnunetModel.logits` (averaged over mirrors and folds) and calls
:meth:`NnunetModel.activation` on the blended map; :meth:`NnunetModel.probabilities` is the
per-patch shortcut for callers that blend probabilities instead (close to, not equal to,
nnU-Net in the overlaps).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from volseg.errors import VolsegError
from volseg.models.nnunet import folder as mf
from volseg.models.nnunet import network as mn
from volseg.models.nnunet.normalization import (NEEDS_STATS, SCHEMES, ChannelStats,
                                                normalise_channel)


class NnunetModel:
    """A trained nnU-Net v2 folder: its folds' networks, normalisation, geometry and labels.

    Parameters
    ----------
    path : str or os.PathLike
        The folder ``Trainer__Plans__configuration`` (plans.json, dataset.json, fold_K/).
    folds : sequence of int or "all", optional
        Folds to ensemble; all folds with the checkpoint when omitted.
    checkpoint : {"final", "best"}
        ``checkpoint_final.pth`` or ``checkpoint_best.pth``.
    tta : bool
        Mirror over the checkpoint's ``inference_allowed_mirroring_axes`` (nnU-Net's order and
        averaging).
    device : str or torch.device
        Where the networks run.
    trust : bool
        Allow pickle code in checkpoints the weights-only loader refuses (see
        :func:`volseg.models.nnunet.folder.load_checkpoint`).

    Attributes
    ----------
    in_channels, out_channels : int
        Input channels (dataset.json ``channel_names``) and network outputs (labels or regions).
    labels : dict
        dataset.json's labels, name -> value (a tuple of values for a region), without ``ignore``.
    regions : bool
        Region-based (sigmoid per region) instead of softmax over labels.
    patch_size, spacing : tuple
        The configuration's patch size (voxels) and target spacing, in nnU-Net's (transposed) axes.
    transpose_forward, transpose_backward : tuple of int
        Spatial axis order nnU-Net trains in; apply ``transpose_forward`` to a (z, y, x) volume
        before tiling and ``transpose_backward`` to the result.
    mirror_axes : tuple of int
        Spatial axes mirrored for TTA (empty when ``tta`` is False or the checkpoint allows none).
    folds : list
        The folds used, in order.
    """

    def __init__(self, path: str | os.PathLike, folds: Sequence[int | str] | None = None,
                 checkpoint: str = "final", tta: bool = True, device: Any = "cpu", trust: bool = False):
        import torch

        self.path = mf.folder_exists(path)
        self.plans_path, self.dataset_path = self.path / "plans.json", self.path / "dataset.json"
        self.plans = mf.read_json(self.plans_path, "plans.json (nnU-Net's plans)")
        self.dataset = mf.read_json(self.dataset_path, "dataset.json (channels and labels)")
        self.checkpoint = checkpoint
        paths = mf.checkpoint_paths(self.path, None if folds is None else list(folds), checkpoint)
        self.folds = list(paths)
        self.checkpoint_files = list(paths.values())
        checkpoints = [mf.load_checkpoint(p, trust=trust) for p in self.checkpoint_files]
        first = checkpoints[0]
        self.trainer = str(first["trainer_name"])
        named = mf.split_folder_name(self.path)
        init_args = first.get("init_args") if isinstance(first.get("init_args"), dict) else {}
        self.configuration = init_args.get("configuration") or (named[2] if named else None)
        if not self.configuration:
            raise VolsegError(self.checkpoint_files[0], "names no configuration (init_args) and the folder "
                                                        "is not named Trainer__Plans__configuration")
        for p, ck in zip(self.checkpoint_files[1:], checkpoints[1:]):
            other = (ck.get("init_args") or {}).get("configuration", self.configuration)
            if ck["trainer_name"] != self.trainer or other != self.configuration:
                raise VolsegError(p, f"was trained by {ck['trainer_name']} ({other}), fold "
                                     f"{self.folds[0]} by {self.trainer} ({self.configuration}); "
                                     "ensemble folds of one model only")
        mn.check_trainer(self.trainer, self.checkpoint_files[0])
        config = mf.resolve_configuration(self.plans, self.configuration, self.plans_path)
        self.labels, self.regions = mf.labels_of(self.dataset, self.dataset_path)
        self.regions_class_order = tuple(self.dataset.get("regions_class_order") or ())
        if self.regions and len(self.regions_class_order) != len(self._heads()):
            raise VolsegError(self.dataset_path, "region-based labels need regions_class_order with one "
                                                 "entry per region")
        self.in_channels = mf.channel_count(self.dataset, self.dataset_path)
        self.out_channels = len(self._heads())
        self.patch_size = tuple(int(s) for s in config["patch_size"])
        self.spacing = tuple(float(s) for s in config["spacing"])
        self.transpose_forward = tuple(int(a) for a in self.plans.get("transpose_forward", range(3)))
        self.transpose_backward = tuple(int(a) for a in self.plans.get("transpose_backward", range(3)))
        self._read_normalisation(config)
        self.mirror_axes = tuple(first.get("inference_allowed_mirroring_axes") or ()) if tta else ()
        self._mirrors = mn.mirror_combinations(self.mirror_axes)
        base = mn.build_network(config.get("architecture"), self.in_channels, self.out_channels,
                                self.trainer, self.plans_path)
        self.networks = []
        for p, ck in zip(self.checkpoint_files, checkpoints):
            net = copy.deepcopy(base) if self.networks else base
            mn.load_weights(net, ck["network_weights"], p, self.trainer)
            self.networks.append(net.to(torch.device(device)).eval())
        self.device = torch.device(device)

    # ----------------------------------------------------------------- labels
    def _heads(self) -> list:
        values = [v for k, v in self.labels.items()]
        if not self.regions:
            return sorted({int(v) for v in values})
        return [v for v in values if not (v == 0 or (isinstance(v, tuple) and set(v) == {0}))]

    def label_channel(self, name: str | None = None) -> int:
        """Output channel of label ``name`` (default: the first foreground label or region)."""
        heads = self._heads()
        if name is None:
            return 0 if self.regions else 1
        if name not in self.labels or name == "background" and self.regions:
            names = ", ".join(k for k in self.labels if k != "background" or not self.regions)
            raise VolsegError("--label", f"{name!r} is not a label of {self.dataset_path} (labels: {names})")
        return heads.index(self.labels[name])

    # ---------------------------------------------------------- normalisation
    def _read_normalisation(self, config: Mapping) -> None:
        schemes = list(config.get("normalization_schemes") or [])
        masks = list(config.get("use_mask_for_norm") or [False] * len(schemes))
        props = self.plans.get("foreground_intensity_properties_per_channel") or {}
        if len(schemes) != self.in_channels or len(masks) != self.in_channels:
            raise VolsegError(self.plans_path, f"normalization_schemes/use_mask_for_norm name {len(schemes)}/"
                                               f"{len(masks)} channels, dataset.json {self.in_channels}; use "
                                               "the plans.json and dataset.json of one model")
        for c, scheme in enumerate(schemes):
            if scheme not in SCHEMES:
                raise VolsegError(self.plans_path, f"channel {c} uses normalisation {scheme!r}, which volseg "
                                                   f"does not have (it has {', '.join(SCHEMES)})")
            if scheme == "CTNormalization" and str(c) not in props:
                raise VolsegError(self.plans_path, f"CTNormalization of channel {c} needs "
                                                   "foreground_intensity_properties_per_channel")
        self.normalization_schemes = tuple(schemes)
        self.use_mask_for_norm = tuple(bool(m) for m in masks)
        self.intensity_properties = tuple(props.get(str(c)) for c in range(self.in_channels))

    @property
    def needs_stats(self) -> tuple[bool, ...]:
        """Per channel: whether normalising needs whole-image statistics (a streamed pass first)."""
        return tuple(s in NEEDS_STATS for s in self.normalization_schemes)

    def check_channels(self, count: int, where: str | os.PathLike | None) -> None:
        """Raise when an input has ``count`` channels and the model expects another number."""
        if count != self.in_channels:
            names = ", ".join(str(v) for v in (self.dataset.get("channel_names") or {}).values())
            raise VolsegError(where, f"has {count} channel(s), the model's {self.dataset_path} names "
                                     f"{self.in_channels} ({names}); pass an input with those channels")

    def normalise(self, array: np.ndarray, stats: Sequence[ChannelStats | None] | None = None,
                  mask: np.ndarray | None = None, where: str | os.PathLike | None = None) -> np.ndarray:
        """Normalise a (C, z, y, x) array per channel as the plans say; returns float32.

        Parameters
        ----------
        array : numpy.ndarray
            Raw voxels, channel first, already cropped/transposed as the caller tiles them.
        stats : sequence of ChannelStats or None, optional
            Per channel, statistics of the whole image for ZScore/RescaleTo01 schemes (from a
            streamed pass); computed from ``array`` where None, which is nnU-Net's behaviour
            when ``array`` is the whole cropped case.
        mask : numpy.ndarray of bool, optional
            The filled nonzero mask (``nnunet_grid.nonzero_mask``) for channels with
            ``use_mask_for_norm``; they are normalised inside it only, and it is required for
            them (ValueError without it). ``binary_fill_holes`` is global: a streamed caller
            must fill holes on the whole mask (e.g. at a coarse level) before cutting blocks.
        where : str or path, optional
            Input named in the channel-count error.
        """
        self.check_channels(array.shape[0], where)
        out = np.empty(array.shape, dtype=np.float32)
        for c, scheme in enumerate(self.normalization_schemes):
            use_mask = self.use_mask_for_norm[c] and scheme == "ZScoreNormalization"
            if use_mask and mask is None:
                raise ValueError(f"channel {c} is normalised inside the nonzero mask (use_mask_for_norm): "
                                 "pass mask=nnunet_grid.nonzero_mask(...) of the same crop")
            out[c] = normalise_channel(array[c], scheme, self.intensity_properties[c],
                                       stats[c] if stats is not None else None,
                                       mask if use_mask else None)
        return out

    # -------------------------------------------------------------- inference
    def logits(self, batch, fold: int | None = None):
        """Logits of a (N, C, z, y, x) float32 batch, averaged over mirrors, then folds.

        ``fold`` (an index into :attr:`folds`) restricts to one fold, as nnU-Net's predictor
        does when it tiles fold by fold. Returns a float32 torch tensor on :attr:`device`.
        """
        import torch

        batch = torch.as_tensor(batch, dtype=torch.float32).to(self.device)
        if batch.ndim != 5:
            raise ValueError(f"expected a (N, C, z, y, x) batch, got shape {tuple(batch.shape)}")
        self.check_channels(int(batch.shape[1]), None)
        nets = self.networks if fold is None else [self.networks[fold]]
        with torch.inference_mode():
            total = None
            for net in nets:
                part = mn.mirrored_logits(net, batch, self._mirrors).float()
                total = part if total is None else total + part
            return total / len(nets) if len(nets) > 1 else total

    def activation(self, logits, axis: int = 1):
        """Softmax over ``axis`` (sigmoid per channel for region-based models), in float32."""
        import torch

        logits = torch.as_tensor(logits).float()
        return torch.sigmoid(logits) if self.regions else torch.softmax(logits, axis)

    def probabilities(self, batch):
        """Per-patch probabilities: :meth:`activation` of :meth:`logits` (see the module docstring)."""
        return self.activation(self.logits(batch))

    def segmentation(self, probabilities, axis: int = 0) -> np.ndarray:
        """Label map from probabilities as nnU-Net: argmax, or regions above 0.5 in class order."""
        p = np.asarray(probabilities)
        if not self.regions:
            return np.argmax(p, axis=axis).astype(np.uint8 if self.out_channels <= 255 else np.uint16)
        p = np.moveaxis(p, axis, 0)
        seg = np.zeros(p.shape[1:], dtype=np.uint16)
        for i, value in enumerate(self.regions_class_order):
            seg[p[i] > 0.5] = value
        return seg

    # ------------------------------------------------------------- provenance
    def provenance(self) -> dict[str, Any]:
        """What an output should record: folder, trainer, plans, folds, TTA and weights' sha256."""
        from volseg.models.export import sha256_file as sha

        return {"kind": "nnunet", "folder": str(self.path), "trainer": self.trainer,
                "plans": self.plans.get("plans_name"), "configuration": self.configuration,
                "checkpoint": self.checkpoint, "folds": [str(f) for f in self.folds],
                "mirror_axes": list(self.mirror_axes), "patch_size": list(self.patch_size),
                "normalization": list(self.normalization_schemes),
                "weights_sha256": {str(f): sha(p) for f, p in zip(self.folds, self.checkpoint_files)}}
