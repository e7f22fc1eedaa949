"""Options of ``volseg postprocess``: parsing and validation (errors name the option and the fix)."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import numpy as np

from volseg.errors import VolsegError
from volseg.postprocess.kernels import Binarise
from volseg.postprocess.repairs import DEFAULT_CLOSE, DEFAULT_OPEN, Element, Repairs, parse_element
from volseg.postprocess.sheet_holes import check_chunks, parse_max_area
from volseg.roi import parse_roi

#: Default ``--min-size``: chosen with ``benchmarks/postprocess.py`` on synthetic scrolls.
DEFAULT_MIN_SIZE = 200
#: Default ``--fill-holes`` (2D slice holes in pixels and cavities in voxels).
DEFAULT_FILL_HOLES = 16
# DEFAULT_OPEN, DEFAULT_CLOSE (``--open``/``--close``, "1,0,0"): volseg.postprocess.repairs.
#: Default ``--fill-cavities`` (cavities of the hole-filled mask, in voxels; 0 = none).
DEFAULT_FILL_CAVITIES = 0
#: Default ``--plug-holes`` (one-voxel hole plugging by the 2x2x2 lookup table).
DEFAULT_PLUG_HOLES = False
#: Default ``--fill-sheet-holes`` (largest hole through a sheet filled along it, voxels of area;
#: 0 = off), chosen with ``benchmarks/repairs.py``.
DEFAULT_FILL_SHEET_HOLES = 0
#: Default ``--smooth`` of a float (probability) input: Gaussian sigma in voxels, chosen with
#: ``benchmarks/postprocess.py --prediction`` on demo predictions. Integer (label) inputs: 0.
DEFAULT_SMOOTH = 1.0
#: Largest ``--smooth``: the kernel reads 4 sigma of context around every block.
MAX_SMOOTH = 8.0
#: Default threshold of a float (probability) input without ``--threshold``/``--hysteresis``.
DEFAULT_THRESHOLD = 0.5


def parse_hysteresis(value) -> tuple[float, float] | None:
    """``--hysteresis LOW,HIGH`` -> (low, high) with low <= high."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        low, high = (float(v) for v in (value.split(",") if isinstance(value, str) else value))
    except (TypeError, ValueError):
        raise VolsegError("--hysteresis", f"expected LOW,HIGH such as 0.3,0.7, got {value!r}") from None
    if not (np.isfinite(low) and np.isfinite(high)):
        raise VolsegError("--hysteresis", f"LOW and HIGH must be finite numbers, got {value!r}")
    if low > high:
        raise VolsegError("--hysteresis", f"LOW {low:g} is above HIGH {high:g}; pass LOW,HIGH with LOW <= HIGH")
    return low, high


def _parse_size(value, default: int, name: str) -> int:
    if value is None:
        return default
    try:
        size = int(value)
    except (TypeError, ValueError):
        raise VolsegError(name, f"expected a number of voxels, got {value!r}") from None
    if size < 0 or size != float(value):
        raise VolsegError(name, f"must be a whole number of voxels >= 0, got {value!r}")
    return size


def parse_smooth(value, kind: str, where: str) -> float:
    """``--smooth SIGMA`` -> sigma in voxels (default: :data:`DEFAULT_SMOOTH` for float data, else 0)."""
    if value is None:
        return DEFAULT_SMOOTH if kind == "f" else 0.0
    try:
        sigma = float(value)
    except (TypeError, ValueError):
        raise VolsegError("--smooth", f"expected a Gaussian sigma in voxels such as 1.0, got {value!r}") from None
    if not (np.isfinite(sigma) and 0 <= sigma <= MAX_SMOOTH):
        raise VolsegError("--smooth", f"must be a sigma between 0 and {MAX_SMOOTH:g} voxels, got {value!r}")
    if sigma and kind != "f":
        raise VolsegError("--smooth", f"smooths probabilities, but {where} holds integer labels; "
                          "drop --smooth (or pass --smooth 0)")
    return sigma


