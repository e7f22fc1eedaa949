"""A multi-contrast head phantom with a tumour: BraTS in miniature (``volseg synth brain``).

One anatomy per case, seen in three MRI-like contrasts that are *not* monotone maps of each
other (cerebrospinal fluid is dark in T1 and bright in T2; oedema is bright in FLAIR, where CSF
is suppressed), so translating one contrast into another needs the anatomy, not a lookup table.

Anatomy (tissue codes of :data:`TISSUES`): scalp, skull, CSF (a shell round the brain and two
ventricles), grey matter (a cortex of varying thickness), white matter, and one tumour: a
necrotic core inside an enhancing rim inside an irregular oedema. Each contrast is the tissue's
value (:data:`CONTRASTS`) with smooth texture, partial-volume blur (sigma 0.7 voxels), its own
smooth multiplicative bias field (+-10%) and Rician noise (magnitude of complex Gaussian noise,
sigma 0.03 of the white-matter T1 value).

Tumour labels follow BraTS: 0 outside the tumour, 1 necrotic core (NCR), 2 oedema (ED), 3
enhancing tumour (ET); they are nested: the core {1} lies inside the tumour core {1, 3}, which
lies inside the whole tumour {1, 2, 3}.

Volumes are (z, y, x) in voxels; case ``i`` of seed ``s`` is drawn from
``np.random.default_rng([s, i])``, so cases differ in anatomy and the same (shape, seed, case)
always gives the same arrays.

Store layout (:func:`write_brain`): ``OUT.zarr`` is a Zarr group of cases ``case_000``,
``case_001``, ...; each case is an OME-Zarr image whose root image is T1 (the condition),
``target`` is T2 and ``flair`` is FLAIR (image groups of their own), and ``labels/tumour`` the
NGFF label image. So ``volseg train OUT.zarr/case_0* --model diffusion`` trains T1 -> T2 with
validation split by case, as for any set of ``synth scan`` volumes.
"""

from __future__ import annotations

import numpy as np

from volseg.data.fields import _low_freq, _parse_shape

TISSUES = ("background", "scalp", "skull", "csf", "grey", "white", "oedema", "enhancing", "necrosis")
CONTRASTS = {  # tissue value per contrast, in the order of TISSUES
    "t1": (0.0, 0.80, 0.10, 0.15, 0.55, 0.85, 0.42, 0.70, 0.20),
    "t2": (0.0, 0.45, 0.05, 1.00, 0.60, 0.35, 0.82, 0.62, 0.95),
    "flair": (0.0, 0.55, 0.05, 0.08, 0.62, 0.45, 1.00, 0.72, 0.30),
}
TUMOUR_LABELS = {0: "background", 1: "necrotic core (NCR)", 2: "oedema (ED)", 3: "enhancing tumour (ET)"}
DEFAULT_SHAPE = (64, 64, 64)
_NOISE = 0.03 * 0.85      # Rician sigma: 3% of white matter in T1


def _radius(shape, centre, axes, rng=None, wobble: float = 0.0, cells=(4, 4, 4)) -> np.ndarray:
    """Normalised ellipsoidal radius (1 on the surface) over [-1, 1]^3, optionally made irregular
    by a smooth random field of relative amplitude ``wobble``."""
    grids = np.meshgrid(*(np.linspace(-1, 1, n, dtype=np.float32) for n in shape), indexing="ij")
    r = np.sqrt(sum(((g - c) / a) ** 2 for g, c, a in zip(grids, centre, axes)))
    if wobble:
        r = r * (1.0 + wobble * _low_freq(rng, shape, cells))
    return r.astype(np.float32)


