"""Local repairs of a kept mask: anisotropic opening / closing, one-voxel hole plugging and
large holes filled along the sheet.

Every repair here is local: the result at a voxel depends only on the mask within
:attr:`Repairs.reach` voxels along each axis. So a chunk repaired in a box grown by the reach
(the volume's own border padded with its edge values, as the whole volume is) equals the same
repair of the whole array, bit for bit (:meth:`Repairs.box`, :meth:`Repairs.whole`).

Structuring elements (:func:`parse_element`, ``--close`` and ``--open``):

* ``R``: a ball of radius R voxels (:func:`skimage.morphology.ball`), the historical ``--close R``;
* ``Z,Y,X``: an ellipsoid of radii Z, Y and X voxels (0 along an axis: flat along it);
* ``box:Z,Y,X`` (or ``box:S``): a box of odd side lengths centred on the voxel.

Plugging (``--plug-holes``) fills one-voxel holes by a 2 x 2 x 2 lookup table
(:data:`PLUG_TABLE`, :func:`plug_rule`). ``--fill-sheet-holes N`` then fills holes of up to N
columns through a sheet along its interpolated height map
(:func:`volseg.postprocess.sheet_holes.fill_sheet_holes`). Axis order (z, y, x); sizes in voxels.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

import numpy as np

from volseg.errors import VolsegError
from volseg.postprocess.sheet_holes import fill_sheet_holes, reach as sheet_reach

#: Default ``--open`` and ``--close``: a line of 3 voxels along z (a sheet of a scroll rolled
#: around the z axis contains such lines), chosen with ``benchmarks/repairs.py`` on the oracles.
DEFAULT_OPEN = "1,0,0"
DEFAULT_CLOSE = "1,0,0"

#: The eight voxels of a 2 x 2 x 2 cube, (dz, dy, dx); voxel i is bit i of a configuration.
CUBE = tuple(itertools.product((0, 1), repeat=3))


@dataclass(frozen=True)
class Element:
    """A structuring element: ``kind`` "ball" (radii per axis; a ball where they are equal) or
    "box" (odd side lengths), ``size`` per axis (z, y, x). All zeros: no operation."""

    kind: str = "ball"
    size: tuple[int, int, int] = (0, 0, 0)

    @property
    def active(self) -> bool:
        return any(self.size)

    @property
    def reach(self) -> tuple[int, int, int]:
        """Voxels of context one dilation or erosion with this element reads, per axis."""
        if self.kind == "box":
            return tuple((s - 1) // 2 for s in self.size)
        return tuple(self.size)

    def footprint(self) -> np.ndarray:
        """Boolean footprint, odd-sized along every axis and centred."""
        return _footprint(self.kind, self.size)

    def text(self) -> str:
        """The option value that gives this element back (``R``, ``Z,Y,X`` or ``box:Z,Y,X``)."""
        z, y, x = self.size
        if self.kind == "box":
            return f"box:{z},{y},{x}"
        return str(z) if z == y == x else f"{z},{y},{x}"


@functools.lru_cache(maxsize=16)
def _footprint(kind: str, size: tuple[int, int, int]) -> np.ndarray:
    from skimage.morphology import ball

    if kind == "box":
        return np.ones(size, dtype=bool)
    if size[0] == size[1] == size[2]:
        return ball(size[0]).astype(bool)               # bit-identical with the old --close R
    grids = np.ogrid[tuple(slice(-r, r + 1) for r in size)]
    distance = sum((g / r) ** 2 for g, r in zip(grids, size) if r > 0)
    return np.broadcast_to(distance <= 1.0, tuple(2 * r + 1 for r in size)).copy()


def parse_element(value, name: str, default=0) -> Element:
    """``--close``/``--open`` value -> :class:`Element` (errors name the option and the fix).

    Accepts ``R`` (ball radius), ``Z,Y,X`` (ellipsoid radii), ``box:Z,Y,X`` or ``box:S`` (odd
    box sides), an int, or 3 ints (radii). Radii are whole numbers >= 0; box sides odd >= 1.
    """
    if value is None:
        value = default
    if isinstance(value, Element):
        return value
    text = value if isinstance(value, str) else ",".join(map(str, np.atleast_1d(value)))
    kind, body = ("box", text.strip()[4:]) if text.strip().lower().startswith("box:") else ("ball", text)
    form = "box:Z,Y,X with odd sides such as box:1,3,3" if kind == "box" else \
        "a radius R such as 2, or radii Z,Y,X such as 1,2,2"
    try:
        parts = [float(v) for v in body.split(",")]
    except ValueError:
        raise VolsegError(name, f"expected {form}, got {value!r}") from None
    if len(parts) not in (1, 3) or not all(np.isfinite(parts)) or any(p != int(p) for p in parts):
        raise VolsegError(name, f"expected {form} (whole numbers of voxels), got {value!r}")
    size = tuple(int(p) for p in (parts * 3 if len(parts) == 1 else parts))
    if any(s < 0 for s in size):
        raise VolsegError(name, f"sizes must be >= 0 voxels, got {value!r}; use 0 to turn it off")
    if kind == "box":
        if any(s % 2 == 0 for s in size):
            raise VolsegError(name, f"box sides must be odd (the box is centred on the voxel), got "
                              f"{value!r}; use odd sides such as box:1,3,3")
        if all(s == 1 for s in size):   # a 1-voxel box changes nothing: the same as off
            size = (0, 0, 0)
            kind = "ball"
    return Element(kind, size)


def _bits(config: int) -> np.ndarray:
    """The 2 x 2 x 2 cube of configuration ``config`` (bit i = voxel :data:`CUBE` [i])."""
    return np.array([(config >> i) & 1 for i in range(8)], dtype=bool).reshape(2, 2, 2)


def plug_rule(cube: np.ndarray) -> np.ndarray:
    """The voxels of a 2 x 2 x 2 configuration that plugging fills (all False: none).

    A one-voxel hole through a sheet shows in the cubes around it as: along some axis, one
    2 x 2 layer of the cube holds exactly 3 foreground voxels (an L around the hole) and the
    other layer either none (a sheet one voxel thick, background on both sides of the hole)
    or the same 3 (a one-voxel-wide tunnel through a thicker sheet, along that axis). The
    missing voxel of each such layer is filled, closing the 6-connected background path through
    the sheet; nothing outside the sheet's layer is filled, so the gap beside a sheet is never
    bridged and a sheet's straight edges and diagonal steps (2 voxels per layer) never grow.
    Every concave corner of a sheet's outline is such an L, so holes of up to 2 x 2 voxels
    close, a larger hole loses its corners and stays a hole, and a sheet's outline gains its
    concave corners (one voxel each).
    """
    fill = np.zeros((2, 2, 2), dtype=bool)
    for axis in range(3):
        a, b = np.take(cube, 0, axis=axis), np.take(cube, 1, axis=axis)
        for side, (one, other) in enumerate(((a, b), (b, a))):
            if one.sum() == 3 and (not other.any() or (other == one).all()):
                index = [slice(None)] * 3
                index[axis] = side
                fill[tuple(index)] |= ~one
                if other.any():
                    index[axis] = 1 - side
                    fill[tuple(index)] |= ~other
    return fill


def _plug_table() -> np.ndarray:
    table = np.zeros(256, dtype=np.uint8)
    for config in range(256):
        fill = plug_rule(_bits(config)).ravel()
        table[config] = sum(1 << i for i in range(8) if fill[i])
    table.setflags(write=False)
    return table


#: 256 entries: for each 2 x 2 x 2 configuration, the voxels (bits) plugging fills.
PLUG_TABLE = _plug_table()


def plug_holes(mask: np.ndarray) -> np.ndarray:
    """One pass of :data:`PLUG_TABLE` over every 2 x 2 x 2 cube of ``mask`` (all decided on the
    input, then filled together), so the result at a voxel depends on its 3 x 3 x 3
    neighbourhood only."""
    mask = np.asarray(mask, dtype=bool)
    n = [s - 1 for s in mask.shape]
    if min(n) <= 0:
        return mask
    config = np.zeros(n, dtype=np.uint8)
    for i, (dz, dy, dx) in enumerate(CUBE):
        config |= mask[dz:dz + n[0], dy:dy + n[1], dx:dx + n[2]].astype(np.uint8) << i
    fill = PLUG_TABLE[config]
    out = mask.copy()
    for i, (dz, dy, dx) in enumerate(CUBE):
        out[dz:dz + n[0], dy:dy + n[1], dx:dx + n[2]] |= ((fill >> i) & 1).astype(bool)
    return out


@dataclass(frozen=True)
class Repairs:
    """The local repairs applied to the kept mask, in this order: opening, closing, plugging,
    sheet holes.

    * ``opening`` O: ``dilate(erode(K, O), O)``: removes bridges and spurs thinner than O;
    * ``closing`` C: ``M | erode(dilate(M, C), C)``: closes gaps and holes about 2 C wide;
    * ``plug``: :func:`plug_holes`;
    * ``sheet_holes`` N: holes of up to N columns through a sheet, filled along the sheet
      (:func:`volseg.postprocess.sheet_holes.fill_sheet_holes`); 0: off.
    """

    closing: Element = Element()
    opening: Element = Element()
    plug: bool = False
    sheet_holes: int = 0

    @property
    def active(self) -> bool:
        return self.closing.active or self.opening.active or self.plug or self.sheet_holes > 0

    @property
    def reach(self) -> tuple[int, int, int]:
        """Voxels of context the repairs read around a voxel, per axis (z, y, x)."""
        return tuple(2 * c + 2 * o + int(self.plug) + sheet_reach(self.sheet_holes)
                     for c, o in zip(self.closing.reach, self.opening.reach))

    def apply(self, mask: np.ndarray) -> np.ndarray:
        """The repairs of an array (scipy.ndimage, border 0): exact away from its sides."""
        from scipy import ndimage

        out = np.asarray(mask, dtype=bool)
        if self.opening.active:
            fp = self.opening.footprint()
            out = ndimage.binary_dilation(ndimage.binary_erosion(out, fp), fp)
        if self.closing.active:
            fp = self.closing.footprint()
            out = out | ndimage.binary_erosion(ndimage.binary_dilation(out, fp), fp)
        if self.plug:
            out = plug_holes(out)
        if self.sheet_holes > 0:
            out = fill_sheet_holes(out, self.sheet_holes)
        return out

    def box(self, box: np.ndarray, lo, hi, shape) -> np.ndarray:
        """The repairs of the mask ``box`` covering ``[lo, hi)`` of a volume of ``shape``.

        Sides where the box meets the volume border are padded with :attr:`reach` edge values,
        as :meth:`whole` pads the volume; elsewhere the result equals the whole volume's
        :attr:`reach` voxels or more inside the box.
        """
        if not self.active:
            return box
        pad = [(h if b == 0 else 0, h if d == n else 0) for h, b, d, n in zip(self.reach, lo, hi, shape)]
        out = self.apply(np.pad(box, pad, mode="edge"))
        return out[tuple(slice(p, p + n) for (p, _), n in zip(pad, box.shape))]

    def whole(self, mask: np.ndarray) -> np.ndarray:
        """The repairs of a whole volume (its border padded with :attr:`reach` edge values)."""
        mask = np.asarray(mask, dtype=bool)
        return self.box(mask, (0, 0, 0), mask.shape, mask.shape)

    def settings(self) -> dict:
        """The repairs for an output's settings: ``close`` as before (an int for a ball), and
        ``open``/``plug_holes``/``fill_sheet_holes`` only when used, so outputs made before them
        keep resuming."""
        c = self.closing
        out: dict = {"close": c.size[0] if c.kind == "ball" and len(set(c.size)) == 1 else c.text()}
        if self.opening.active:
            out["open"] = self.opening.text()
        if self.plug:
            out["plug_holes"] = True
        if self.sheet_holes:
            out["fill_sheet_holes"] = self.sheet_holes
        return out
