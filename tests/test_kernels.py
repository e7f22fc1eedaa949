"""postprocess block kernels: 2D slice holes (tunnels) filled without bridging sheets, the
closing, and the whole-volume reference removing small components."""

import numpy as np

from volseg.postprocess.kernels import close_mask, fill_slice_holes, postprocess_array


def test_slice_holes_closing_and_min_size():
    sheets = np.zeros((7, 9, 9), bool)
    sheets[2], sheets[4] = True, True            # two parallel sheets, 1 voxel apart
    sheets[2, 4, 4] = False                      # a 1-voxel tunnel through the first
    filled = fill_slice_holes(sheets, 4)
    assert filled[2, 4, 4] and not filled[3].any()  # the tunnel is filled, the gap is not bridged
    slab = np.zeros((9, 9, 9), bool)
    slab[3:6] = True
    slab[3:6, 4, 4] = False                      # a 1-voxel tunnel through a 3-voxel slab
    closed = close_mask(slab, 1)
    assert closed[4, 4, 4] and (closed >= slab).all() and not closed[:3].any() and not closed[6:].any()
    assert not close_mask(sheets, 1)[2, 4, 4]    # a 1-voxel sheet gives the ball no support
    values = np.zeros((8, 8, 8), np.float32)
    values[1:6, 1:6, 1:6] = 0.9
    values[7, 7, 7] = 0.9                        # a speck
    out = postprocess_array(values, threshold=0.5, min_size=2)
    assert out.dtype == np.uint8 and out[1:6, 1:6, 1:6].all() and out[7, 7, 7] == 0 and out.sum() == 125
