"""Reading a box that may reach past a volume's edge."""

from __future__ import annotations

import numpy as np

from pytc_core.bbox import BBox
from pytc_core.volume.base import Volume

__all__ = ["read_padded"]


def read_padded(volume: Volume, box: BBox) -> np.ndarray:
    """``box`` (global voxels, z y x) of ``volume``, zeros where it lies outside the volume.

    Returns the volume's layout, ``(Z, Y, X)`` or ``(C, Z, Y, X)`` with ``box.shape``
    spatially, in the volume's dtype; the part inside is ``box.intersect(volume.bbox)``.
    A box inside the volume is one plain ``read``.
    """
    inside = box.intersect(volume.bbox)
    channels = (volume.shape[0],) if volume.ndim == 4 else ()
    if inside.empty:
        return np.zeros(channels + box.shape, dtype=volume.dtype)
    data = volume.read(inside)
    if inside == box:
        return data
    out = np.zeros(channels + box.shape, dtype=data.dtype)
    out[(Ellipsis, *inside.relative_to(box.start))] = data
    return out
