"""GroupNorm group counts and the per-channel Standardize layer (and its inverse)."""

import torch

from volseg.models.normalize import Standardize, group_count, group_norm


def test_group_counts_divide_the_channels():
    assert [group_count(c) for c in (1, 4, 6, 16, 64)] == [1, 2, 3, 8, 8]
    assert group_count(64, max_groups=32) == 32 and group_norm(12).num_groups == 6


def test_standardize_round_trips_per_channel():
    layer = Standardize(2, mean=[10.0, -1.0], std=[2.0, 0.5])
    x = torch.randn(3, 2, 4, 4, 4, dtype=torch.float64) * 5
    y = layer(x)
    torch.testing.assert_close(y[:, 0], (x[:, 0] - 10) / 2)
    torch.testing.assert_close(layer.inverse(y), x)
    assert "mean" not in layer.state_dict()  # statistics are not saved as weights
