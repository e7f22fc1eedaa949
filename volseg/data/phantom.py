"""A paired low-dose / clean 3D head phantom for image-translation training (``synth scan``)."""

from __future__ import annotations

import math

import numpy as np

from volseg.data.fields import _aniso_noise, _low_freq, _parse_shape

_SCAN_PSNR = 21.0          # target PSNR (dB) of the degraded scan against the clean one

# (A, semi-axes a, b, c, centre x0, y0, z0, rotation about z in degrees): the 3D modified
# Shepp-Logan head phantom (Kak & Slaney) in [-1, 1]^3, values in [0, 1].
_SHEPP_LOGAN = (
    (1.0, 0.6900, 0.920, 0.810, 0.00, 0.0000, 0.00, 0.0),
    (-0.8, 0.6624, 0.874, 0.780, 0.00, -0.0184, 0.00, 0.0),
    (-0.2, 0.1100, 0.310, 0.220, 0.22, 0.0000, 0.00, -18.0),
    (-0.2, 0.1600, 0.410, 0.280, -0.22, 0.0000, 0.00, 18.0),
    (0.1, 0.2100, 0.250, 0.410, 0.00, 0.3500, -0.15, 0.0),
    (0.1, 0.0460, 0.046, 0.050, 0.00, 0.1000, 0.25, 0.0),
    (0.1, 0.0460, 0.046, 0.050, 0.00, -0.1000, 0.25, 0.0),
    (0.1, 0.0460, 0.023, 0.050, -0.08, -0.6050, 0.00, 0.0),
    (0.1, 0.0230, 0.023, 0.020, 0.00, -0.6060, 0.00, 0.0),
    (0.1, 0.0230, 0.046, 0.020, 0.06, -0.6050, 0.00, 0.0),
)


def _add_ellipsoid(vol, value, axes, centre, angle) -> None:
    """Add ``value`` inside an ellipsoid given in normalised [-1, 1] coordinates (x, y, z)."""
    nz, ny, nx = vol.shape
    a, b, c = axes
    x0, y0, z0 = centre
    reach = max(a, b)
    spans = []
    for n, lo, hi in ((nz, z0 - c, z0 + c), (ny, y0 - reach, y0 + reach), (nx, x0 - reach, x0 + reach)):
        i0 = max(0, int(math.floor((lo + 1) / 2 * (n - 1))))
        i1 = min(n, int(math.ceil((hi + 1) / 2 * (n - 1))) + 1)
        spans.append(slice(i0, i1))
    if any(s.start >= s.stop for s in spans):
        return
    z = np.linspace(-1, 1, nz, dtype=np.float32)[spans[0], None, None] - z0
    y = np.linspace(-1, 1, ny, dtype=np.float32)[None, spans[1], None] - y0
    x = np.linspace(-1, 1, nx, dtype=np.float32)[None, None, spans[2]] - x0
    cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    u, v = x * cos + y * sin, y * cos - x * sin
    inside = (u / a) ** 2 + (v / b) ** 2 + (z / c) ** 2 <= 1.0
    vol[tuple(spans)] += np.float32(value) * inside


def synth_scan(shape=(96, 96, 96), *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A paired low-dose / clean scan of a smooth anatomical phantom, for image translation.

    The clean volume is a 3D modified Shepp-Logan head (ellipsoids of different intensities),
    jittered by the seed (centres, sizes, angles, intensities) plus a few small random lesions,
    with smooth multiplicative texture inside the head and softened edges; values in [0, 1].
    The degraded volume models a low-dose acquisition: Gaussian blur (sigma 1 voxel), Poisson
    photon noise and Gaussian read-out noise. Its PSNR against the clean volume (data range 1)
    is about 21 dB (the dose is set from the phantom to reach it).

    Parameters
    ----------
    shape : int, str or sequence of int
        Volume shape (z, y, x) in voxels, each side >= 16.
    seed : int
        Seed of ``np.random.default_rng``.

    Returns
    -------
    degraded : numpy.ndarray
        float32 (z, y, x), the low-dose scan (roughly [0, 1], noise may leave it slightly).
    clean : numpy.ndarray
        float32 (z, y, x) in [0, 1].
    """
    from scipy.ndimage import gaussian_filter

    shape = _parse_shape(shape)
    rng = np.random.default_rng(seed)
    clean = np.zeros(shape, np.float32)
    for k, (value, a, b, c, x0, y0, z0, angle) in enumerate(_SHEPP_LOGAN):
        scale = rng.uniform(0.93, 1.07, 3) if k > 1 else np.full(3, rng.uniform(0.96, 1.04))
        shift = rng.uniform(-0.03, 0.03, 3) if k > 1 else np.zeros(3)
        value = value + (rng.uniform(-0.04, 0.04) if k > 1 else 0.0)
        _add_ellipsoid(clean, value, (a * scale[0], b * scale[1], c * scale[2]),
                       (x0 + shift[0], y0 + shift[1], z0 + shift[2]), angle + rng.uniform(-8, 8))
    for _ in range(int(rng.integers(3, 7))):            # lesions
        r = rng.uniform(0.03, 0.09, 3)
        centre = rng.uniform(-0.45, 0.45, 3)
        _add_ellipsoid(clean, rng.choice([-0.12, 0.12, 0.2]), r, centre, rng.uniform(0, 180))
    head = clean > 0.05
    texture = 0.08 * _low_freq(rng, shape, (6, 6, 6)) + 0.03 * _aniso_noise(rng, shape, 2.0)
    clean = np.where(head, clean * (1.0 + texture), clean)
    clean = np.clip(gaussian_filter(clean, 0.6), 0.0, 1.0).astype(np.float32)

    blurred = np.clip(gaussian_filter(clean, 1.0), 0.0, None)
    # Low dose: photons per unit intensity chosen so the expected MSE (blur + Poisson + read-out)
    # gives _SCAN_PSNR dB whatever the phantom's size and brightness.
    budget = 10.0 ** (-_SCAN_PSNR / 10.0) - float(np.mean((blurred - clean) ** 2)) - 0.02**2
    photons = float(np.clip(float(blurred.mean()) / max(budget, 1e-6), 5.0, 1000.0))
    degraded = rng.poisson(blurred * photons).astype(np.float32) / np.float32(photons)
    degraded += 0.02 * rng.standard_normal(shape, dtype=np.float32)
    return degraded.astype(np.float32), clean