def brain_tissues(shape=DEFAULT_SHAPE, *, seed: int = 0, case: int = 0) -> np.ndarray:
    """The tissue map (uint8 codes of :data:`TISSUES`) of one case, jittered by (seed, case)."""
    from scipy.ndimage import binary_erosion, distance_transform_edt

    shape = _parse_shape(shape)
    rng = np.random.default_rng([int(seed), int(case)])
    axes = np.array([0.88, 0.94, 0.84]) * rng.uniform(0.95, 1.04, 3)        # head (z, y, x)
    centre = rng.uniform(-0.03, 0.03, 3)
    head = _radius(shape, centre, axes, rng, 0.02)
    brain = _radius(shape, centre, axes * 0.80, rng, 0.03)
    tissue = np.zeros(shape, np.uint8)
    tissue[head <= 1.0] = 1                                                  # scalp
    tissue[head <= 0.93] = 2                                                 # skull
    tissue[brain <= 1.06] = 3                                                # outer CSF
    tissue[brain <= 1.0] = 4                                                 # grey matter
    cortex = rng.uniform(0.72, 0.80) + 0.05 * _low_freq(rng, shape, (6, 6, 6))
    tissue[brain <= cortex] = 5                                              # white matter
    spread = rng.uniform(0.13, 0.2)
    for side in (-1, 1):                                                     # lateral ventricles
        vc = centre + np.array([rng.uniform(0.0, 0.08), rng.uniform(-0.05, 0.05), side * spread])
        va = axes * np.array([0.24, 0.40, 0.13]) * rng.uniform(0.85, 1.15, 3)
        tissue[_radius(shape, vc, va, rng, 0.05) <= 1.0] = 3
    # the tumour: somewhere in the white matter of one hemisphere, away from the midline
    tc = centre + axes * np.array([rng.uniform(-0.3, 0.3), rng.uniform(-0.35, 0.35),
                                   rng.choice([-1, 1]) * rng.uniform(0.3, 0.45)])
    size = rng.uniform(0.13, 0.18)
    ta = np.full(3, size) * rng.uniform(0.85, 1.15, 3)
    rt = _radius(shape, tc, ta, rng, 0.12, cells=(5, 5, 5))
    # each region is cut to the interior of the one around it, so the labels nest
    whole = (rt <= rng.uniform(1.5, 1.9)) & (brain <= 1.0) & (tissue != 3)
    core = (rt <= 1.0) & binary_erosion(whole)
    depth = distance_transform_edt(core)  # 1 on the rim: > 1 keeps the core inside the rim
    necrosis = depth > max(1.0, rng.uniform(0.4, 0.55) * float(depth.max()))
    tissue[whole] = 6                                                        # oedema
    tissue[core] = 7                                                         # enhancing rim
    tissue[necrosis] = 8                                                     # necrotic core
    return tissue


def tumour_labels(tissue: np.ndarray) -> np.ndarray:
    """BraTS labels (uint8) from a tissue map: 1 necrosis, 2 oedema, 3 enhancing, else 0."""
    labels = np.zeros(tissue.shape, np.uint8)
    labels[tissue == TISSUES.index("necrosis")] = 1
    labels[tissue == TISSUES.index("oedema")] = 2
    labels[tissue == TISSUES.index("enhancing")] = 3
    return labels


def head_mask(tissue: np.ndarray) -> np.ndarray:
    """Voxels inside the head (every tissue but the background)."""
    return tissue > 0


def synth_brain(shape=DEFAULT_SHAPE, *, seed: int = 0, case: int = 0) -> dict[str, np.ndarray]:
    """One case of the multi-contrast phantom.

    Parameters
    ----------
    shape : int, str or sequence of int
        (z, y, x) in voxels, each side >= 16.
    seed, case : int
        Seed of the set and index of the case in it: the anatomy, texture, bias fields and noise.

    Returns
    -------
    dict
        ``t1``, ``t2``, ``flair`` (float32 (z, y, x), roughly [0, 1.1]), ``tumour`` (uint8 BraTS
        labels, :data:`TUMOUR_LABELS`) and ``tissue`` (uint8 codes of :data:`TISSUES`).
    """
    from scipy.ndimage import gaussian_filter

    shape = _parse_shape(shape)
    tissue = brain_tissues(shape, seed=seed, case=case)
    rng = np.random.default_rng([int(seed), int(case), 1])
    texture = 1.0 + 0.05 * _low_freq(rng, shape, (8, 8, 8))
    out = {}
    for name, values in CONTRASTS.items():
        clean = np.asarray(values, np.float32)[tissue] * texture
        clean = gaussian_filter(clean, 0.7)
        bias = 1.0 + 0.1 * _low_freq(rng, shape, (3, 3, 3))
        signal = clean * bias
        real = signal + _NOISE * rng.standard_normal(shape, dtype=np.float32)
        imag = _NOISE * rng.standard_normal(shape, dtype=np.float32)
        out[name] = np.sqrt(real * real + imag * imag).astype(np.float32)
    out["tumour"] = tumour_labels(tissue)
    out["tissue"] = tissue
    return out


