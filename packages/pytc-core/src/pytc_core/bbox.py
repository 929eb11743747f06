"""Axis-aligned spatial bounding boxes in voxels, (z, y, x), half-open."""

from __future__ import annotations

import itertools
import operator
from collections.abc import Sequence
from dataclasses import dataclass

from pytc_core.errors import UserError

__all__ = ["BBox", "Vec3", "grid_boxes", "parse_bbox", "vec3"]

Vec3 = tuple[int, int, int]


def vec3(values: Sequence[int] | int, name: str) -> Vec3:
    """``values`` as a (z, y, x) int triple (one int: the same on every axis); ValueError
    naming ``name`` unless there are 3 entries."""
    if isinstance(values, int):
        return (values, values, values)
    out = [int(v) for v in values]
    if len(out) != 3:
        raise ValueError(f"{name} must have 3 entries (z, y, x), got {values!r}")
    return (out[0], out[1], out[2])


@dataclass(frozen=True, init=False)
class BBox:
    """A half-open box ``[start, stop)`` in global voxel coordinates, axes (z, y, x).

    ``start`` and ``stop`` may be given as any 3 integers (or one int for all axes); they are
    stored as ``(z, y, x)`` int tuples.
    """

    start: Vec3
    stop: Vec3

    def __init__(self, start: Sequence[int] | int, stop: Sequence[int] | int) -> None:
        object.__setattr__(self, "start", vec3(start, "start"))
        object.__setattr__(self, "stop", vec3(stop, "stop"))
        if any(b < a for a, b in zip(self.start, self.stop, strict=True)):
            raise ValueError(f"BBox stop {self.stop} is before start {self.start}")

    @classmethod
    def from_shape(cls, shape: Sequence[int], offset: Sequence[int] = (0, 0, 0)) -> BBox:
        """The box of ``shape`` voxels starting at ``offset``."""
        off = vec3(offset, "offset")
        shp = vec3(shape, "shape")
        return cls(off, tuple(o + s for o, s in zip(off, shp, strict=True)))

    @property
    def shape(self) -> Vec3:
        return tuple(b - a for a, b in zip(self.start, self.stop, strict=True))  # type: ignore[return-value]

    @property
    def size(self) -> int:
        z, y, x = self.shape
        return z * y * x

    @property
    def empty(self) -> bool:
        return self.size == 0

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        """Slices of this box in global coordinates."""
        return tuple(slice(a, b) for a, b in zip(self.start, self.stop, strict=True))  # type: ignore[return-value]

    def relative_to(self, origin: Sequence[int]) -> tuple[slice, slice, slice]:
        """Slices of this box into an array whose first voxel sits at global ``origin``."""
        o = vec3(origin, "origin")
        return tuple(slice(a - p, b - p) for a, b, p in zip(self.start, self.stop, o, strict=True))  # type: ignore[return-value]

    def intersect(self, other: BBox) -> BBox:
        """The overlap of two boxes (possibly empty, then start == stop)."""
        start = tuple(max(a, b) for a, b in zip(self.start, other.start, strict=True))
        stop = tuple(min(a, b) for a, b in zip(self.stop, other.stop, strict=True))
        stop = tuple(max(s, e) for s, e in zip(start, stop, strict=True))
        return BBox(start, stop)


    def grow(self, margin: Sequence[int] | int) -> BBox:
        """The box enlarged by ``margin`` voxels on every side (shrunk for negative margins)."""
        m = vec3(margin, "margin")
        return BBox(vec3([a - d for a, d in zip(self.start, m, strict=True)], "start"),
                    vec3([b + d for b, d in zip(self.stop, m, strict=True)], "stop"))

    def contains(self, other: BBox) -> bool:
        return all(a <= c and d <= b for a, b, c, d in
                   zip(self.start, self.stop, other.start, other.stop, strict=True))

    def __str__(self) -> str:
        return "[" + ", ".join(f"{a}:{b}" for a, b in zip(self.start, self.stop, strict=True)) + "]"


def grid_boxes(bbox: BBox, size: Sequence[int] | int,
               grid_origin: Sequence[int] | None = None) -> list[BBox]:
    """The cells of the grid ``grid_origin + k * size`` (voxels, z, y, x; default origin
    ``bbox.start``) that overlap ``bbox``, clipped to it, in C order. ``size`` must be positive."""
    step = vec3(size, "size")
    if any(s <= 0 for s in step):
        raise ValueError(f"grid size {step} must be positive")
    origin = vec3(grid_origin if grid_origin is not None else bbox.start, "grid_origin")
    ranges = []
    for a, b, o, s in zip(bbox.start, bbox.stop, origin, step, strict=True):
        first = o + ((a - o) // s) * s
        ranges.append(range(first, b, s))
    boxes = []
    for z, y, x in itertools.product(*ranges):
        box = BBox((z, y, x), (z + step[0], y + step[1], x + step[2])).intersect(bbox)
        if not box.empty:
            boxes.append(box)
    return boxes


def parse_bbox(value: str | Sequence[int], flag: str = "--bbox") -> BBox:
    """A box from ``"z0,y0,x0,z1,y1,x1"`` (a flag's text) or six integers (a config value):
    global voxels, half-open, (z, y, x).

    The one parser behind every ``--bbox`` flag and ``bbox`` key. UserError naming ``flag``
    (a flag or a config key) when the value is not six integers or the box is empty or
    reversed on an axis. Whether the box lies inside a volume is the caller's check.
    """
    example = f"{flag} 0,0,0,175,250,250" if flag.startswith("-") else "[0, 0, 0, 175, 250, 250]"
    values: list[int] = []
    try:
        if isinstance(value, str):
            values = [int(p) for p in value.split(",") if p.strip()]
        else:
            values = [operator.index(v) for v in value]
    except (TypeError, ValueError):
        values = []
    if len(values) != 6:
        raise UserError(f"bad {flag} '{_shown(value)}'",
                        f"give z0,y0,x0,z1,y1,x1 in global voxels, e.g. {example}")
    if any(b <= a for a, b in zip(values[:3], values[3:], strict=True)):
        raise UserError(f"{flag} {values} is empty or malformed",
                        "give z0,y0,x0,z1,y1,x1 in global voxels with each stop above its "
                        f"start, e.g. {example}")
    return BBox(values[:3], values[3:])


def _shown(value: object) -> object:
    if isinstance(value, str):
        return value
    try:
        return list(value)  # type: ignore[call-overload]
    except TypeError:
        return value