@dataclass(frozen=True)
class Options:
    """Validated post-processing settings (see :func:`volseg.postprocess.postprocess`)."""

    threshold: float | None
    hysteresis: tuple[float, float] | None
    smooth: float
    close: Element
    min_size: int
    fill_holes: int
    open: Element = Element()
    plug_holes: bool = False
    fill_cavities: int = 0
    fill_sheet_holes: int = 0
    roi: str | None = None  # --roi as given (volseg.roi.parse_roi); box: resolved by within()
    box: tuple | None = None

    @classmethod
    def parse(cls, dtype, *, threshold=None, hysteresis=None, smooth=None, close=None,
              min_size=None, fill_holes=None, open=None, where: str = "input", **more) -> "Options":
        """Validate the options against the input's dtype (float: probabilities).

        ``more``: ``plug_holes``, ``fill_cavities``, ``fill_sheet_holes`` and ``roi`` (None: the
        default); any other name is refused with a TypeError, as a misspelt keyword would be.
        """
        unknown = set(more) - {"plug_holes", "fill_cavities", "fill_sheet_holes", "roi"}
        if unknown:
            raise TypeError(f"Options.parse() got unexpected keyword arguments {sorted(unknown)}")
        plug_holes = more.get("plug_holes")
        hysteresis = parse_hysteresis(hysteresis)
        if threshold is not None and hysteresis is not None:
            raise VolsegError("--threshold", "give either --threshold or --hysteresis, not both")
        if threshold is not None:
            threshold = float(threshold)
            if not np.isfinite(threshold):
                raise VolsegError("--threshold", f"must be a finite number, got {threshold}")
        kind = np.dtype(dtype).kind
        if kind not in "biuf":
            raise VolsegError(where, f"has dtype {dtype}; post-processing needs numbers (probabilities or labels)")
        if kind == "f" and threshold is None and hysteresis is None:
            threshold = DEFAULT_THRESHOLD
        return cls(threshold, hysteresis, parse_smooth(smooth, kind, where),
                   parse_element(close, "--close", DEFAULT_CLOSE),
                   _parse_size(min_size, DEFAULT_MIN_SIZE, "--min-size"),
                   _parse_size(fill_holes, DEFAULT_FILL_HOLES, "--fill-holes"),
                   parse_element(open, "--open", DEFAULT_OPEN),
                   DEFAULT_PLUG_HOLES if plug_holes is None else bool(plug_holes),
                   _parse_size(more.get("fill_cavities"), DEFAULT_FILL_CAVITIES, "--fill-cavities"),
                   parse_max_area(more.get("fill_sheet_holes"), DEFAULT_FILL_SHEET_HOLES), parse_roi(more.get("roi")))

    def within(self, shape) -> "Options":
        """These options with ``--roi`` resolved against the input's ``shape`` (itself without one)."""
        import dataclasses

        from volseg.roi import roi_box

        return self if self.roi is None else dataclasses.replace(self, box=roi_box(self.roi, shape))

    @property
    def binarise(self) -> Binarise:
        return Binarise(self.threshold, self.hysteresis, self.smooth, self.box)

    @property
    def repairs(self) -> Repairs:
        """The local repairs of the kept mask (opening, closing, plugging, sheet holes)."""
        return Repairs(self.close, self.open, self.plug_holes, self.fill_sheet_holes)

    def check_range(self, lo: float, hi: float, *, where: str) -> None:
        """Refuse a threshold that leaves nothing (or everything) foreground on data in [lo, hi]."""
        if self.threshold is not None and not lo < self.threshold <= hi:
            raise VolsegError("--threshold", f"{self.threshold:g} is outside the range of {where} "
                              f"({lo:g}..{hi:g}): every voxel would be "
                              f"{'background' if self.threshold > hi else 'foreground'}; "
                              "choose a value inside it")
        if self.hysteresis is not None:
            for name, value in zip(("LOW", "HIGH"), self.hysteresis):
                if not lo <= value < hi:
                    raise VolsegError("--hysteresis", f"{name} {value:g} is outside the range of {where} "
                                      f"({lo:g}..{hi:g}); choose LOW,HIGH inside it")

    def warn_smoothed_range(self, lo: float, hi: float, *, where: str) -> None:
        """Say on stderr when the smoothed values in [lo, hi] binarise to a single label.

        The threshold lies inside the raw data's range (:meth:`check_range`), but smoothing
        narrows the range: a lone bright voxel may stay below the threshold after it.
        """
        if self.threshold is not None:
            name, cut = "--threshold", self.threshold
            nothing, everything = hi < cut, lo >= cut              # foreground: value >= T
        else:
            name, cut = "--hysteresis HIGH", self.hysteresis[1]
            nothing, everything = hi <= cut, False                 # strong: value > HIGH
        if not (nothing or everything):
            return
        what, label = ("every voxel reaches", "foreground") if everything else ("no voxel reaches", "background")
        print(f"warning: {where}: after --smooth {self.smooth:g}, {what} {name} {cut:g} (smoothed values "
              f"{lo:.4g}..{hi:.4g}): the output is all {label}; choose a value inside that range or "
              "pass --smooth 0", file=sys.stderr)

    def task_bytes(self, shape, chunks, *, holes: bool = True) -> int:
        """Bytes one task holds at most for a chunk of ``chunks`` in a volume of ``shape``: the
        values read with the smoothing's context (float32, smoothed copy, int64 labels: 16 B per
        voxel), and with repairs (``--close``, ``--open``, ``--plug-holes``, reach R per axis)
        or ``--fill-holes N`` the kept-mask box of the chunk plus R + N + 1 voxels, padded by R
        (4 boolean copies; with ``--fill-sheet-holes``, 6 B more per voxel for its run tables)
        and the structuring elements (8 B per voxel of their boxes while they are built)."""
        reach, n = self.repairs.reach, (self.fill_holes if holes else 0)
        read = math.prod(min(s, c + 2 * self.binarise.halo) for s, c in zip(shape, chunks))
        need = 16 * read
        if any(reach) or n:
            per_voxel = 4 + (6 if self.fill_sheet_holes else 0)
            need += per_voxel * math.prod(min(s, c + 2 * (r + n + 1)) + 2 * r for s, c, r in zip(shape, chunks, reach))
        for element in (self.close, self.open):
            if element.active:
                need += 8 * math.prod(2 * r + 1 for r in element.reach)
        return need

    def check_memory(self, shape, chunks) -> None:
        """Refuse a ``--close`` or ``--fill-holes`` whose chunk box cannot fit in memory, and a
        ``--fill-sheet-holes`` that reads beyond the neighbouring chunks."""
        from volseg.memlimit import check_memory

        if self.fill_sheet_holes:
            check_chunks(self.fill_sheet_holes, shape, chunks)
            check_memory(self.task_bytes(shape, chunks, holes=False), option="--fill-sheet-holes",
                         value=self.fill_sheet_holes, what=f"filling the sheet holes of one "
                         f"{'x'.join(map(str, chunks))} chunk with its context",
                         fix="use smaller --chunks or a hole size of tens to hundreds of voxels")
        element = self.close if self.close.active or not self.open.active else self.open
        name = "--close" if element is self.close else "--open"
        check_memory(self.task_bytes(shape, chunks, holes=False), option=name, value=element.text(),
                     what=f"repairing one {'x'.join(map(str, chunks))} chunk with that structuring element",
                     fix="use a radius of a few voxels (closing bridges gaps up to about 2 * R wide)")
        check_memory(self.task_bytes(shape, chunks), option="--fill-holes", value=self.fill_holes,
                     what=f"filling the holes of one {'x'.join(map(str, chunks))} chunk with that much "
                     "context", fix="use a size of tens of voxels (holes through sheets are small)")

    def settings(self) -> dict:
        return {"threshold": self.threshold,
                "hysteresis": list(self.hysteresis) if self.hysteresis else None, "smooth": self.smooth,
                **self.repairs.settings(),
                "min_size": self.min_size, "fill_holes": self.fill_holes,
                **({"fill_cavities": self.fill_cavities} if self.fill_cavities else {}),
                **({"roi": [list(self.box[0]), list(self.box[1])]} if self.box else {})}
