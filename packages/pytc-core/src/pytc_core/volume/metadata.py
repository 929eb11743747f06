"""Volume metadata in array attributes (HDF5, zarr, the .npy sidecar): read and write.

Written (all (z, y, x), spatial axes only):

- pytc's own: ``axes`` (``zyx``/``czyx``), ``voxel_size`` (nm), ``voxel_offset`` (voxels);
- funlib/daisy/gunpowder and CREMI: ``resolution`` (nm) and ``offset`` (nm, the world
  coordinate of the first voxel); newer funlib.persistence also reads ``voxel_size`` with
  ``offset`` in world units, ``axis_names`` and ``units``.

Read: ``voxel_offset`` (voxels) when present; else ``offset`` in world units divided by the
voxel size (``voxel_size``, ``resolution_nm`` or ``resolution``, in ``units`` when given, nm by
default). Files written by pytc before ``voxel_offset`` existed (``axes`` + ``voxel_size`` +
``offset`` and none of the funlib keys) stored the offset in voxels and are read so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from pytc_core.errors import UserError

__all__ = ["check_ndim", "metadata_attrs", "metadata_from_attrs", "nm_per_unit", "offset_in_voxels"]

VOXEL_SIZE_KEYS = ("voxel_size", "resolution_nm", "resolution")

#: length units (as written by NGFF, funlib, ImageJ) -> nm
_UNITS_NM = {
    "nm": 1.0, "nanometer": 1.0, "nanometers": 1.0, "nanometre": 1.0,
    "um": 1e3, "µm": 1e3, "\u03bcm": 1e3, "micrometer": 1e3, "micrometers": 1e3, "micron": 1e3,
    "microns": 1e3, "micrometre": 1e3,
    "mm": 1e6, "millimeter": 1e6, "cm": 1e7, "centimeter": 1e7, "m": 1e9, "meter": 1e9,
    "a": 0.1, "å": 0.1, "angstrom": 0.1, "pm": 1e-3, "picometer": 1e-3,
}


def nm_per_unit(unit: str | None, uri: str) -> float:
    """How many nm one ``unit`` is (None or empty: nm). UserError for a unit that is no length."""
    if unit is None or str(unit).strip() == "":
        return 1.0
    key = str(unit).strip().lower()
    if key in _UNITS_NM:
        return _UNITS_NM[key]
    raise UserError(f"{uri}: unknown length unit '{unit}'",
                    f"use one of {', '.join(sorted({'nm', 'nanometer', 'um', 'micrometer', 'mm'}))}")


def check_ndim(shape: tuple[int, ...], uri: str) -> None:
    """UserError unless ``shape`` is 3D (Z, Y, X) or 4D channels-first (C, Z, Y, X)."""
    if len(shape) not in (3, 4):
        raise UserError(f"{uri} is {len(shape)}D with shape {shape}; pytc needs a 3D (Z, Y, X) "
                        "or channels-first 4D (C, Z, Y, X) volume",
                        "stack 2D images into a 3D volume (e.g. a multi-page TIFF)")


def offset_in_voxels(offset_nm: Sequence[float], voxel_size: Sequence[float], uri: str,
                     what: str = "offset") -> tuple[int, int, int]:
    """A world offset (nm, z y x) as whole voxels; UserError when it is not a whole number of
    voxels (to within 1e-3 voxel)."""
    out = []
    for o, v in zip(offset_nm, voxel_size, strict=True):
        q = float(o) / float(v)
        if abs(q - round(q)) > 1e-3:
            raise UserError(f"{uri}: {what} {list(offset_nm)} nm is not a whole number of voxels "
                            f"of {list(voxel_size)} nm",
                            "fix the offset attribute (it is in nm, a multiple of the voxel size)")
        out.append(int(round(q)))
    return tuple(out)  # type: ignore[return-value]


def _vector(attrs: Mapping[str, Any], key: str, uri: str, positive: bool) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in list(attrs[key]))
    except (TypeError, ValueError):
        values = ()
    if len(values) != 3 or not all(math.isfinite(v) for v in values) or (positive and min(values) <= 0):
        kind = "positive numbers" if positive else "numbers"
        raise UserError(f"{uri}: attribute {key}={attrs[key]!r} is not 3 {kind} (z, y, x)",
                        f"fix the {key} attribute")
    return values


def _units_scale(attrs: Mapping[str, Any], uri: str) -> tuple[float, float, float]:
    units = attrs.get("units")
    if units is None:
        return (1.0, 1.0, 1.0)
    units = [units] * 3 if isinstance(units, str) else list(units)
    if len(units) != 3:
        raise UserError(f"{uri}: attribute units={units!r} is not 3 units (z, y, x)", "fix the units attribute")
    return tuple(nm_per_unit(u, uri) for u in units)  # type: ignore[return-value]


def metadata_from_attrs(attrs: Mapping[str, Any], shape: tuple[int, ...], uri: str) -> dict:
    """Axes, voxel size (nm, z y x) and offset (voxels, z y x) from a format's attributes.

    Missing voxel size defaults to 1 nm and missing offset to 0. An ``axes`` attribute other
    than ``zyx``/``czyx`` is refused rather than silently transposed.
    """
    check_ndim(shape, uri)
    axes = attrs.get("axes")
    if isinstance(axes, bytes):
        axes = axes.decode()
    if isinstance(axes, (list, tuple)):
        axes = "".join(str(a) for a in axes)
    if axes is not None:
        axes = str(axes).lower()
        expected = "czyx" if len(shape) == 4 else "zyx"
        if axes != expected:
            raise UserError(f"{uri} has axes '{axes}', pytc expects '{expected}'",
                            "transpose the data to (z, y, x) with channels first")
    scale = _units_scale(attrs, uri)
    voxel_size: tuple[float, ...] = (1.0, 1.0, 1.0)
    found = [key for key in VOXEL_SIZE_KEYS if key in attrs]
    if found:
        sizes = {key: tuple(v * s for v, s in zip(_vector(attrs, key, uri, True), scale, strict=True))
                 for key in found}
        voxel_size = sizes[found[0]]
        for key in found[1:]:
            if any(abs(a - b) > 1e-6 * max(abs(a), abs(b)) for a, b in zip(voxel_size, sizes[key], strict=True)):
                raise UserError(f"{uri}: attributes {found[0]}={list(voxel_size)} and {key}={list(sizes[key])} "
                                "disagree about the voxel size", "fix or remove one of them")
    offset: tuple[int, ...] = (0, 0, 0)
    if "voxel_offset" in attrs:
        values = _vector(attrs, "voxel_offset", uri, False)
        if any(v != int(v) for v in values):
            raise UserError(f"{uri}: attribute voxel_offset={list(values)} is not 3 integers (z, y, x)",
                            "fix the voxel_offset attribute")
        offset = tuple(int(v) for v in values)
    elif "offset" in attrs:
        values = _vector(attrs, "offset", uri, False)
        legacy = (axes is not None and "voxel_size" in attrs
                  and not any(k in attrs for k in ("resolution", "units", "axis_names")))
        if legacy:  # pytc before voxel_offset: the offset was stored in voxels
            offset = offset_in_voxels(values, (1.0, 1.0, 1.0), uri)
        else:
            world = tuple(v * s for v, s in zip(values, scale, strict=True))
            offset = offset_in_voxels(world, voxel_size, uri)
    return {"axes": axes, "voxel_size": voxel_size, "offset": offset}


def metadata_attrs(axes: str, voxel_size: Sequence[float], offset: Sequence[int]) -> dict[str, Any]:
    """The attributes pytc writes: its own keys plus the funlib/CREMI ones (see module doc)."""
    vs = [float(v) for v in voxel_size]
    off = [int(v) for v in offset]
    world = [o * v for o, v in zip(off, vs, strict=True)]
    world_out: list[float | int] = [int(w) if float(w).is_integer() else w for w in world]
    return {
        "axes": axes,
        "voxel_size": vs,
        "voxel_offset": off,
        "resolution": vs,
        "offset": world_out,
        "axis_names": (["c^"] if axes == "czyx" else []) + ["z", "y", "x"],
        "units": ["nm", "nm", "nm"],
    }
