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
from pytc_decode.kernels import flatten, lower_neighbour, union

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
def _interior(aff, threshold, mask, use_mask):
    """Voxels (Z, Y, X) bool all of whose (up to six) nearest-neighbour edges have an affinity
    above ``threshold`` (float32; a voxel without edges counts as affinity 1, NaN edges are
    ignored), and inside ``mask`` when ``use_mask``. One pass over the (C, Z, Y, X) float32
    affinities."""
    _, Z, Y, X = aff.shape
    out = np.empty((Z, Y, X), np.bool_)
    one = np.float32(1.0)
    for z in range(Z):
        for y in range(Y):
            for x in range(X):
                m = one
                a = aff[0, z, y, x]
                if z > 0 and a < m:
                    m = a
                if z + 1 < Z:
                    a = aff[0, z + 1, y, x]
                    if a < m:
                        m = a
                a = aff[1, z, y, x]
                if y > 0 and a < m:
                    m = a
                if y + 1 < Y:
                    a = aff[1, z, y + 1, x]
                    if a < m:
                        m = a
                a = aff[2, z, y, x]
                if x > 0 and a < m:
                    m = a
                if x + 1 < X:
                    a = aff[2, z, y, x + 1]
                    if a < m:
                        m = a
                out[z, y, x] = m > threshold and (not use_mask or mask[z, y, x])
    return out


@njit(cache=True, nogil=True)
def _max_filter(a, radius, axis):
    """Running maximum (Z, Y, X) over a window of ``2 * radius + 1`` voxels along ``axis``
    (clipped at the borders; a new array), the innermost loop always along x."""
    Z, Y, X = a.shape
    out = np.empty_like(a)
    if axis == 0:
        for p in range(Z):
            out[p] = a[p]
            for q in range(max(0, p - radius), min(Z, p + radius + 1)):
                for y in range(Y):
                    for x in range(X):
                        if a[q, y, x] > out[p, y, x]:
                            out[p, y, x] = a[q, y, x]
    elif axis == 1:
        for z in range(Z):
            for p in range(Y):
                out[z, p] = a[z, p]
                for q in range(max(0, p - radius), min(Y, p + radius + 1)):
                    for x in range(X):
                        if a[z, q, x] > out[z, p, x]:
                            out[z, p, x] = a[z, q, x]
    else:
        for z in range(Z):
            for y in range(Y):
                for p in range(X):
                    m = a[z, y, p]
                    for q in range(max(0, p - radius), min(X, p + radius + 1)):
                        if a[z, y, q] > m:
                            m = a[z, y, q]
                    out[z, y, p] = m
    return out


#: lines whose squared distances are all at most this are done by a local search in
#: :func:`_edt_kernel` (cheaper than the lower envelope when the distances are short)
NEAR = 256


def _unit_edt(interior: np.ndarray, in_plane: bool) -> np.ndarray:
    """Euclidean distance (Z, Y, X) float32 of each ``interior`` voxel to the nearest voxel
    outside it, in voxels (unit voxel size), per z-section with ``in_plane``; inf where no
    voxel is outside (the volume border is not a boundary). The same values as
    ``edt.edt(..., black_border=False)`` with unit anisotropy: squared distances are exact
    integers here (a row pass, then the lower envelope of parabolas along y and z, Felzenszwalb
    and Huttenlocher, in integer arithmetic), and the float32 square root is correctly rounded.
    Squared distances are held as int32 when they fit (every volume under 2**15 voxels a side)."""
    interior = np.ascontiguousarray(interior, dtype=bool)
    largest = sum((s - 1) ** 2 for s in interior.shape)
    small = largest < 2**30
    d2 = np.empty(interior.shape, np.int32 if small else np.int64)
    out = np.empty(interior.shape, np.float32)
    _edt_kernel(interior, bool(in_plane), d2, 2**30 if small else 2**62, out)
    return out


