"""Label repairs of a one-sheet truth: small fragments and wrap contacts become ignore (2)."""

import numpy as np

from volseg.data.sheet_topology import drop_fragments, separate_wraps


def test_fragments_and_touching_wraps_become_ignore():
    labels = np.zeros((6, 12, 12), np.uint8)
    labels[1:5, 1:11, 1:6] = 1      # the sheet
    labels[2, 2, 9] = 1             # a speck cut off from it
    drop_fragments(labels, fraction=0.02)
    assert labels[2, 2, 9] == 2 and (labels[1:5, 1:11, 1:6] == 1).all()
    labels = np.zeros((4, 4, 6), np.uint8)
    labels[:, :, 1:5] = 1
    wrap = np.zeros(labels.shape, np.int32)
    wrap[:, :, 3:] = 1              # two wraps meeting between x = 2 and x = 3
    separate_wraps(labels, wrap)
    assert (labels[:, :, 2:4] == 2).all() and (labels[:, :, 1] == 1).all() and (labels[:, :, 4] == 1).all()
