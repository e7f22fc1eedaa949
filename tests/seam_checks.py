"""Material for the seam tests of the UNet (test_seams.py) and of diffusion sampling
(test_diffusion_sampling.py): a smooth condition, the image it translates to, and runs trained
for a few seconds to follow that translation, so a seam stands out against a smooth output
(voxel-wise noise would hide one). Axis order (z, y, x), sizes in voxels.
"""

from __future__ import annotations

import numpy as np

#: Below this :func:`volseg.metrics.seams.seam_ratio` shows no seam; patches cut hard
#: (``--overlap 0``) score 1.45-2.3 with these runs, blended ones 0.93-1.06.
NO_SEAM = 1.15
#: At least this for patches cut hard, so the measure is seen to find a seam here.
HARD_CUT = 1.3


def smooth_field(seed: int, shape) -> np.ndarray:
    """Gaussian-filtered noise (sigma 3 voxels, periodic), standardised, float32."""
    from scipy.ndimage import gaussian_filter

    field = gaussian_filter(np.random.default_rng(seed).normal(size=shape), 3.0, mode="wrap")
    return (field / field.std()).astype(np.float32)


def translate(condition: np.ndarray) -> np.ndarray:
    """The target image of a condition: a smooth, saturating intensity map (mean 2, range 3)."""
    return (2.0 + 3.0 * np.tanh(condition)).astype(np.float32)


def _batches(patch: int, steps: int, batch: int = 4):
    """``steps`` batches of ``batch`` random (1, patch, patch, patch) crops of one smooth field."""
    field = smooth_field(1, (48, 48, 48))
    rng = np.random.default_rng(2)
    for _ in range(steps):
        corners = rng.integers(0, 48 - patch, size=(batch, 3))
        crops = np.stack([field[z:z + patch, y:y + patch, x:x + patch] for z, y, x in corners])[:, None]
        yield crops, translate(crops)


def _save(path, cfg: dict, model):
    import torch

    path.mkdir(parents=True, exist_ok=True)
    torch.save({"format": "volseg-run", "version": 1, "model_config": cfg, "state_dict": model.state_dict()},
               path / "model.pt")
    return path


def train_unet(path, *, patch: int = 8, steps: int = 60):
    """A run of an image-regression UNet3D (L1) trained ``steps`` Adam steps on :func:`translate`."""
    import torch

    from volseg.models import build_model

    torch.manual_seed(0)
    cfg = {"type": "unet", "in_channels": 1, "out_ch": 1, "ch": 4, "depth": 2, "norm_mean": 0.0,
           "norm_std": 1.0, "output": "image", "target_mean": 2.0, "target_std": 3.0}
    model = build_model(cfg)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    for crops, target in _batches(patch, steps):
        loss = torch.nn.functional.l1_loss(model.logits(torch.from_numpy(crops)),
                                           model.normalize_target(torch.from_numpy(target)))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return _save(path, cfg, model)


def train_diffusion(path, *, patch: int = 8, steps: int = 40, prediction: str = "x0"):
    """A run of the tiny diffusion model of conftest (timesteps 0/333/666/999) trained ``steps``
    Adam steps of the Fast-DDPM loss on :func:`translate`."""
    import torch

    from volseg.models import build_model
    from volseg.training.loop import diffusion_step_loss

    torch.manual_seed(0)
    cfg = {"type": "diffusion", "in_channels": 2, "out_ch": 1, "ch": 8, "ch_mult": [1, 2],
           "num_res_blocks": 1, "attn": False, "target_mean": 2.0, "target_std": 3.0,
           "schedule": {"timesteps": [0, 333, 666, 999], "prediction": prediction}}
    model = build_model(cfg)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for crops, target in _batches(patch, steps):
        loss = diffusion_step_loss(model, {"image": torch.from_numpy(crops), "target": torch.from_numpy(target)},
                                   generator)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return _save(path, cfg, model.eval())
