"""Noise schedule, Fast-DDPM timestep sequences and the DDIM sampler (pure functions).

The sampler is the 3D ``sg_generalized_steps`` of Fast-DDPM, fixed: it runs on the device of
its inputs, keeps only the current x_t (not the whole trajectory), and draws all noise from a
seedable CPU generator, so a seeded run gives the same result on any device.

The single-step functions :func:`predict_x0` and :func:`ddim_step` are exposed separately so a
patch-wise sampler can blend the model output over overlapping patches at every step and then
apply the step voxel-wise on the whole volume.

The denoiser predicts one of three quantities (``diffusion.prediction``), all affine in x_t at a
fixed timestep, so blending any of them across patches is the same as blending the others:

* ``eps``: the noise (Fast-DDPM, DDPM). x_0 = (x_t - sqrt(1 - a) eps) / sqrt(a), which
  multiplies the errors of eps by up to 1 / sqrt(a) (about 150 at t = 999 of the linear schedule).
* ``x0``: the clean target itself (WDM-3D's ``predict_xstart``, MONAI's ``sample``).
* ``v``: v = sqrt(a) eps - sqrt(1 - a) x_0 (Salimans & Ho 2022); x_0 = sqrt(a) x_t - sqrt(1 - a) v.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from volseg.errors import VolsegError

SCHEDULES = ("uniform", "non-uniform")
PREDICTIONS = ("eps", "x0", "v")


def linear_betas(beta_start: float = 1e-4, beta_end: float = 0.02,
                 num_timesteps: int = 1000) -> torch.Tensor:
    """Linear beta schedule (float64), shape (num_timesteps,)."""
    return torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64)


def alphas_cumprod_from_betas(betas: torch.Tensor) -> torch.Tensor:
    """prod_{s<=t} (1 - beta_s) as float32, shape (num_timesteps,)."""
    return torch.cumprod(1.0 - betas, dim=0).float()


def timestep_sequence(schedule: str = "uniform", steps: int = 10,
                      num_timesteps: int = 1000) -> list[int]:
    """The ascending timesteps Fast-DDPM trains and samples on.

    Parameters
    ----------
    schedule : {"uniform", "non-uniform"}
        ``uniform``: ``steps`` timesteps evenly spread over [0, T-1]. ``non-uniform``: 40% of the
        steps evenly in [0, 0.7 T), 60% evenly in [0.7 T, T-1] (for T=1000, steps=10 this is
        Fast-DDPM's [0, 199, 399, 599, 699, 799, 849, 899, 949, 999]).
    steps : int
        Number of timesteps (>= 2).
    num_timesteps : int
        T, the length of the beta schedule.

    Returns
    -------
    list of int
        Strictly increasing, first 0, last T - 1.
    """
    if schedule not in SCHEDULES:
        raise VolsegError("diffusion.scheduler_type",
                          f"unknown schedule {schedule!r}; use one of {', '.join(SCHEDULES)}")
    if not 2 <= steps <= num_timesteps:
        raise VolsegError("diffusion.timesteps",
                          f"{steps} sampling steps; use between 2 and {num_timesteps}")
    last = num_timesteps - 1
    if schedule == "uniform":
        seq = [round(i * last / (steps - 1)) for i in range(steps)]
    elif steps == 10 and num_timesteps == 1000:
        seq = [0, 199, 399, 599, 699, 799, 849, 899, 949, 999]
    else:
        knee = round(0.7 * last)
        n1 = int(steps * 0.4)
        n2 = steps - n1
        stage1 = [math.ceil(i * knee / n1) for i in range(n1)]
        stage2 = [math.ceil(knee + i * (last - knee) / (n2 - 1)) for i in range(n2)]
        seq = stage1 + stage2
    seq = sorted({int(t) for t in seq})
    if len(seq) != steps:
        raise VolsegError("diffusion.timesteps",
                          f"{steps} steps do not fit into {num_timesteps} timesteps with the "
                          f"{schedule} schedule; use fewer steps")
    return seq


def alpha_at(alphas_cumprod: torch.Tensor, t: int) -> float:
    """alpha_bar(t) as a Python float; 1.0 for t < 0 (the fully denoised end)."""
    return 1.0 if t < 0 else float(alphas_cumprod[int(t)])


def predict_x0(x_t: torch.Tensor, eps: torch.Tensor, a_t: float | torch.Tensor) -> torch.Tensor:
    """x_0 estimate from x_t and the predicted noise: (x_t - sqrt(1 - a_t) eps) / sqrt(a_t)."""
    a_t = torch.as_tensor(a_t, dtype=x_t.dtype, device=x_t.device)
    return (x_t - eps * (1.0 - a_t).sqrt()) / a_t.sqrt()


def check_prediction(prediction: str) -> str:
    """``diffusion.prediction``: one of :data:`PREDICTIONS`, else a VolsegError naming them."""
    if prediction not in PREDICTIONS:
        raise VolsegError("diffusion.prediction", f"unknown prediction {prediction!r}; use one of "
                          f"{', '.join(PREDICTIONS)}")
    return prediction


def split_prediction(x_t: torch.Tensor, output: torch.Tensor, a_t: float | torch.Tensor,
                     prediction: str = "eps") -> tuple[torch.Tensor, torch.Tensor]:
    """(x_0, eps) consistent with x_t from the denoiser's ``output`` of kind ``prediction``.

    Parameters
    ----------
    x_t, output : torch.Tensor
        Current sample and the model output (same shape, model units).
    a_t : float or torch.Tensor
        alpha_bar at the timestep of ``x_t``.
    prediction : {"eps", "x0", "v"}
        What ``output`` is (see the module docstring).
    """
    a = float(a_t)
    s0, s1 = a ** 0.5, (1.0 - a) ** 0.5
    if check_prediction(prediction) == "eps":
        return predict_x0(x_t, output, a), output
    if prediction == "x0":
        return output, (x_t - s0 * output) / s1
    return s0 * x_t - s1 * output, s1 * x_t + s0 * output


def training_target(x0: torch.Tensor, eps: torch.Tensor, a: torch.Tensor,
                    prediction: str = "eps") -> torch.Tensor:
    """What the denoiser learns to output for x_t = sqrt(a) x0 + sqrt(1 - a) eps.

    ``a`` broadcasts against ``x0`` (e.g. shape (N, 1, 1, 1, 1)); ``eps`` for ``"eps"``, ``x0``
    for ``"x0"``, ``sqrt(a) eps - sqrt(1 - a) x0`` for ``"v"``.
    """
    if check_prediction(prediction) == "eps":
        return eps
    if prediction == "x0":
        return x0
    return a.sqrt() * eps - (1.0 - a).sqrt() * x0


def ddim_step(x_t: torch.Tensor, eps: torch.Tensor, *, a_t: float | torch.Tensor,
              a_next: float | torch.Tensor, eta: float = 0.0,
              noise: torch.Tensor | None = None,
              clip: tuple[float, float] | None = None,
              prediction: str = "eps") -> torch.Tensor:
    """One generalized DDIM step from timestep t to the next (smaller) timestep.

    Parameters
    ----------
    x_t, eps : torch.Tensor
        Current sample and the model output, same shape: the predicted noise, or with
        ``prediction`` the predicted x_0 or v.
    a_t, a_next : float or torch.Tensor
        alpha_bar at t and at the next timestep (1.0 past the last step).
    eta : float
        Stochasticity: 0 = deterministic DDIM.
    noise : torch.Tensor, optional
        Standard normal noise like ``x_t``; required when ``eta > 0`` and the step is noisy.
    clip : (low, high), optional
        Clamp the x_0 estimate to this range (model units) and use the noise consistent with
        the clamped estimate, as guided-diffusion's DDIM does. Keeps the first steps, where
        x_0 = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t) divides by a tiny sqrt(a_t), from blowing
        up the trajectory of a briefly trained model.
    prediction : {"eps", "x0", "v"}
        What ``eps`` holds (see :func:`split_prediction`).

    Returns
    -------
    torch.Tensor
        x at the next timestep.
    """
    a_t = torch.as_tensor(a_t, dtype=torch.float64)
    a_next = torch.as_tensor(a_next, dtype=torch.float64)
    c1 = eta * ((1 - a_t / a_next) * (1 - a_next) / (1 - a_t)).clamp_min(0).sqrt()
    c2 = (1 - a_next - c1 ** 2).clamp_min(0).sqrt()
    x0, eps = split_prediction(x_t, eps, float(a_t), prediction)
    if clip is not None:
        x0 = x0.clamp(float(clip[0]), float(clip[1]))
        eps = (x_t - float(a_t.sqrt()) * x0) / float((1 - a_t).sqrt())
    x_next = float(a_next.sqrt()) * x0 + float(c2) * eps
    if float(c1) > 0:
        if noise is None:
            raise VolsegError("--eta", "eta > 0 needs a noise tensor for every DDIM step")
        x_next = x_next + float(c1) * noise.to(x_t.device, x_t.dtype)
    return x_next


def sample(eps_fn: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor],
           condition: torch.Tensor, *, shape: Sequence[int], timesteps: Sequence[int],
           alphas_cumprod: torch.Tensor, eta: float = 0.0,
           generator: torch.Generator | None = None,
           noise: torch.Tensor | None = None,
           clip: tuple[float, float] | None = None,
           prediction: str = "eps") -> torch.Tensor:
    """DDIM sampling over ``timesteps`` (descending), returning the final x_0 (model units).

    Parameters
    ----------
    eps_fn : callable
        ``eps_fn(condition, x_t, t) -> output`` with ``t`` a Python int: eps, or what
        ``prediction`` names.
    condition : torch.Tensor
        Normalised condition (N, C, z, y, x); its device is where sampling runs.
    shape : sequence of int
        Shape of x (N, out_ch, z, y, x).
    timesteps : sequence of int
        Ascending timesteps; sampling walks them from the last to the first, then to t = -1.
    alphas_cumprod : torch.Tensor
        alpha_bar for every timestep.
    eta : float
        DDIM eta.
    generator : torch.Generator, optional
        CPU generator for x_T and the eta noise.
    noise : torch.Tensor, optional
        x_T; drawn from ``generator`` when omitted.
    clip : (low, high), optional
        Range of the x_0 estimates (see :func:`ddim_step`).
    prediction : {"eps", "x0", "v"}
        What ``eps_fn`` returns.
    """
    device = condition.device
    x = noise if noise is not None else torch.randn(tuple(shape), generator=generator)
    x = x.to(device=device, dtype=torch.float32)
    seq = [int(t) for t in timesteps]
    seq_next = [-1] + seq[:-1]
    for t, t_next in zip(reversed(seq), reversed(seq_next)):
        eps = eps_fn(condition, x, t).float()
        a_t = alpha_at(alphas_cumprod, t)
        a_next = alpha_at(alphas_cumprod, t_next)
        step_noise = None
        if eta > 0 and t_next >= 0:
            step_noise = torch.randn(tuple(shape), generator=generator).to(device)
        x = ddim_step(x, eps, a_t=a_t, a_next=a_next, eta=eta, noise=step_noise, clip=clip,
                      prediction=prediction)
    return x
