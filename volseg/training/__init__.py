"""Training: config validation, losses, the training loop, the run directory.

``train(source, run_dir, *, model_type, config_path, overrides, resume, overwrite, quiet)`` is
what ``volseg train`` calls; ``resolve`` builds and validates the config on its own.
"""

from volseg.training.config import defaults, resolve
from volseg.training.trainer import train

__all__ = ["defaults", "resolve", "train"]
