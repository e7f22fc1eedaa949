"""Streamed clean-up of a prediction: threshold / hysteresis, small components, cavities.

:mod:`.kernels` holds the block kernels (numpy, scikit-image) and the whole-volume reference
:func:`postprocess_array`; :mod:`.options` validates the settings; :mod:`.run` builds the two
streamed passes (global labelling, then writing) on a Dask scheduler.
"""

from volseg.postprocess.kernels import Binarise, postprocess_array
from volseg.postprocess.options import (DEFAULT_CLOSE, DEFAULT_FILL_HOLES, DEFAULT_MIN_SIZE, DEFAULT_OPEN,
                                        Options, parse_hysteresis)
from volseg.postprocess.run import postprocess

__all__ = ["postprocess", "postprocess_array", "Binarise", "Options", "parse_hysteresis",
           "DEFAULT_MIN_SIZE", "DEFAULT_CLOSE", "DEFAULT_OPEN", "DEFAULT_FILL_HOLES"]