def case_name(index: int) -> str:
    """The group name of case ``index`` in a ``synth brain`` store (``case_007``)."""
    return f"case_{int(index):03d}"


def write_brain(out, *, cases: int = 1, shape=None, seed: int = 0, chunks=64, overwrite: bool = False,
                quiet: bool = True):
    """Write ``cases`` cases of :func:`synth_brain` into one Zarr group, atomically.

    Parameters
    ----------
    out : str or os.PathLike
        Output group (``brain.zarr``), built under a temporary sibling name and renamed.
    cases : int
        Number of cases (>= 1), each with its own anatomy.
    shape : int, str or sequence of int, optional
        (z, y, x) of every case in voxels, each side >= 16; default 64^3.
    seed : int
        Seed of the set.
    chunks : int or tuple of 3 int
        Chunk shape (z, y, x) of the stored arrays.
    overwrite : bool
        Replace an existing ``out`` (only one volseg made).
    quiet : bool
        Hide the progress bar.

    Returns
    -------
    dict
        What :func:`brain_summary` returns for ``out``.
    """
    from volseg.data.synth import _parse_seed
    from volseg.errors import VolsegError
    from volseg.io.locks import claimed_output
    from volseg.io.streaming import parse_chunks

    if isinstance(cases, bool) or not isinstance(cases, (int, np.integer)) or not 1 <= cases <= 999:
        raise VolsegError("--cases", f"must be a whole number from 1 to 999, got {cases!r}")
    shape = _parse_shape(DEFAULT_SHAPE if shape is None else shape)
    seed = _parse_seed(seed)
    chunks = parse_chunks(chunks)
    with claimed_output(out, kind="volume", overwrite=overwrite, quiet=quiet) as out:
        _write_cases(out, shape=shape, seed=seed, cases=int(cases), chunks=chunks, overwrite=overwrite,
                     quiet=quiet)
    return brain_summary(out)


def brain_summary(path) -> dict:
    """Paths and figures of a store written by :func:`write_brain` (for ``--json``): ``output``,
    ``cases`` (the case groups' paths), ``contrasts`` (contrast -> path inside a case), plus the
    recorded ``shape``, ``seed``, ``tumour_labels`` and per-case ``tumour_fraction``."""
    from pathlib import Path

    import zarr

    from volseg.errors import VolsegError

    path = Path(path)
    try:
        info = dict(zarr.open_group(str(path), mode="r").attrs.get("volseg") or {})
    except Exception:
        info = {}
    if info.get("generator") != "brain":
        raise VolsegError(path, "is not a Zarr group written by volseg synth brain")
    return {"output": str(path), **info, "cases": [str(path / name) for name in info["cases"]]}


def _write_cases(out, *, shape, seed: int, cases: int, chunks, overwrite: bool, quiet: bool) -> None:
    """:func:`write_brain`'s body under the output's lock: every case into a temporary sibling,
    renamed onto ``out`` when all are written."""
    import zarr

    from volseg.io import atomic_dir, write_label_image, write_volume
    from volseg.progress import progress_bar

    names = [case_name(i) for i in range(cases)]
    tumour = []
    with atomic_dir(out, overwrite=overwrite) as tmp, \
            progress_bar("synth brain", total=len(names), quiet=quiet) as bar:
        root = zarr.open_group(str(tmp), mode="w")
        for i, name in enumerate(names):
            case = synth_brain(shape, seed=seed, case=i)
            write_volume(tmp / name, case["t1"], chunks=chunks)
            write_volume(tmp / name / "target", case["t2"], chunks=chunks)
            write_volume(tmp / name / "flair", case["flair"], chunks=chunks)
            write_label_image(tmp / name, "tumour", case["tumour"], chunks=chunks,
                              colors={1: [255, 0, 0, 255], 2: [0, 255, 0, 255], 3: [255, 255, 0, 255]})
            tumour.append(float(np.mean(case["tumour"] > 0)))
            bar.advance(1)
        root.attrs["volseg"] = {"kind": "synth-brain", "generator": "brain", "shape": list(shape),
                                "seed": seed, "cases": names, "contrasts": {"t1": ".", "t2": "target",
                                                                            "flair": "flair"},
                                "tumour_labels": {str(k): v for k, v in TUMOUR_LABELS.items()},
                                "tumour_fraction": tumour, "command": "volseg synth brain"}
