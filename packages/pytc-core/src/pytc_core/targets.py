"""Training targets from instance labels: affinities, foreground, boundaries (vectorised numpy).

Affinity convention (shared with pytc-decode): channel ``c`` at voxel ``v`` describes the edge
between ``v`` and ``v + offsets[c]``; it is 1 when both voxels carry the same non-zero label.
Background (0) is never affine. Where ``v + offsets[c]`` falls outside the volume the affinity
is 0 and the mask is 0, so losses can ignore edges that cross the border.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "NEAREST_OFFSETS",
    "affinities_from_labels",
    "boundary_from_labels",
    "erode_labels",
    "foreground_from_labels",
    "long_range_offsets",
    "pair_slices",
]

#: the three nearest-neighbour offsets (z, y, x): the edges to the previous voxel along each axis
NEAREST_OFFSETS: tuple[tuple[int, int, int], ...] = ((-1, 0, 0), (0, -1, 0), (0, 0, -1))


def long_range_offsets(distances: Sequence[int] = (3, 9, 27),
                       anisotropy: Sequence[int] = (1, 1, 1)) -> tuple[tuple[int, int, int], ...]:
    """Nearest-neighbour offsets followed by long-range ones, BANIS/MWS style.

    For each distance d, the offsets (-d, 0, 0), (0, -d, 0), (0, 0, -d), with the z distance
    divided by ``anisotropy`` (z, y, x) for anisotropic data (at least 1).
    """
    out = list(NEAREST_OFFSETS)
    for d in distances:
        for axis in range(3):
            step = max(1, int(round(d / max(1, anisotropy[axis]))))
            off = [0, 0, 0]
            off[axis] = -step
            out.append(tuple(off))  # type: ignore[arg-type]
    return tuple(dict.fromkeys(out))  # drop duplicates, keep order


def pair_slices(shape: Sequence[int], offset: Sequence[int]):
    """Slices (of v, of v + offset) covering every v whose partner lies inside ``shape``."""
    src, dst = [], []
    for n, d in zip(shape, offset, strict=True):
        if abs(d) >= n:
            return None
        if d >= 0:
            src.append(slice(0, n - d))
            dst.append(slice(d, n))
        else:
            src.append(slice(-d, n))
            dst.append(slice(0, n + d))
    return tuple(src), tuple(dst)


def affinities_from_labels(
    labels: np.ndarray,
    offsets: Sequence[Sequence[int]] = NEAREST_OFFSETS,
) -> tuple[np.ndarray, np.ndarray]:
    """Affinities and their validity mask from (Z, Y, X) integer labels.

    Returns ``(affinities, mask)``, both float32 of shape (C, Z, Y, X) with C = len(offsets)
    (see the module docstring for the convention).
    """
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"labels must be 3D (Z, Y, X), got shape {labels.shape}")
    offsets = [tuple(int(v) for v in o) for o in offsets]
    aff = np.zeros((len(offsets), *labels.shape), dtype=np.float32)
    mask = np.zeros_like(aff)
    for c, off in enumerate(offsets):
        if len(off) != 3:
            raise ValueError(f"offset {off} must have 3 entries (z, y, x)")
        pair = pair_slices(labels.shape, off)
        if pair is None:
            continue
        src, dst = pair
        a, b = labels[src], labels[dst]
        aff[c][src] = (a == b) & (a != 0)
        mask[c][src] = 1.0
    return aff, mask


def foreground_from_labels(labels: np.ndarray) -> np.ndarray:
    """1 where the label is non-zero, as float32 (Z, Y, X)."""
    return (np.asarray(labels) != 0).astype(np.float32)


def boundary_from_labels(labels: np.ndarray) -> np.ndarray:
    """1 at voxels whose label differs from a 6-neighbour's (both sides of a contact), float32.

    Background voxels next to an object are boundary too; neighbours outside the volume are
    ignored (the border itself is not a boundary).
    """
    labels = np.asarray(labels)
    out = np.zeros(labels.shape, dtype=bool)
    for axis in range(labels.ndim):
        a = [slice(None)] * labels.ndim
        b = [slice(None)] * labels.ndim
        a[axis], b[axis] = slice(0, -1), slice(1, None)
        diff = labels[tuple(a)] != labels[tuple(b)]
        out[tuple(a)] |= diff
        out[tuple(b)] |= diff
    return out.astype(np.float32)


def erode_labels(labels: np.ndarray, steps: int, *, in_plane: bool = False) -> np.ndarray:
    """Shrink every object by ``steps`` voxels per side, so touching objects get a background
    gap of ``2 * steps`` voxels (``in_plane``: along y and x only, each z slice on its own).

    gunpowder's ``GrowBoundary(steps, only_xy)`` rule: a labelled voxel becomes background (0)
    unless every voxel within city-block distance ``steps`` (in-plane: within its z slice)
    carries its label; background counts as another label, so objects also recede from
    background by ``steps``; voxels outside the array do not count (the array's border
    erodes nothing). Equivalently, ``steps`` rounds of "keep a voxel only if its 6 (in-plane:
    4) neighbours inside the array keep its label". Returns a new (Z, Y, X) array, same dtype.
    """
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"labels must be 3D (Z, Y, X), got shape {labels.shape}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    out = labels.copy()
    axes = (1, 2) if in_plane else (0, 1, 2)
    for _ in range(int(steps)):
        keep = out != 0
        for axis in axes:
            lo = [slice(None)] * 3
            hi = [slice(None)] * 3
            lo[axis], hi[axis] = slice(0, -1), slice(1, None)
            differ = out[tuple(lo)] != out[tuple(hi)]
            keep[tuple(lo)] &= ~differ
            keep[tuple(hi)] &= ~differ
        eroded = np.where(keep, out, 0).astype(labels.dtype, copy=False)
        if np.array_equal(eroded, out):
            break
        out = eroded
    return out