@njit(cache=True, nogil=True)
def _edt_kernel(interior, in_plane, d2, inf, out):
    """:func:`_unit_edt` into ``out``; ``d2`` (Z, Y, X) scratch for the squared distances,
    ``inf`` above any of them (no outside voxel in the line so far)."""
    Z, Y, X = interior.shape
    last_axis = 1 if in_plane else 2
    for z in range(Z):  # along x: distance to the nearest outside voxel in the row
        for y in range(Y):
            last = -1
            for x in range(X):
                if not interior[z, y, x]:
                    last = x
                    d2[z, y, x] = 0
                else:
                    d2[z, y, x] = inf if last < 0 else x - last
            last = -1
            for x in range(X - 1, -1, -1):
                if not interior[z, y, x]:
                    last = x
                elif last >= 0 and last - x < d2[z, y, x]:
                    d2[z, y, x] = last - x
            for x in range(X):
                d = np.int64(d2[z, y, x])
                if d != inf:
                    d2[z, y, x] = d * d
    n = max(Y, Z)
    f = np.empty(n, np.int64)
    pv = np.empty(n, np.int64)  # the envelope's parabolas (their apex positions)
    # where parabola k starts to be the lowest: bnum[k] / bden[k] (bden > 0), compared by
    # cross-multiplication so that every step is exact integer arithmetic
    bnum = np.empty(n, np.int64)
    bden = np.empty(n, np.int64)
    g = np.empty(n, np.int64)
    for axis in range(1, last_axis + 1):
        length = Y if axis == 1 else Z
        outer = Z if axis == 1 else Y
        final = axis == last_axis  # the last pass writes the distances themselves
        for i in range(outer):
            for x in range(X):
                finite = 0
                top = 0
                for p in range(length):
                    f[p] = d2[i, p, x] if axis == 1 else d2[p, i, x]
                    if f[p] != inf:
                        finite += 1
                        if f[p] > top:
                            top = f[p]
                if finite == length and top <= NEAR:
                    # every squared distance is small: each voxel only needs the voxels r
                    # with (q - r)**2 below its own (at most sqrt(NEAR) away); exact too
                    for q in range(length):
                        d = f[q]
                        t = 1
                        while t * t < d:
                            if q - t >= 0 and t * t + f[q - t] < d:
                                d = t * t + f[q - t]
                            if q + t < length and t * t + f[q + t] < d:
                                d = t * t + f[q + t]
                            t += 1
                        if not final:
                            g[q] = d
                        elif axis == 1:
                            out[i, q, x] = np.sqrt(np.float32(d))
                        else:
                            out[q, i, x] = np.sqrt(np.float32(d))
                    if not final:
                        for q in range(length):
                            if axis == 1:
                                d2[i, q, x] = g[q]
                            else:
                                d2[q, i, x] = g[q]
                    continue
                if finite == 0:  # no outside voxel in this line: all stay inf
                    if final:
                        for q in range(length):
                            if axis == 1:
                                out[i, q, x] = np.inf
                            else:
                                out[q, i, x] = np.inf
                    continue
                k = -1  # the lower envelope of the finite parabolas f[p] + (q - p)**2
                for p in range(length):
                    if f[p] == inf:
                        continue
                    num = 0
                    den = 1
                    while k >= 0:
                        r = pv[k]
                        num = (f[p] + p * p) - (f[r] + r * r)
                        den = 2 * (p - r)
                        if k > 0 and num * bden[k] <= bnum[k] * den:
                            k -= 1  # parabola k is nowhere lowest
                        else:
                            break
                    k += 1
                    pv[k] = p
                    bnum[k] = num
                    bden[k] = den
                j = 0
                for q in range(length):
                    while j < k and bnum[j + 1] < q * bden[j + 1]:
                        j += 1
                    r = pv[j]
                    d = (q - r) * (q - r) + f[r]
                    if final:
                        s = np.sqrt(np.float32(d))
                        if axis == 1:
                            out[i, q, x] = s
                        else:
                            out[q, i, x] = s
                    elif axis == 1:
                        d2[i, q, x] = d
                    else:
                        d2[q, i, x] = d


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
    use_mask = mask is not None
    m = (np.ascontiguousarray(np.broadcast_to(np.asarray(mask).astype(bool, copy=False),
                                              aff.shape[1:]))
         if use_mask else np.ones((1, 1, 1), bool))
    # compared as NumPy compares float32 affinities with it: a Python float as float32
    cmp = np.result_type(np.float32, seed_threshold)
    interior = _interior(aff, cmp.type(seed_threshold), m, use_mask)
    if all(float(s) == 1.0 for s in voxel_size[1 if seeds_2d else 0:]):
        dist = _unit_edt(interior, bool(seeds_2d))
    elif seeds_2d:
        dist = np.zeros(interior.shape, np.float32)
        for z in range(interior.shape[0]):
            dist[z] = edt.edt(np.ascontiguousarray(interior[z]),
                              anisotropy=tuple(voxel_size[1:]), black_border=False)
    else:
        dist = edt.edt(interior, anisotropy=tuple(voxel_size), black_border=False)
    dist = np.ascontiguousarray(dist, dtype=np.float32)
    peak = dist
    for axis in ((1, 2) if seeds_2d else (0, 1, 2)):
        peak = _max_filter(peak, int(seed_radius), axis)
    maxima = (dist >= peak) & (dist > 0)
    return _label_mask(maxima, in_plane=seeds_2d)


