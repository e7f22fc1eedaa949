"""postprocess blocks: a block read from the input (Zarr, directly), and smoothing with a halo
equal to smoothing the whole volume."""

import numpy as np

from volseg.io import write_volume
from volseg.postprocess.blocks import block_values, clear_caches, read_block, source
from volseg.postprocess.kernels import smooth_values
from volseg.postprocess.options import Options


def test_blocks_with_and_without_smoothing(tmp_path):
    values = np.random.default_rng(0).random((16, 16, 16)).astype(np.float32)
    write_volume(tmp_path / "p.zarr", values, chunks=8)
    path = str(tmp_path / "p.zarr")
    clear_caches()
    assert tuple(source(path).shape) == values.shape
    np.testing.assert_array_equal(read_block(path, (8, 0, 8), (16, 8, 16)), values[8:16, 0:8, 8:16])
    binarise = Options.parse(values.dtype, threshold=0.5, smooth=1.0).binarise
    raw, smoothed = block_values(path, (8, 8, 8), (16, 16, 16), values.shape, binarise)
    np.testing.assert_array_equal(raw, values[8:, 8:, 8:])
    np.testing.assert_allclose(smoothed, smooth_values(values, 1.0)[8:, 8:, 8:], atol=1e-6)
