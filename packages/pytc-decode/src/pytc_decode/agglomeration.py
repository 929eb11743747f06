"""Region graph and agglomeration of watershed fragments (``pytc-decode --method ws``, steps
3 and 4 of :mod:`pytc_decode.ws`): touching fragment pairs scored by their boundary
affinities, merged lowest score first (waterz's convention: ``1 - mean affinity`` below the
agglomeration threshold merges), and the segmentation at each threshold of one merge history.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numba import njit

from pytc_decode.fragments import nearest_neighbour_float
from pytc_decode.kernels import lower_neighbour

__all__ = ["RegionGraph", "agglomerate", "agglomerate_frozen", "boundary_edges", "group_pairs", "join_seed_pieces",
           "merge_roots", "number_by_first_voxel", "region_graph", "relabel_by_first_voxel", "segmentations_at",
           "sum_groups"]


@njit(cache=True, nogil=True)
def boundary_edges(frag, aff):
    """(a, b, affinity) for every nearest-neighbour edge between two different fragments."""
    _, Z, Y, X = aff.shape
    count = 0
    for z in range(Z):
        for y in range(Y):
            for x in range(X):
                f = frag[z, y, x]
                if f == 0:
                    continue
                if z > 0 and frag[z - 1, y, x] != f and frag[z - 1, y, x] != 0:
                    count += 1
                if y > 0 and frag[z, y - 1, x] != f and frag[z, y - 1, x] != 0:
                    count += 1
                if x > 0 and frag[z, y, x - 1] != f and frag[z, y, x - 1] != 0:
                    count += 1
    a = np.empty(count, np.int64)
    b = np.empty(count, np.int64)
    w = np.empty(count, np.float32)
    i = 0
    for z in range(Z):
        for y in range(Y):
            for x in range(X):
                f = frag[z, y, x]
                if f == 0:
                    continue
                for c in range(3):
                    ok, g = lower_neighbour(frag, c, z, y, x)
                    if not ok or g == f or g == 0:
                        continue
                    a[i] = min(f, g)
                    b[i] = max(f, g)
                    w[i] = aff[c, z, y, x]
                    i += 1
    return a, b, w


@dataclass(frozen=True)
class RegionGraph:
    """Touching fragment pairs ``(u < v)`` with the affinities on their shared boundary."""

    #: number of fragments (ids 1..num_fragments)
    num_fragments: int
    u: np.ndarray
    v: np.ndarray
    #: sum of the boundary affinities and number of boundary edges, per pair
    affinity_sum: np.ndarray
    edge_count: np.ndarray
    #: the initial score of each pair (1 - mean or 1 - quantile of its affinities)
    score: np.ndarray
    #: each pair's tie-break key (lower merges first among equal scores); default
    #: ``u * (num_fragments + 1) + v``. A graph of regions (merged fragments) gives each edge
    #: the lowest key of the fragment pairs it joins, in the fragments' id order
    key: np.ndarray | None = None


def region_graph(fragments: np.ndarray, affinities: np.ndarray, merge_function: str = "mean",
                 quantile: float = 0.5) -> RegionGraph:
    """The region adjacency graph of ``fragments`` scored by their boundary affinities.

    ``merge_function = "mean"``: score 1 - mean affinity; ``"quantile"``: 1 - the ``quantile``
    of the boundary affinities for the initial edges (merged edges are scored by their mean,
    as their boundaries combine).
    """
    if merge_function not in ("mean", "quantile"):
        from pytc_core.errors import unknown_name_error

        raise unknown_name_error("merge function", merge_function, ["mean", "quantile"])
    aff = nearest_neighbour_float(affinities)
    frag = np.ascontiguousarray(fragments)
    n = int(frag.max()) if frag.size else 0
    if (merge_function == "mean" and frag.ndim == 3 and 0 < n < 2**31
            and aff.shape[1:] == frag.shape
            and (frag.dtype.kind == "u" or (frag.dtype.kind == "i" and int(frag.min()) >= 0))):
        u, v, sums, counts, exact = _mean_pairs(frag, aff, n)
        if exact:
            score = 1.0 - sums / np.maximum(counts, 1)
            return RegionGraph(n, u, v, sums, counts, score)
    a, b, w = boundary_edges(frag, aff)
    w = w + np.float32(0.0)  # -0.0 -> 0.0: the bits of w >= 0 sort as its values
    if n < 2**31 and w.size and not (w < 0).any():
        bits, starts, u, v = _group_sorted(a, b, w.view(np.uint32), n)
        w = bits.view(np.float32).astype(np.float64)
    else:
        order, starts, u, v = group_pairs(a, b, n, tiebreak=w)
        w = w[order].astype(np.float64)
    sums = sum_groups(w, starts)
    counts = sum_groups(np.ones(w.size, np.int64), starts)
    if merge_function == "mean":
        score = 1.0 - sums / np.maximum(counts, 1)
    else:
        score = 1.0 - w[starts + np.floor(quantile * (counts - 1)).astype(np.int64)]
    return RegionGraph(n, u, v, sums, counts, score.astype(np.float64))


@njit(cache=True, nogil=True)
def _mean_pairs(frag, aff, n):
    """The "mean" region graph of fragments (Z, Y, X) with ids 1..n over their (C, Z, Y, X)
    float32 affinities, in O(voxels + edges): the boundary edges bucketed by their lower id
    (a counting sort), each bucket summed per higher id. Returns (u, v, affinity sums (float64),
    edge counts, exact): the pairs in (u, v) order, and whether every pair's sum is exact.

    A pair's sum is exact when its affinities are finite, >= 0 and ``count * max`` is below
    2**52 ulps of its smallest nonzero affinity: then every partial sum is representable and
    the sum does not depend on the order of the additions, so it equals the sorted pairwise
    sum of the general path (``region_graph`` falls back to that path when ``exact`` is
    False)."""
    Z, Y, X = frag.shape
    start = np.zeros(n + 2, np.int64)
    for z in range(Z):
        for y in range(Y):
            for x in range(X):
                f = frag[z, y, x]
                if f == 0:
                    continue
                for c in range(3):
                    ok, g = lower_neighbour(frag, c, z, y, x)
                    if not ok or g == f or g == 0:
                        continue
                    start[min(f, g) + 1] += 1
    for i in range(1, n + 2):
        start[i] += start[i - 1]
    total = start[n + 1]
    bs = np.empty(total, np.int64)
    ws = np.empty(total, np.float32)
    pos = start[:-1].copy()
    for z in range(Z):
        for y in range(Y):
            for x in range(X):
                f = frag[z, y, x]
                if f == 0:
                    continue
                for c in range(3):
                    ok, g = lower_neighbour(frag, c, z, y, x)
                    if not ok or g == f or g == 0:
                        continue
                    lo = min(f, g)
                    i = pos[lo]
                    pos[lo] = i + 1
                    bs[i] = max(f, g)
                    ws[i] = aff[c, z, y, x]
    mark = np.full(n + 1, -1, np.int64)
    pairs = 0
    for a in range(1, n + 1):
        for i in range(start[a], start[a + 1]):
            if mark[bs[i]] != a:
                mark[bs[i]] = a
                pairs += 1
    u = np.empty(pairs, np.int64)
    v = np.empty(pairs, np.int64)
    sums = np.empty(pairs, np.float64)
    counts = np.empty(pairs, np.int64)
    acc = np.zeros(n + 1, np.float64)
    cnt = np.zeros(n + 1, np.int64)
    top = np.zeros(n + 1, np.float32)  # the largest affinity of the pair
    low = np.full(n + 1, np.inf, np.float32)  # its smallest nonzero affinity
    mark[:] = -1
    local = np.empty(n + 1, np.int64)
    exact = True
    k = 0
    for a in range(1, n + 1):
        m = 0
        for i in range(start[a], start[a + 1]):
            b = bs[i]
            w = ws[i]
            if mark[b] != a:
                mark[b] = a
                local[m] = b
                m += 1
            acc[b] += w
            cnt[b] += 1
            if w > top[b]:
                top[b] = w
            if w > 0.0 and w < low[b]:
                low[b] = w
            if not w >= 0.0:  # negative or NaN
                exact = False
        bl = np.sort(local[:m])
        for j in range(m):
            b = bl[j]
            if top[b] == np.inf:
                exact = False
            elif low[b] < np.inf:
                field = int((np.float32(low[b]).view(np.uint32) >> np.uint32(23)) & np.uint32(255))
                e = -149 if field == 0 else field - 150  # exponent of its ulp
                if cnt[b] * np.float64(top[b]) >= 2.0 ** (52 + e):
                    exact = False
            u[k] = a
            v[k] = b
            sums[k] = acc[b]
            counts[k] = cnt[b]
            k += 1
            acc[b] = 0.0
            cnt[b] = 0
            top[b] = 0.0
            low[b] = np.inf
    return u, v, sums, counts, exact


@njit(cache=True, nogil=True)
def _group_sorted(a, b, wbits, n):
    """:func:`group_pairs` of boundary edges (a < b <= n) with their affinities' bits
    (``wbits``, floats >= 0) as tiebreak, in O(edges): a counting sort by ``a``, then each
    ``a``'s edges sorted by (b, affinity). Returns (the sorted affinity bits, the first index
    of each pair, the pairs' u and v), the order of ``lexsort((w, key))``."""
    count = np.zeros(n + 2, np.int64)
    for i in range(a.size):
        count[a[i] + 1] += 1
    for i in range(1, n + 2):
        count[i] += count[i - 1]
    pos = count[:-1].copy()
    packed = np.empty(a.size, np.uint64)
    for i in range(a.size):
        packed[pos[a[i]]] = (np.uint64(b[i]) << np.uint64(32)) | np.uint64(wbits[i])
        pos[a[i]] += 1
    groups = 0
    for x in range(n + 1):
        lo, hi = count[x], count[x + 1]
        if hi - lo > 1:
            packed[lo:hi] = np.sort(packed[lo:hi])
        for i in range(lo, hi):
            if i == lo or (packed[i] >> np.uint64(32)) != (packed[i - 1] >> np.uint64(32)):
                groups += 1
    bits = np.empty(a.size, np.uint32)
    starts = np.empty(groups, np.int64)
    u = np.empty(groups, np.int64)
    v = np.empty(groups, np.int64)
    g = 0
    for x in range(n + 1):
        lo, hi = count[x], count[x + 1]
        for i in range(lo, hi):
            bits[i] = np.uint32(packed[i] & np.uint64(0xFFFFFFFF))
            y = np.int64(packed[i] >> np.uint64(32))
            if i == lo or y != v[g - 1]:
                starts[g] = i
                u[g] = x
                v[g] = y
                g += 1
    return bits, starts, u, v


