"""Watershed fragments of an affinity graph: seeds (maxima of the distance transform of the
confident interior) and a seeded watershed flooding from them (``pytc-decode --method ws``,
steps 1 and 2 of :mod:`pytc_decode.ws`).

Arrays are channels first (C, Z, Y, X), channels 0-2 the z, y, x nearest-neighbour
affinities (channel c at voxel v links v and v - e_c); sizes and distances in voxels unless
``voxel_size`` (nm, z, y, x) is given.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numba import njit

from pytc_core.errors import UserError

__all__ = ["LEVELS", "flood", "fragment_seeds", "nearest_neighbour_float",
           "watershed_fragments"]

#: quantisation of the flooding priority (1 - edge affinity) into bucket-queue levels
LEVELS = 256


def nearest_neighbour_float(affinities: np.ndarray) -> np.ndarray:
    """Channels 0-2 as float32 in [0, 1] (unsigned integers are read as value / dtype max)."""
    aff = np.asarray(affinities)
    if aff.ndim != 4 or aff.shape[0] < 3:
        raise UserError(f"affinities have shape {aff.shape}, need (C, Z, Y, X) with C >= 3",
                        "pass channels-first z, y, x nearest-neighbour affinities")
    aff = aff[:3]
    if aff.dtype.kind == "u":
        return aff.astype(np.float32) / np.float32(np.iinfo(aff.dtype).max)
    if aff.dtype.kind != "f":
        raise UserError(f"affinities have dtype {aff.dtype}",
                        "use float affinities in [0, 1] or unsigned integers scaled to their max")
    return np.ascontiguousarray(aff, dtype=np.float32)


@njit(cache=True, nogil=True)
def _min_affinity(aff):
    """Lowest affinity of the (up to six) nearest-neighbour edges touching each voxel."""
    _, Z, Y, X = aff.shape
    out = np.ones((Z, Y, X), np.float32)
    for c in range(3):
        for z in range(Z):
            for y in range(Y):
                for x in range(X):
                    if (c == 0 and z == 0) or (c == 1 and y == 0) or (c == 2 and x == 0):
                        continue
                    a = aff[c, z, y, x]
                    if a < out[z, y, x]:
                        out[z, y, x] = a
                    if c == 0:
                        if a < out[z - 1, y, x]:
                            out[z - 1, y, x] = a
                    elif c == 1:
                        if a < out[z, y - 1, x]:
                            out[z, y - 1, x] = a
                    elif a < out[z, y, x - 1]:
                        out[z, y, x - 1] = a
    return out


@njit(cache=True, nogil=True)
def _max_filter_axis(a, radius, axis):
    """Running maximum over a window of 2 * radius + 1 voxels along ``axis`` (a new array)."""
    out = np.empty_like(a)
    Z, Y, X = a.shape
    n = a.shape[axis]
    for i in range(Z if axis != 0 else 1):
        for j in range(Y if axis != 1 else 1):
            for k in range(X if axis != 2 else 1):
                for p in range(n):
                    lo = max(0, p - radius)
                    hi = min(n, p + radius + 1)
                    m = -np.inf
                    for q in range(lo, hi):
                        if axis == 0:
                            v = a[q, j, k]
                        elif axis == 1:
                            v = a[i, q, k]
                        else:
                            v = a[i, j, q]
                        if v > m:
                            m = v
                    if axis == 0:
                        out[p, j, k] = m
                    elif axis == 1:
                        out[i, p, k] = m
                    else:
                        out[i, j, p] = m
    return out


def fragment_seeds(affinities: np.ndarray, seed_threshold: float = 0.5, seed_radius: int = 2,
                   *, seeds_2d: bool = False, voxel_size: Sequence[float] = (1.0, 1.0, 1.0),
                   mask: np.ndarray | None = None) -> np.ndarray:
    """Seed ids (Z, Y, X) uint32: maxima of the distance transform of the confident interior.

    The interior is the voxels all of whose (up to six) nearest-neighbour edges have an
    affinity above ``seed_threshold``, so a boundary excludes the voxels on both of its sides
    even where a few of its edges leak; its distance transform (to the nearest voxel outside, in nm when ``voxel_size`` is given)
    peaks on the medial axis of each object. A voxel is a seed where that distance equals the
    maximum within ``seed_radius`` voxels (in-plane only with ``seeds_2d``); touching seed
    voxels form one seed. Ids are 1..K, 0 = no seed.
    """
    import edt

    if not 0.0 <= seed_threshold <= 1.0:
        raise UserError(f"seed threshold {seed_threshold} is outside [0, 1]",
                        "use e.g. --set seed_threshold=0.9")
    aff = nearest_neighbour_float(affinities)
    interior = _min_affinity(aff) > seed_threshold
    if mask is not None:
        interior &= mask.astype(bool)
    if seeds_2d:
        dist = np.zeros(interior.shape, np.float32)
        for z in range(interior.shape[0]):
            dist[z] = edt.edt(np.ascontiguousarray(interior[z]),
                              anisotropy=tuple(voxel_size[1:]), black_border=False)
    else:
        dist = edt.edt(interior, anisotropy=tuple(voxel_size), black_border=False)
    dist = dist.astype(np.float32)
    peak = dist
    for axis in ((1, 2) if seeds_2d else (0, 1, 2)):
        peak = _max_filter_axis(peak, int(seed_radius), axis)
    maxima = (dist >= peak) & (dist > 0)
    return _label_mask(maxima, in_plane=seeds_2d)


def _label_mask(mask: np.ndarray, in_plane: bool = False) -> np.ndarray:
    """6-connected components of a boolean (Z, Y, X) mask (4-connected per section with
    ``in_plane``), uint32 ids 1..K: pytc's own CC kernel with every edge on, then the voxels
    with no neighbour in the mask (which that kernel leaves as background) as ids of their own."""
    from pytc_decode.cc import affinity_cc

    edges = np.full((3, *mask.shape), 255, np.uint8)  # every edge on (uint8 255 = 1.0)
    if in_plane:
        edges[0] = 0
    labels = affinity_cc(edges, 0.5, mask=mask).astype(np.uint32, copy=False)
    single = mask & (labels == 0)
    count = int(np.count_nonzero(single))
    labels[single] = np.arange(int(labels.max()) + 1, int(labels.max()) + 1 + count,
                               dtype=np.uint32)
    return labels


@njit(cache=True, nogil=True)
def flood(aff, seeds, mask, use_mask, levels):
    """Seeded watershed on the affinity graph (a minimum spanning forest grown from the seeds).

    Seeds are final at level 0. A final voxel offers each neighbour its label at the level
    ``round((1 - a) * (levels - 1))`` of the edge between them (a = its affinity; never below
    the level being processed); a voxel keeps its lowest offer (the first, among equal ones)
    and becomes final when that offer is taken from the bucket queue. So every voxel joins the
    seed it is linked to through the highest-affinity path, FIFO within a level: deterministic.
    Voxels outside the mask and voxels no seed reaches stay 0.
    """
    _, Z, Y, X = aff.shape
    n = Z * Y * X
    lab = seeds.copy().reshape(n)
    best = np.full(n, levels, np.int32)  # lowest level offered; -1 once final
    flat_mask = mask.reshape(n)
    head = np.full(levels, -1, np.int64)
    tail = np.full(levels, -1, np.int64)
    # the queue entries (a voxel, the next entry of its level), grown when full
    ent_voxel = np.empty(n + 64, np.int64)
    ent_next = np.empty(n + 64, np.int64)
    size = 0
    for v in range(n):  # every seed voxel at level 0, in C order
        if lab[v] != 0:
            best[v] = 0
            ent_voxel[size] = v
            ent_next[size] = -1
            if tail[0] < 0:
                head[0] = size
            else:
                ent_next[tail[0]] = size
            tail[0] = size
            size += 1
    YX = Y * X
    scale = levels - 1
    for level in range(levels):
        while head[level] >= 0:
            e = head[level]
            head[level] = ent_next[e]
            if head[level] < 0:
                tail[level] = -1
            v = ent_voxel[e]
            if best[v] != level:
                continue  # final already, or offered a lower level since this entry
            best[v] = -1
            z = v // YX
            r = v - z * YX
            y = r // X
            x = r - y * X
            for d in range(6):
                if d == 0:
                    if z == 0:
                        continue
                    u = v - YX
                    a = aff[0, z, y, x]
                elif d == 1:
                    if z + 1 >= Z:
                        continue
                    u = v + YX
                    a = aff[0, z + 1, y, x]
                elif d == 2:
                    if y == 0:
                        continue
                    u = v - X
                    a = aff[1, z, y, x]
                elif d == 3:
                    if y + 1 >= Y:
                        continue
                    u = v + X
                    a = aff[1, z, y + 1, x]
                elif d == 4:
                    if x == 0:
                        continue
                    u = v - 1
                    a = aff[2, z, y, x]
                else:
                    if x + 1 >= X:
                        continue
                    u = v + 1
                    a = aff[2, z, y, x + 1]
                if best[u] < 0 or (use_mask and not flat_mask[u]):
                    continue
                q = int((1.0 - a) * scale + 0.5)
                if q < level:
                    q = level
                elif q > scale:
                    q = scale
                if q >= best[u]:
                    continue
                best[u] = q
                lab[u] = lab[v]
                if size == ent_voxel.size:
                    grown = np.empty(2 * size, np.int64)
                    grown[:size] = ent_voxel
                    ent_voxel = grown
                    grown = np.empty(2 * size, np.int64)
                    grown[:size] = ent_next
                    ent_next = grown
                ent_voxel[size] = u
                ent_next[size] = -1
                if tail[q] < 0:
                    head[q] = size
                else:
                    ent_next[tail[q]] = size
                tail[q] = size
                size += 1
    return lab.reshape((Z, Y, X))


def watershed_fragments(affinities: np.ndarray, seeds: np.ndarray,
                        mask: np.ndarray | None = None) -> np.ndarray:
    """Fragments (Z, Y, X) uint32 grown from ``seeds`` over the nearest-neighbour affinities."""
    aff = nearest_neighbour_float(affinities)
    if seeds.shape != aff.shape[1:]:
        raise ValueError(f"seeds {seeds.shape} do not match affinities {aff.shape[1:]}")
    use_mask = mask is not None
    m = np.ascontiguousarray(mask, dtype=bool) if use_mask else np.ones(aff.shape[1:], bool)
    return flood(aff, np.ascontiguousarray(seeds, dtype=np.uint32), m, use_mask, LEVELS)