def _label_mask(mask: np.ndarray, in_plane: bool = False) -> np.ndarray:
    """6-connected components of a boolean (Z, Y, X) mask (4-connected per section with
    ``in_plane``), uint32 ids 1..K: the components of two or more voxels numbered by their
    first voxel in C order, then the single voxels in C order (the numbering of pytc's CC
    kernel with every edge on, which leaves single voxels as background, followed by them)."""
    return _label_mask_kernel(np.ascontiguousarray(mask, dtype=bool), bool(in_plane))


@njit(cache=True, nogil=True)
def _label_mask_kernel(mask, in_plane):
    """:func:`_label_mask`: one raster pass with union by minimum over provisional ids (in
    first-voxel order), then the final ids from the components' sizes."""
    Z, Y, X = mask.shape
    prov = np.zeros((Z, Y, X), np.int64)
    parent = np.zeros(16, np.int64)
    k = 0
    for z in range(Z):
        for y in range(Y):
            for x in range(X):
                if not mask[z, y, x]:
                    continue
                r = 0
                for d in range(1 if in_plane else 0, 3):
                    ok, p = lower_neighbour(prov, d, z, y, x)
                    if not ok or p == 0:
                        continue
                    r = p if r == 0 else union(parent, 0, r, p)
                if r == 0:
                    k += 1
                    if k == parent.size:
                        grown = np.empty(2 * parent.size, np.int64)
                        grown[:k] = parent[:k]
                        parent = grown
                    parent[k] = k
                    r = k
                prov[z, y, x] = r
    flatten(parent[:k + 1])
    size = np.zeros(k + 1, np.int64)
    for z in range(Z):
        for y in range(Y):
            for x in range(X):
                if prov[z, y, x] != 0:
                    size[parent[prov[z, y, x]]] += 1
    ids = np.zeros(k + 1, np.uint32)
    m = 0
    for i in range(1, k + 1):  # roots in first-voxel order: the components of 2+ voxels
        if parent[i] == i and size[i] > 1:
            m += 1
            ids[i] = m
    for i in range(1, k + 1):  # then the single voxels
        if parent[i] == i and size[i] == 1:
            m += 1
            ids[i] = m
    out = np.zeros((Z, Y, X), np.uint32)
    for z in range(Z):
        for y in range(Y):
            for x in range(X):
                if prov[z, y, x] != 0:
                    out[z, y, x] = ids[parent[prov[z, y, x]]]
    return out


