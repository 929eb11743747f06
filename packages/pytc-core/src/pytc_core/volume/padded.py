"""Reading a box that may reach past a volume's edge, in whole storage chunks.

Block-wise work reads a block plus a halo. A box that cuts through storage chunks costs the
same downloads and decompression as the whole chunks, and two neighbouring blocks' boxes would
each fetch the chunks they share partially; :func:`read_aligned` therefore rounds the box out
to the volume's chunk grid, reads whole chunks and crops in memory. Every block-wise reader
(pytc-decode's block context, pytc-infer's tiles through :func:`read_padded`) reads this way.
"""

from __future__ import annotations

import numpy as np

from pytc_core.bbox import BBox
from pytc_core.volume.base import Volume

__all__ = ["aligned_box", "read_aligned", "read_padded"]


def aligned_box(volume: Volume, box: BBox) -> BBox:
    """``box`` (inside the volume, global voxels z y x) rounded out to whole storage chunks,
    clipped to the volume.

    Rounds on each axis whose chunk is no larger than the box there, so a read grows by less
    than 3x per axis; on other axes (a box thinner than a chunk, formats stored unchunked,
    whose chunk is the whole volume) the box is kept.
    """
    vol = volume.bbox
    start, stop = [], []
    for a, b, o, c, e in zip(box.start, box.stop, vol.start, volume.chunk_size, vol.stop,
                             strict=True):
        if c <= b - a:
            start.append(o + ((a - o) // c) * c)
            stop.append(min(e, o + -(-(b - o) // c) * c))
        else:
            start.append(a)
            stop.append(b)
    return BBox(tuple(start), tuple(stop))


def read_aligned(volume: Volume, box: BBox) -> np.ndarray:
    """``box`` (inside the volume, global voxels z y x) of ``volume``, read in whole chunks
    (:func:`aligned_box`) and cropped: the same values as ``volume.read(box)``."""
    outer = aligned_box(volume, box)
    data = volume.read(outer)
    if outer == box:
        return data
    return np.ascontiguousarray(data[(Ellipsis, *box.relative_to(outer.start))])


def read_padded(volume: Volume, box: BBox) -> np.ndarray:
    """``box`` (global voxels, z y x) of ``volume``, zeros where it lies outside the volume.

    Returns the volume's layout, ``(Z, Y, X)`` or ``(C, Z, Y, X)`` with ``box.shape``
    spatially, in the volume's dtype; the part inside is ``box.intersect(volume.bbox)``.
    The part inside is read in whole chunks (:func:`read_aligned`).
    """
    inside = box.intersect(volume.bbox)
    channels = (volume.shape[0],) if volume.ndim == 4 else ()
    if inside.empty:
        return np.zeros(channels + box.shape, dtype=volume.dtype)
    data = read_aligned(volume, inside)
    if inside == box:
        return data
    out = np.zeros(channels + box.shape, dtype=data.dtype)
    out[(Ellipsis, *inside.relative_to(box.start))] = data
    return out
