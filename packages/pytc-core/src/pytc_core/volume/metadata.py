"""Reading pytc's volume metadata (axes, voxel size in nm, offset in voxels) from attributes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pytc_core.errors import UserError

__all__ = ["metadata_from_attrs", "check_ndim"]

VOXEL_SIZE_KEYS = ("voxel_size", "resolution_nm", "resolution")


def check_ndim(shape: tuple[int, ...], uri: str) -> None:
    """UserError unless ``shape`` is 3D (Z, Y, X) or 4D channels-first (C, Z, Y, X)."""
    if len(shape) not in (3, 4):
        raise UserError(f"{uri} is {len(shape)}D with shape {shape}; pytc needs a 3D (Z, Y, X) "
                        "or channels-first 4D (C, Z, Y, X) volume",
                        "stack 2D images into a 3D volume (e.g. a multi-page TIFF)")


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
    voxel_size = (1.0, 1.0, 1.0)
    for key in VOXEL_SIZE_KEYS:
        if key in attrs:
            values = [float(v) for v in list(attrs[key])]
            if len(values) != 3 or any(v <= 0 for v in values):
                raise UserError(f"{uri}: attribute {key}={values} is not 3 positive numbers (z, y, x)",
                                "fix the voxel size attribute")
            voxel_size = tuple(values)
            break
    offset = (0, 0, 0)
    if "offset" in attrs:
        values = [int(v) for v in list(attrs["offset"])]
        if len(values) != 3:
            raise UserError(f"{uri}: attribute offset={values} is not 3 integers (z, y, x)",
                            "fix the offset attribute")
        offset = tuple(values)
    return {"axes": axes, "voxel_size": voxel_size, "offset": offset}
