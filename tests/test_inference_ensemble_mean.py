"""How an ensemble averages its members (:mod:`volseg.inference.ensemble_mean`)."""

import numpy as np
import pytest

from volseg.errors import VolsegError
from volseg.inference.ensemble_mean import combine, parse_ensemble_mean


def test_arithmetic_mean_is_the_plain_mean():
    rng = np.random.default_rng(0)
    members = [rng.random((2, 3, 4, 5), dtype=np.float32) for _ in range(3)]
    np.testing.assert_allclose(combine(members, "arithmetic"), np.mean(members, axis=0), rtol=1e-6)


def test_geometric_mean_of_one_channel_is_the_sigmoid_of_the_mean_logit():
    p = np.array([[0.1, 0.5, 0.9]], np.float32), np.array([[0.3, 0.5, 0.99]], np.float32)
    logit = np.mean([np.log(q / (1 - q)) for q in p], axis=0)
    np.testing.assert_allclose(combine(p, "geometric"), 1 / (1 + np.exp(-logit)), rtol=1e-5)


def test_geometric_mean_of_classes_is_a_distribution_and_certainty_does_not_veto():
    a = np.array([[1.0, 0.2], [0.0, 0.8]], np.float32)  # a certain member (0 for class 1 at voxel 0)
    b = np.array([[0.4, 0.5], [0.6, 0.5]], np.float32)
    g = combine([a, b], "geometric")
    np.testing.assert_allclose(g.sum(axis=0), 1.0, rtol=1e-6)
    assert 0 < g[1, 0] < 0.01  # clipped, not zero


@pytest.mark.parametrize("bad", ["median", "", "arith"])
def test_unknown_mean_names_the_option(bad):
    with pytest.raises(VolsegError, match="--ensemble-mean") as err:
        parse_ensemble_mean(bad)
    assert "arithmetic or geometric" in err.value.message
    assert parse_ensemble_mean(" Geometric ") == "geometric"
