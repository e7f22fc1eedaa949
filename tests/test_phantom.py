"""synth_scan: a seeded clean/degraded pair in [0, 1] whose PSNR is about 21 dB."""

import numpy as np

from volseg.data.phantom import synth_scan
from volseg.metrics.intensity import psnr


def test_seeded_pair_near_21_db():
    degraded, clean = synth_scan((32, 32, 32), seed=1)
    again, _ = synth_scan((32, 32, 32), seed=1)
    assert degraded.shape == clean.shape == (32, 32, 32)
    assert np.array_equal(degraded, again) and 0.0 <= clean.min() and clean.max() <= 1.0
    assert 17.0 <= psnr(degraded, clean, data_range=1.0) <= 25.0