def flood(aff: np.ndarray, seeds: np.ndarray, mask: np.ndarray, use_mask: bool,
          levels: int) -> np.ndarray:
    """Seeded watershed on the affinity graph (a minimum spanning forest grown from the seeds).

    Seeds are final at level 0. A final voxel offers each neighbour its label at the level
    ``round((1 - a) * (levels - 1))`` of the edge between them (a = its affinity; never below
    the level being processed); a voxel keeps its lowest offer (the first, among equal ones)
    and becomes final when that offer is taken from the bucket queue. So every voxel joins the
    seed it is linked to through the highest-affinity path, FIFO within a level (neighbours
    offered in the order -z, +z, -y, +y, -x, +x; seeds queued in C order): deterministic.
    Voxels outside the mask and voxels no seed reaches stay 0. ``aff`` (C, Z, Y, X) float32,
    ``seeds`` (Z, Y, X) uint32; returns uint32 (Z, Y, X).

    The volume is padded by one final voxel on every side and the edge levels are quantised
    once, so the loop has no bounds checks, divisions or float arithmetic.
    """
    _, Z, Y, X = aff.shape
    shape = (Z + 2, Y + 2, X + 2)
    level_dtype = np.uint8 if levels <= 256 else np.uint16
    lv = np.empty((3, *shape), level_dtype)
    lab = np.empty(shape, np.uint32)
    # -1: final, or never entered (border, outside mask); else the lowest level offered
    best = np.empty(shape, np.int16 if levels < 2**15 else np.int32)
    inner = aff.shape[1:]
    m = (np.ascontiguousarray(np.broadcast_to(mask, inner), dtype=bool) if use_mask
         else np.ones((1, 1, 1), bool))  # not read without use_mask
    _pad_inputs(aff, np.ascontiguousarray(np.broadcast_to(seeds, inner), dtype=np.uint32), m,
                bool(use_mask), int(levels), lv, lab, best)
    n = lab.size
    entry = np.int32 if n < 2**31 - 1 else np.int64
    out = _flood_padded(lv.reshape(3, n), lab.reshape(n), best.reshape(n), Y + 2, X + 2,
                        levels, np.empty(max(n // 4, 64), entry))
    return out.reshape(shape)[1:-1, 1:-1, 1:-1].copy()


@njit(cache=True, nogil=True)
def _pad_inputs(aff, seeds, mask, use_mask, levels, lv, lab, best):
    """Fill the padded (Z + 2, Y + 2, X + 2) inputs of :func:`_flood_padded` in one pass:
    ``lv[c]`` the level ``trunc((1 - a) * (levels - 1) + 0.5)`` clipped to [0, levels - 1]
    of the edge between a voxel and its -z/-y/-x neighbour (NaN and overflow: level 0, as
    NumPy's float -> int64 cast then ``clip`` gives on x86), ``lab`` the seeds, ``best`` =
    ``levels`` inside (not yet offered) and -1 on the border and outside the mask."""
    _, Z, Y, X = aff.shape
    scale = levels - 1
    lv[:] = 0
    lab[:] = 0
    best[:] = -1
    for c in range(3):
        for z in range(Z):
            for y in range(Y):
                for x in range(X):
                    q = (1.0 - np.float64(aff[c, z, y, x])) * scale + 0.5
                    if not (q < 9223372036854775808.0) or q < 1.0:  # NaN, >= 2**63, or <= 0
                        k = 0
                    elif q >= scale:
                        k = scale
                    else:
                        k = int(q)
                    lv[c, z + 1, y + 1, x + 1] = k
    for z in range(Z):
        for y in range(Y):
            for x in range(X):
                s = seeds[z, y, x]
                lab[z + 1, y + 1, x + 1] = s
                if use_mask and not mask[z, y, x] and s == 0:
                    continue
                best[z + 1, y + 1, x + 1] = levels


#: queue entries per storage block of :func:`_flood_padded` (a level's entries are read in
#: runs of this many contiguous voxels ids)
QUEUE_BLOCK = 4096


@njit(cache=True, nogil=True)
def _flood_padded(lv, lab, best, Y, X, levels, entries):
    """The bucket queue of :func:`flood` on flat padded arrays.

    Each level's FIFO is a chain of blocks of ``QUEUE_BLOCK`` voxel ids (``entries`` is the
    first storage, grown by doubling); a block is reused once its level has been read, so the
    storage holds about the voxels queued but not yet taken. The loop itself is
    :func:`_flood_levels`, which never reallocates (an array reassigned inside a Numba loop
    makes every access to it slower): when it runs short of free blocks it returns, the
    storage is doubled here and it resumes where it stopped."""
    n = lab.size
    B = QUEUE_BLOCK
    seeds = 0
    for v in range(n):
        if lab[v] != 0:
            seeds += 1
    nblocks = max(entries.size // B, 2 * levels, seeds // B + 8)
    data = np.empty(nblocks * B, entries.dtype)
    nxt = np.full(nblocks, -1, np.int64)
    stack = np.arange(nblocks - 1, -1, -1).astype(np.int64)  # free block ids, top at the end
    head_blk = np.full(levels, -1, np.int64)
    tail_blk = np.full(levels, -1, np.int64)
    tail_pos = np.zeros(levels, np.int64)  # next free slot in the tail block
    free = nblocks - 1  # stack[0..free] are free
    for v in range(n):  # the seeds in C order at level 0 (the blocks suffice, no growth)
        if lab[v] != 0:
            best[v] = 0
            if tail_blk[0] < 0 or tail_pos[0] == B:
                b = stack[free]
                free -= 1
                nxt[b] = -1
                if tail_blk[0] < 0:
                    head_blk[0] = b
                else:
                    nxt[tail_blk[0]] = b
                tail_blk[0] = b
                tail_pos[0] = 0
            data[tail_blk[0] * B + tail_pos[0]] = v
            tail_pos[0] += 1
    # state: the level being read, its read block (-1: start at its head), read position,
    # the top of the free stack
    state = np.array([0, -1, 0, free], np.int64)
    while not _flood_levels(lv, lab, best, Y * X, X, levels, data, nxt, stack, head_blk,
                            tail_blk, tail_pos, state):
        old = nblocks
        nblocks *= 2
        grown = np.empty(nblocks * B, data.dtype)
        grown[:old * B] = data
        data = grown
        gn = np.full(nblocks, -1, np.int64)
        gn[:old] = nxt
        nxt = gn
        free = state[3]
        gs = np.empty(nblocks, np.int64)
        gs[:free + 1] = stack[:free + 1]
        gs[free + 1:free + 1 + nblocks - old] = np.arange(nblocks - 1, old - 1, -1)
        stack = gs
        state[3] = free + nblocks - old
    return lab


@njit(cache=True, nogil=True)
def _flood_levels(lv, lab, best, YX, X, levels, data, nxt, stack, head_blk, tail_blk,
                  tail_pos, state):
    """Read the levels of :func:`_flood_padded` from ``state``; True when the queue is empty,
    False (``state`` saved) when fewer than the 6 free blocks one voxel may need are left."""
    B = QUEUE_BLOCK
    first = state[0]
    free = state[3]
    for level in range(first, levels):
        if level == first and state[1] >= 0:
            hb = state[1]
            hp = state[2]
        else:
            hb = head_blk[level]
            hp = 0
        if hb < 0:
            continue
        while True:
            if hb == tail_blk[level] and hp == tail_pos[level]:
                break  # empty (the tail block has no more entries)
            if hp == B:  # this block is read: next block, recycle it
                nb = nxt[hb]
                free += 1
                stack[free] = hb
                hb = nb
                hp = 0
                continue
            if free < 5:
                state[0] = level
                state[1] = hb
                state[2] = hp
                state[3] = free
                return False
            v = np.int64(data[hb * B + hp])
            hp += 1
            if best[v] != level:
                continue  # final already, or offered a lower level since this entry
            best[v] = -1
            label = lab[v]
            for d in range(6):
                if d == 0:
                    u = v - YX
                elif d == 1:
                    u = v + YX
                elif d == 2:
                    u = v - X
                elif d == 3:
                    u = v + X
                elif d == 4:
                    u = v - 1
                else:
                    u = v + 1
                if d == 0:
                    q = lv[0, v]
                elif d == 1:
                    q = lv[0, u]
                elif d == 2:
                    q = lv[1, v]
                elif d == 3:
                    q = lv[1, u]
                elif d == 4:
                    q = lv[2, v]
                else:
                    q = lv[2, u]
                qi = max(int(q), level)
                if qi >= best[u]:  # final (-1) or offered as low already: one branch
                    continue
                best[u] = qi
                lab[u] = label
                # push u on level qi
                tb = tail_blk[qi]
                tp = tail_pos[qi]
                if tb < 0 or tp == B:
                    b = stack[free]
                    free -= 1
                    nxt[b] = -1
                    if tb < 0:
                        head_blk[qi] = b
                    else:
                        nxt[tb] = b
                    tail_blk[qi] = b
                    tb = b
                    tp = 0
                data[tb * B + tp] = u
                tail_pos[qi] = tp + 1
        free += 1  # the level is done: its last block is free again
        stack[free] = hb
        head_blk[level] = -1
        tail_blk[level] = -1
    state[0] = levels
    state[3] = free
    return True


def watershed_fragments(affinities: np.ndarray, seeds: np.ndarray,
                        mask: np.ndarray | None = None) -> np.ndarray:
    """Fragments (Z, Y, X) uint32 grown from ``seeds`` over the nearest-neighbour affinities."""
    aff = nearest_neighbour_float(affinities)
    if seeds.shape != aff.shape[1:]:
        raise ValueError(f"seeds {seeds.shape} do not match affinities {aff.shape[1:]}")
    use_mask = mask is not None
    m = np.ascontiguousarray(mask, dtype=bool) if use_mask else np.ones(aff.shape[1:], bool)
    return flood(aff, np.ascontiguousarray(seeds, dtype=np.uint32), m, use_mask, LEVELS)