def group_pairs(u: np.ndarray, v: np.ndarray, num_fragments: int,
                tiebreak: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sort edges ``(u[i], v[i])`` (ids up to ``num_fragments``) by pair (then by
    ``tiebreak``); returns (the sorting order, the first sorted index of each pair, the
    pairs' u and v)."""
    key = u.astype(np.int64) * (num_fragments + 1) + v
    order = (np.lexsort((tiebreak, key)) if tiebreak is not None
             else np.argsort(key, kind="stable"))
    key = key[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if key.size else np.zeros(0, int)
    pairs = key[starts]
    return order, starts, pairs // (num_fragments + 1), pairs % (num_fragments + 1)


def sum_groups(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Sums of the runs of sorted ``values`` that begin at ``starts`` (empty-safe)."""
    return np.add.reduceat(values, starts) if starts.size else np.zeros(0, values.dtype)


def agglomerate(graph: RegionGraph, max_threshold: float) -> np.ndarray:
    """Merge history ``(M, 3)`` float64 rows ``(absorbed, into, score)`` in merge order.

    Pairs are merged lowest score first while the score is below ``max_threshold``; where
    both merged regions touch a third, their two edges become one over the combined boundary
    (sums and counts added, score = 1 - mean, never below the score being merged), so scores
    never decrease along the history and a prefix of it is the agglomeration at a lower
    threshold. Ties go to the lower key: an edge's key is the lowest ``(u, v)`` of the
    fragment pairs it joins (``graph.key``: their keys). A region is named by its lowest
    fragment id, and a row is ``(higher name, lower name, score)`` (the lower name survives).
    Keys and names depend only on which fragments the regions hold, not on how many
    neighbours they have or in what order they grew, so an agglomeration of part of the graph
    that defers what it cannot decide (:func:`agglomerate_frozen`), followed by one of the
    rest, makes the same merges with the same rows.

    Compiled (Numba) on arrays: per-node singly linked lists of half-edges (dead ones dropped
    when their node is absorbed), a hash table of the live edges by (u, v) (linear probing
    over edge ids), a lazy binary heap of the combined edges' new scores (entries checked
    against a per-edge stamp) beside the initial edges walked in score order. A merge costs
    the absorbed region's degree (internally the region with fewer neighbours is absorbed;
    the rows name regions by their lowest fragment id whichever is absorbed).
    """
    n = int(graph.num_fragments)
    if graph.u.size == 0:
        return np.zeros((0, 3), np.float64)
    if n >= 3_000_000_000:  # pairs are keyed as u * (n + 1) + v in int64
        raise ValueError(f"{n} fragments: the agglomeration handles fewer than 3e9")
    rows, _ = _run(graph, max_threshold, np.zeros(0, np.uint8))
    return rows


def _run(graph: RegionGraph, max_threshold: float, frozen: np.ndarray
         ) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """The compiled merge loop on ``graph``; returns (rows, (u, v, sum, count, live) of every
    edge at the end: endpoints are the surviving nodes)."""
    n = int(graph.num_fragments)
    m = int(graph.u.size)
    idx = np.int32 if max(n + 1, 2 * m + 2) < 2**31 - 1 else np.int64
    u0 = np.ascontiguousarray(graph.u, dtype=np.int64)
    v0 = np.ascontiguousarray(graph.v, dtype=np.int64)
    score0 = np.ascontiguousarray(graph.score, dtype=np.float64)
    if graph.key is not None:
        key0 = np.ascontiguousarray(graph.key, dtype=np.int64)
        order = np.lexsort((key0, score0)).astype(idx)
    else:
        key0 = u0 * (n + 1) + v0
        if _pairs_sorted(u0, v0):  # region_graph's order: (score, u, v) = (score, edge index)
            order = np.argsort(score0, kind="stable").astype(idx)
        else:
            order = np.lexsort((key0, score0)).astype(idx)
    eu, ev = u0.astype(idx), v0.astype(idx)
    esum = np.array(graph.affinity_sum, dtype=np.float64)
    ecnt = np.array(graph.edge_count, dtype=np.int32 if int(np.sum(graph.edge_count)) < 2**31
                    else np.int64)  # no combined count overflows
    ekey = key0.copy()
    rows, stamp = _agglomerate(n, ekey, score0, order, eu, ev, esum, ecnt,
                               float(max_threshold), frozen)
    return rows, (eu, ev, esum, ecnt, stamp >= 0, ekey)


def agglomerate_frozen(graph: RegionGraph, frozen: np.ndarray, max_threshold: float
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, RegionGraph]:
    """The part of :func:`agglomerate` that a piece of a larger graph can decide on its own.

    ``graph`` holds every edge of the nodes not marked in ``frozen`` (bool, ``(n + 1,)``):
    frozen nodes (those touching the piece's faces) may have edges outside it. Node ids must
    follow the order of the larger graph's ids, and ``graph.key`` give each edge the lowest
    fragment pair it joins in that order (so ties break alike). Nodes are merged lowest edge
    first as in :func:`agglomerate`, except that popping an edge with a frozen end, or one
    whose tie component (the edges of exactly its score, through its ends) reaches a frozen
    node, freezes both ends instead. A merge that is made is then the lowest edge of both
    regions, its ties among regions whose make-up and keys the piece knows; with mean scores
    no merge elsewhere lowers an edge of theirs (a combined edge's mean lies between its
    parts'), so the whole graph's greedy makes the same merge at the same score with the
    same row (names are lowest ids). Requires exact sums (e.g. quantised affinities) so a
    combined score does not depend on the order of the additions.

    Returns (rows; ``(n + 1,)`` the region of each node, named by its lowest id; ``(n + 1,)``
    bool, the regions (by name) frozen at the end; the residual graph: their live edges, in
    region names). Regions never frozen are finished: their live edges all score at least
    ``max_threshold``, so they never merge."""
    n = int(graph.num_fragments)
    fr = np.zeros(n + 1, np.uint8)
    fr[np.asarray(frozen, dtype=bool)] = 1
    if graph.u.size == 0:
        none = np.zeros(0, np.int64)
        return (np.zeros((0, 3), np.float64), np.arange(n + 1, dtype=np.int64), fr != 0,
                RegionGraph(n, none, none, np.zeros(0), none, np.zeros(0), none))
    rows, (eu, ev, esum, ecnt, live, ekey) = _run(graph, max_threshold, fr)
    roots = merge_roots(rows, n, np.inf)
    # a frozen region never merges again: its mark is on the node that held it then
    frozen_end = np.zeros(n + 1, bool)
    frozen_end[roots[np.flatnonzero(fr)]] = True
    # rows name regions by their lowest id; a frozen region's live edges join its survivors
    keep = live & frozen_end[roots[eu]] & frozen_end[roots[ev]]
    a, b = roots[eu[keep]], roots[ev[keep]]
    residual = RegionGraph(n, np.minimum(a, b), np.maximum(a, b), esum[keep],
                           ecnt[keep].astype(np.int64), 1.0 - esum[keep] / ecnt[keep],
                           ekey[keep])
    return rows, roots, frozen_end, residual


@njit(cache=True, nogil=True)
def _pairs_sorted(u, v):
    for i in range(1, u.size):
        if u[i] < u[i - 1] or (u[i] == u[i - 1] and v[i] <= v[i - 1]):
            return False
    return True


@njit(cache=True, nogil=True, inline="always")
def _less(s1, k1, s2, k2):
    return s1 < s2 or (s1 == s2 and k1 < k2)


@njit(cache=True, nogil=True)
def _heap_push(hs, hk, he, hst, size, s, k, e, st):
    i = size
    while i > 0:
        p = (i - 1) >> 1
        if _less(s, k, hs[p], hk[p]):
            hs[i] = hs[p]
            hk[i] = hk[p]
            he[i] = he[p]
            hst[i] = hst[p]
            i = p
        else:
            break
    hs[i] = s
    hk[i] = k
    he[i] = e
    hst[i] = st


@njit(cache=True, nogil=True)
def _heap_pop(hs, hk, he, hst, size):
    """Remove the top (size is the size before); the caller read it first."""
    size -= 1
    s = hs[size]
    k = hk[size]
    e = he[size]
    st = hst[size]
    i = 0
    while True:
        c = 2 * i + 1
        if c >= size:
            break
        if c + 1 < size and _less(hs[c + 1], hk[c + 1], hs[c], hk[c]):
            c += 1
        if _less(hs[c], hk[c], s, k):
            hs[i] = hs[c]
            hk[i] = hk[c]
            he[i] = he[c]
            hst[i] = hst[c]
            i = c
        else:
            break
    if size > 0:
        hs[i] = s
        hk[i] = k
        he[i] = e
        hst[i] = st


@njit(cache=True, nogil=True)
def _heap_compact(hs, hk, he, hst, size, stamp):
    """Keep only the heap entries still valid (their stamp matches), re-heapified in place;
    returns the new size. The pop order of the valid entries does not change."""
    k = 0
    for i in range(size):
        if hst[i] == stamp[he[i]]:
            hs[k] = hs[i]
            hk[k] = hk[i]
            he[k] = he[i]
            hst[k] = hst[i]
            k += 1
    for start in range(k // 2 - 1, -1, -1):  # sift down (Floyd's heapify)
        s = hs[start]
        key = hk[start]
        e = he[start]
        st = hst[start]
        i = start
        while True:
            c = 2 * i + 1
            if c >= k:
                break
            if c + 1 < k and _less(hs[c + 1], hk[c + 1], hs[c], hk[c]):
                c += 1
            if _less(hs[c], hk[c], s, key):
                hs[i] = hs[c]
                hk[i] = hk[c]
                he[i] = he[c]
                hst[i] = hst[c]
                i = c
            else:
                break
        hs[i] = s
        hk[i] = key
        he[i] = e
        hst[i] = st
    return k


@njit(cache=True, nogil=True, inline="always")
def _slot(a, b, big, bits):
    """Home slot of pair (a, b) in a table of 2**bits (Fibonacci hashing)."""
    key = np.uint64(a * big + b)
    return np.int64((key * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(64 - bits))


@njit(cache=True, nogil=True)
def _find_edge(table, eu, ev, a, b, big, bits):
    """The live edge between a < b, or -1 (linear probing over edge ids)."""
    mask = table.size - 1
    i = _slot(a, b, big, bits)
    while True:
        e = table[i]
        if e < 0:
            return -1
        if eu[e] == a and ev[e] == b:
            return np.int64(e)
        i = (i + 1) & mask


@njit(cache=True, nogil=True)
def _insert_edge(table, eu, ev, e, big, bits):
    mask = table.size - 1
    i = _slot(np.int64(eu[e]), np.int64(ev[e]), big, bits)
    while table[i] >= 0:
        i = (i + 1) & mask
    table[i] = e


@njit(cache=True, nogil=True)
def _delete_edge(table, eu, ev, e, big, bits):
    """Remove edge e (under its current endpoints); backward-shift deletion, no tombstones."""
    mask = table.size - 1
    i = _slot(np.int64(eu[e]), np.int64(ev[e]), big, bits)
    while table[i] != e:
        i = (i + 1) & mask
    j = i
    while True:
        j = (j + 1) & mask
        f = table[j]
        if f < 0:
            break
        home = _slot(np.int64(eu[f]), np.int64(ev[f]), big, bits)
        if ((j - home) & mask) >= ((j - i) & mask):
            table[i] = f
            i = j
    table[i] = -1


@njit(cache=True, nogil=True)
def _decided(a, b, e, s, frozen, head, nxt, stamp, eu, ev, esc, clean_at, dirty_at, queue):
    """Whether the merge of a and b over edge e (score s) is the whole graph's for sure: both
    unfrozen, and the component of a and b in the edges scored exactly s (the merges whose
    order their names decide) holds no frozen node. Caches the answer on the component
    (clean_at / dirty_at = s): it does not change while s is the score being merged."""
    if frozen[a] != 0 or frozen[b] != 0:
        return False
    if clean_at[a] == s:
        return True
    if dirty_at[a] == s or dirty_at[b] == s:
        return False
    tie = False
    for x in (a, b):  # the common case: no other edge of a or b scores s
        h = np.int64(head[x])
        while h >= 0:
            f = h >> 1
            if f != e and stamp[f] >= 0 and esc[f] == s:
                tie = True
                break
            h = np.int64(nxt[h])
        if tie:
            break
    if not tie:
        return True
    count = 2
    queue[0] = a
    queue[1] = b
    clean_at[a] = s  # marks membership during the search
    clean_at[b] = s
    i = 0
    dirty = False
    while i < count:
        x = queue[i]
        i += 1
        if frozen[x] != 0:
            dirty = True
        h = np.int64(head[x])
        while h >= 0:
            f = h >> 1
            if stamp[f] >= 0 and esc[f] == s:
                y = np.int64(eu[f] + ev[f] - x)
                if clean_at[y] != s:
                    clean_at[y] = s
                    queue[count] = y
                    count += 1
            h = np.int64(nxt[h])
    if dirty:
        for j in range(count):
            clean_at[queue[j]] = np.nan
            dirty_at[queue[j]] = s
    return not dirty


@njit(cache=True, nogil=True)
def _agglomerate(n, ekey, score0, order, eu, ev, esum, ecnt, max_threshold, frozen):
    """The merge loop of :func:`agglomerate` (with ``frozen`` non-empty, of
    :func:`agglomerate_frozen`: it is updated); returns its ``(M, 3)`` rows (a view) and the
    edges' stamps (-1: gone)."""
    m = ekey.size
    big = n + 1
    freeze = frozen.size > 0
    low = np.arange(n + 1)  # a region's name: its lowest node id (kept by its survivor)
    esc = score0.copy()  # each live edge's current score (for the frozen mode's tie test)
    # frozen mode: the score at which a node's tie component was found free of (clean_at)
    # or holding (dirty_at) a frozen node; a scratch queue for that search
    clean_at = np.full(n + 1 if freeze else 0, np.nan)
    dirty_at = np.full(n + 1 if freeze else 0, np.nan)
    queue = np.empty(n + 1 if freeze else 0, np.int64)
    # half-edge h of edge h >> 1 in the list of one endpoint; lists are singly linked
    head = np.full(n + 1, -1, order.dtype)
    nxt = np.empty(2 * m, order.dtype)
    deg = np.zeros(n + 1, np.int64)
    for i in range(m - 1, -1, -1):
        a = eu[i]
        b = ev[i]
        nxt[2 * i] = head[a]
        head[a] = 2 * i
        nxt[2 * i + 1] = head[b]
        head[b] = 2 * i + 1
        deg[a] += 1
        deg[b] += 1
    stamp = np.zeros(m, np.int32)  # -1: dead; an entry is valid while its stamp matches
    bits = 4
    while (1 << bits) < m + m // 2:  # load factor at most 2/3
        bits += 1
    table = np.full(1 << bits, -1, order.dtype)  # the live edges by their (u, v)
    for i in range(m):
        _insert_edge(table, eu, ev, i, big, bits)
    cap = max(16, m // 8)
    hs = np.empty(cap, np.float64)
    hk = np.empty(cap, np.int64)
    he = np.empty(cap, order.dtype)
    hst = np.empty(cap, np.int32)
    size = 0
    cursor = 0
    rows = np.empty((max(n - 1, 0), 3), np.float64)  # a forest of n nodes has < n merges
    merges = 0
    while True:
        # the next entry: the initial edges in (score, u, v) order, or the heap's top
        from_init = False
        e0 = 0
        s0 = 0.0
        if cursor < m:
            e0 = order[cursor]
            s0 = score0[e0]
            k0 = ekey[e0]
            if size == 0 or not _less(hs[0], hk[0], s0, k0):
                from_init = True
        if from_init:
            e = np.int64(e0)
            s = s0
            st = 0
            cursor += 1
        elif size > 0:
            e = np.int64(he[0])
            s = hs[0]
            st = hst[0]
            _heap_pop(hs, hk, he, hst, size)
            size -= 1
        else:
            break
        if st != stamp[e]:
            continue
        if s >= max_threshold:
            break
        a = np.int64(eu[e])
        b = np.int64(ev[e])
        if freeze and not _decided(a, b, e, s, frozen, head, nxt, stamp, eu, ev, esc,
                                   clean_at, dirty_at, queue):
            frozen[a] = 1
            frozen[b] = 1
            continue
        if deg[a] >= deg[b]:
            keep, gone = a, b
        else:
            keep, gone = b, a
        rows[merges, 0] = max(low[a], low[b])
        rows[merges, 1] = min(low[a], low[b])
        rows[merges, 2] = s
        low[keep] = min(low[a], low[b])
        merges += 1
        stamp[e] = -1
        _delete_edge(table, eu, ev, e, big, bits)
        newdeg = deg[keep] - 1
        h = np.int64(head[gone])
        while h >= 0:
            f = h >> 1
            hn = np.int64(nxt[h])
            if stamp[f] >= 0:
                w = np.int64(eu[f] + ev[f] - gone)
                g = (_find_edge(table, eu, ev, keep, w, big, bits) if keep < w
                     else _find_edge(table, eu, ev, w, keep, big, bits))
                _delete_edge(table, eu, ev, f, big, bits)
                if g < 0:  # the edge moves to the kept region with its score
                    if keep < w:
                        eu[f] = keep
                        ev[f] = w
                    else:
                        eu[f] = w
                        ev[f] = keep
                    _insert_edge(table, eu, ev, f, big, bits)
                    nxt[h] = head[keep]
                    head[keep] = h
                    newdeg += 1
                else:  # both regions touch w: one edge over the combined boundary
                    esum[g] += esum[f]
                    ecnt[g] += ecnt[f]
                    stamp[f] = -1
                    stamp[g] += 1
                    deg[w] -= 1
                    sg = 1.0 - esum[g] / ecnt[g]
                    if sg < s:
                        sg = s
                    esc[g] = sg
                    if size == hs.size:  # full: drop the outdated entries, grow if need be
                        size = _heap_compact(hs, hk, he, hst, size, stamp)
                        if size > (3 * hs.size) // 4:
                            cap = hs.size + hs.size // 2
                            hs2 = np.empty(cap, np.float64)
                            hs2[:size] = hs[:size]
                            hs = hs2
                            hk2 = np.empty(cap, np.int64)
                            hk2[:size] = hk[:size]
                            hk = hk2
                            he2 = np.empty(cap, he.dtype)
                            he2[:size] = he[:size]
                            he = he2
                            hst2 = np.empty(cap, np.int32)
                            hst2[:size] = hst[:size]
                            hst = hst2
                    if ekey[f] < ekey[g]:
                        ekey[g] = ekey[f]
                    _heap_push(hs, hk, he, hst, size, sg, ekey[g], g, stamp[g])
                    size += 1
            h = hn
        head[gone] = -1
        deg[gone] = 0
        deg[keep] = newdeg
    return rows[:merges], stamp


def segmentations_at(fragments: np.ndarray, history: np.ndarray,
                     thresholds: Sequence[float]) -> list[np.ndarray]:
    """The segmentation (Z, Y, X) for each threshold: fragments joined by the merges of
    ``history`` scored below it, ids 1..N numbered by first voxel in C order."""
    frag = np.ascontiguousarray(fragments)
    n = int(frag.max()) if frag.size else 0
    if not len(thresholds):
        return []
    rows = np.asarray(history, dtype=np.float64).reshape(-1, 3)
    ids = rows[:, :2]
    if (frag.ndim == 0 or frag.dtype.kind not in "ui"
            or (frag.dtype.kind == "i" and frag.size and int(frag.min()) < 0)
            or (ids.size and not (ids.min() >= 0 and ids.max() <= n))):
        # the general path (NumPy indexing: its errors and wrap-around)
        return [relabel_by_first_voxel(frag, merge_roots(history, n, t)) for t in thresholds]
    # one replay of the history: the region of every fragment at each threshold
    stops = np.searchsorted(rows[:, 2], np.asarray(thresholds, dtype=np.float64), side="left")
    tables = _roots_at(rows[:, 0].astype(np.int64), rows[:, 1].astype(np.int64),
                       stops.astype(np.int64), n)
    return [relabel_by_first_voxel(frag, table) for table in tables]


@njit(cache=True, nogil=True)
def _roots_at(gone, into, stops, n):
    """Row t: the region (the id it ended in) of each fragment 0..n after the first
    ``stops[t]`` merges ``gone[i] -> into[i]`` (:func:`merge_roots` for each stop), from one
    replay of the merges; each row resolves every chain once (memoised, parents untouched)."""
    order = np.argsort(stops, kind="mergesort")
    parent = np.arange(n + 1)
    tables = np.full((stops.size, n + 1), -1, np.int64)
    path = np.empty(n + 1, np.int64)
    done = 0
    for j in range(stops.size):
        t = order[j]
        while done < stops[t]:
            parent[gone[done]] = into[done]
            done += 1
        row = tables[t]
        for x in range(n + 1):
            depth = 0
            a = x
            while row[a] < 0 and parent[a] != a:
                path[depth] = a
                depth += 1
                a = parent[a]
            r = row[a] if row[a] >= 0 else a
            row[a] = r
            for i in range(depth):
                row[path[i]] = r
    return tables


def merge_roots(history: np.ndarray, num_fragments: int, threshold: float) -> np.ndarray:
    """Region of each fragment id (0..num_fragments) after the merges of ``history`` scored
    below ``threshold``: the id of the region it ended in."""
    history = np.asarray(history, dtype=np.float64).reshape(-1, 3)
    k = int(np.searchsorted(history[:, 2], threshold, side="left"))
    parent = np.arange(num_fragments + 1, dtype=np.int64)
    parent[history[:k, 0].astype(np.int64)] = history[:k, 1].astype(np.int64)
    while True:  # pointer jumping: each pass halves every chain
        nxt = parent[parent]
        if np.array_equal(nxt, parent):
            return parent
        parent = nxt


def relabel_by_first_voxel(fragments: np.ndarray, table: np.ndarray) -> np.ndarray:
    """``table[fragments]`` renumbered 1..N in the C order of each segment's first voxel
    (0 stays 0), in the dtype of ``fragments``; one pass over the voxels."""
    frag = np.ascontiguousarray(fragments)
    out = np.empty_like(frag)
    _relabel_first(frag.reshape(-1), np.ascontiguousarray(table, dtype=np.int64),
                   out.reshape(-1))
    return out


@njit(cache=True, nogil=True)
def _relabel_first(frag, table, out):
    new = np.zeros(table.size, np.int64)
    nxt = 1
    for i in range(frag.size):
        r = table[frag[i]]
        if r == 0:
            out[i] = 0
            continue
        k = new[r]
        if k == 0:
            k = nxt
            new[r] = k
            nxt += 1
        out[i] = k


def number_by_first_voxel(labels: np.ndarray) -> np.ndarray:
    """Ids renumbered 1..N in the C order of their first voxel (0 stays 0), in place."""
    return number_and_measure(labels)[0]


def number_and_measure(labels: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Ids of non-negative integer ``labels`` renumbered 1..N in the C order of their first
    voxel (0 stays 0), in place, in one pass over the voxels. Returns (labels, ``table``:
    old id → new id (int64, 0 for absent ids), ``first``: each new id's first voxel as a
    C-order index into ``labels`` (int64, -1 at 0), ``sizes``: voxels per new id (int64,
    index 0 the background's))."""
    work = labels if labels.flags.c_contiguous else np.ascontiguousarray(labels)
    flat = work.reshape(-1)  # a view: the kernel numbers in place
    top = int(flat.max()) if flat.size else 0
    table = np.zeros(top + 1, np.int64)
    first = np.full(top + 1, -1, np.int64)
    sizes = np.zeros(top + 1, np.int64)
    n = _number_first(flat, table, first, sizes)
    if work is not labels:
        labels[...] = work
    return labels, table, first[:n + 1], sizes[:n + 1]


@njit(cache=True, nogil=True)
def _number_first(flat, table, first, sizes):
    nxt = 1
    for i in range(flat.size):
        r = flat[i]
        if r == 0:
            sizes[0] += 1
            continue
        k = table[r]
        if k == 0:
            k = nxt
            table[r] = k
            first[k] = i
            nxt += 1
        flat[i] = k
        sizes[k] += 1
    return nxt - 1


def join_seed_pieces(seed_a: np.ndarray, seed_b: np.ndarray, affinity: np.ndarray,
                     counts: np.ndarray | None = None) -> np.ndarray:
    """Boundary affinities with those between two fragments of one seed set to 1: such
    fragments are pieces of one watershed basin cut by the fragment grid, so their edge
    scores 0 and they merge first, at every threshold (their edges to other fragments add up
    as the unbounded basin's would). ``seed_a``, ``seed_b``: each boundary edge's two seeds.
    With ``counts`` the entries are per pair (affinity sums over ``counts`` edges), and a
    joined pair's sum becomes its count."""
    same = (seed_a == seed_b) & (seed_a >= 0)
    if not same.any():
        return affinity
    one = affinity.dtype.type(1)
    return np.where(same, one if counts is None else counts.astype(affinity.dtype), affinity)
