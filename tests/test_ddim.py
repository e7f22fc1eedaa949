"""DDIM pieces: Fast-DDPM timesteps, and each prediction kind recovers (x0, eps) exactly."""

import pytest
import torch

from volseg.errors import VolsegError
from volseg.models.ddim import (alpha_at, alphas_cumprod_from_betas, check_prediction, linear_betas,
                                split_prediction, timestep_sequence, training_target)


def test_schedules():
    assert timestep_sequence("non-uniform", 10, 1000) == [0, 199, 399, 599, 699, 799, 849, 899, 949, 999]
    uniform = timestep_sequence("uniform", 10, 1000)
    assert uniform[0] == 0 and uniform[-1] == 999 and uniform == sorted(uniform)
    a = alphas_cumprod_from_betas(linear_betas())
    assert a.shape == (1000,) and bool((a[1:] < a[:-1]).all()) and alpha_at(a, -1) == 1.0


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_split_prediction_inverts_the_training_target(prediction):
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(2, 1, 4, 4, 4, generator=g, dtype=torch.float64), torch.randn(2, 1, 4, 4, 4, generator=g, dtype=torch.float64)
    a = 0.3
    x_t = a ** 0.5 * x0 + (1 - a) ** 0.5 * eps
    out = training_target(x0, eps, torch.tensor(a, dtype=torch.float64), prediction)
    got_x0, got_eps = split_prediction(x_t, out, a, prediction)
    torch.testing.assert_close(got_x0, x0)
    torch.testing.assert_close(got_eps, eps)


def test_unknown_prediction_is_named():
    with pytest.raises(VolsegError, match=r"^diffusion.prediction: unknown prediction 'noise'; use one of eps, x0, v"):
        check_prediction("noise")
