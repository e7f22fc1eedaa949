"""volseg: out-of-core 3D patch segmentation and image translation for huge volumes.

The commands of the ``volseg`` CLI are thin wrappers over these functions (imported lazily, so
``import volseg`` is cheap and pulls in neither torch nor dask until a function is used)::

    import volseg
    vol = volseg.open_volume("scroll.zarr")            # lazy dask array, axes (z, y, x)
    model = volseg.load_model("runs/unet")              # torch module, raw voxels -> probabilities
    volseg.predict("runs/unet", "scroll.zarr", "pred.zarr", volseg.PredictSettings.parse(stitch=True))
    scores = volseg.evaluate("pred.zarr", "scroll.zarr/labels/surface")

=================  ===========================================  ===================
function           what it does                                 command
=================  ===========================================  ===================
open_volume        any supported input as a lazy (z, y, x) array  --
read_meta          shape, dtype, chunks, spacing, levels          --
prepare            convert a volume to chunked OME-Zarr           ``volseg prepare``
volume_info        figures about a volume                         ``volseg info``
write_synth        synthetic scroll / scan with ground truth      ``volseg synth``
patchify           cut 3D patches into a patch store              ``volseg patchify``
train              fit a UNet3D or a conditional diffusion model  ``volseg train``
load_model         a trained model, ready to call                 --
export_model       a UNet run as .onnx / .pt2 / .ts               ``volseg export``
load_exported      an exported model file, ready to call          --
predict            run a model over every patch of a volume       ``volseg predict``
PredictSettings    how predict runs (parse once, pass whole)      ``predict`` options
OutputOptions      dtype / threshold / channel of the output      ``--dtype`` ...
Execution          scheduler, workers, part, overwrite, quiet     ``--scheduler`` ...
predict_options    loose flag-like keywords -> the three objects  --
stitch             blend a patch store back into a volume         ``volseg stitch``
evaluate           streamed metrics against the truth             ``volseg evaluate``
bench_memory       peak memory per patch size / amp / checkpoint  ``volseg bench-memory``
run_demo           the whole journey on synthetic data            ``volseg demo``
=================  ===========================================  ===================
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_API = {
    "open_volume": "volseg.io",
    "read_meta": "volseg.io",
    "write_volume": "volseg.io",
    "prepare": "volseg.io",
    "volume_info": "volseg.io",
    "write_synth": "volseg.data.synth",
    "patchify": "volseg.data.patchify",
    "train": "volseg.training",
    "load_model": "volseg.models",
    "export_model": "volseg.models.export",
    "load_exported": "volseg.models.exported",
    "predict": "volseg.inference",
    "stitch": "volseg.inference",
    "PredictSettings": "volseg.inference.settings",
    "DiffusionSettings": "volseg.inference.settings",
    "OutputOptions": "volseg.inference.output",
    "predict_options": "volseg.inference.settings",
    "Execution": "volseg.parallel",
    "evaluate": "volseg.metrics",
    "bench_memory": "volseg.bench",
    "run_demo": "volseg.demo",
    "VolsegError": "volseg.errors",
}

__all__ = sorted(_API) + ["__version__"]


def __getattr__(name: str):
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'volseg' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
