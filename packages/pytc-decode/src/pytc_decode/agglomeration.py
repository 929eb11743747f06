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

__all__ = ["RegionGraph", "agglomerate", "boundary_edges", "group_pairs", "merge_roots",
           "pair_sums",
           "number_by_first_voxel", "region_graph", "segmentations_at", "sum_groups"]


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
                    if c == 0:
                        if z == 0:
                            continue
                        g = frag[z - 1, y, x]
                    elif c == 1:
                        if y == 0:
                            continue
                        g = frag[z, y - 1, x]
                    else:
                        if x == 0:
                            continue
                        g = frag[z, y, x - 1]
                    if g == f or g == 0:
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
    a, b, w = boundary_edges(frag, aff)
    n = int(frag.max()) if frag.size else 0
    if merge_function == "mean":
        u, v, sums, counts = pair_sums(a, b, w, n)
        return RegionGraph(n, u, v, sums, counts, 1.0 - sums / np.maximum(counts, 1))
    order, starts, u, v = group_pairs(a, b, n, tiebreak=w)
    w = w[order].astype(np.float64)
    sums = sum_groups(w, starts)
    counts = sum_groups(np.ones(w.size, np.int64), starts)
    score = 1.0 - w[starts + np.floor(quantile * (counts - 1)).astype(np.int64)]
    return RegionGraph(n, u, v, sums, counts, score.astype(np.float64))


def pair_sums(a: np.ndarray, b: np.ndarray, w: np.ndarray, num_fragments: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pairs ``(u < v)`` of the edges ``(a[i] < b[i])`` with the float64 sum and the count of
    their weights ``w``, in (u, v) order: a counting sort by ``a`` and one pass, linear in
    the edges (the sort of a pair-keyed array it replaces took most of the region graph's
    time). Each pair's sum adds its edges in their input order."""
    u, v, sums, counts = _pair_sums(np.ascontiguousarray(a, dtype=np.int64),
                                    np.ascontiguousarray(b, dtype=np.int64),
                                    np.ascontiguousarray(w), int(num_fragments))
    return u, v, sums, counts


@njit(cache=True, nogil=True)
def _pair_sums(a, b, w, n):
    E = a.size
    start = np.zeros(n + 2, np.int64)
    for i in range(E):
        start[a[i] + 1] += 1
    for k in range(n + 1):
        start[k + 1] += start[k]
    fill = start[:-1].copy()
    order = np.empty(E, np.int64)
    for i in range(E):  # stable counting sort by a
        order[fill[a[i]]] = i
        fill[a[i]] += 1
    slot = np.full(n + 1, -1, np.int64)
    u = np.empty(E, np.int64)
    v = np.empty(E, np.int64)
    sums = np.zeros(E, np.float64)
    counts = np.zeros(E, np.int64)
    m = 0
    for x in range(n + 1):
        first = m
        for k in range(start[x], start[x + 1]):
            i = order[k]
            y = b[i]
            p = slot[y]
            if p < 0:
                p = m
                slot[y] = m
                u[m] = x
                v[m] = y
                m += 1
            sums[p] += w[i]
            counts[p] += 1
        for p in range(first, m):  # reset the slots, then order the group's pairs by v
            slot[v[p]] = -1
        if m - first > 1:
            idx = np.argsort(v[first:m], kind="mergesort") + first
            v[first:m] = v[idx]
            sums[first:m] = sums[idx]
            counts[first:m] = counts[idx]
    return u[:m].copy(), v[:m].copy(), sums[:m].copy(), counts[:m].copy()


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
    threshold. The region with more neighbours is kept (the lower id on a tie); equal scores
    go to the lower edge (edges are numbered in (u, v) order of the graph, a combined edge
    keeps the number of the edge it was combined into): the history is deterministic.

    Compiled (:func:`_agglomerate_arrays`): an indexed binary heap over the edges, union-find
    over the regions, and per region a linked list of its edge ends; merging walks the kept
    region's list once to mark its neighbours and moves or combines the other's. Working
    memory about 36 bytes per edge plus 40 per fragment (int32 indices below 2**31 edges).
    """
    num_edges = int(graph.u.size)
    index = np.int32 if 2 * num_edges < 2**31 - 1 and graph.num_fragments < 2**31 - 1 \
        else np.int64
    rows, m = _agglomerate_arrays(
        np.ascontiguousarray(graph.u), np.ascontiguousarray(graph.v),
        graph.affinity_sum.astype(np.float64), graph.edge_count.astype(index),
        graph.score.astype(np.float64), graph.num_fragments + 1, float(max_threshold),
        np.zeros(0, index))
    return rows[:m]


@njit(cache=True, nogil=True, inline="always")
def _before(key, a, b):
    """Heap order: lower score first, then lower edge number."""
    return key[a] < key[b] or (key[a] == key[b] and a < b)


@njit(cache=True, nogil=True)
def _sift_up(heap, pos, key, i):
    e = heap[i]
    while i > 0:
        parent = (i - 1) >> 1
        p = heap[parent]
        if not _before(key, e, p):
            break
        heap[i] = p
        pos[p] = i
        i = parent
    heap[i] = e
    pos[e] = i


@njit(cache=True, nogil=True)
def _sift_down(heap, pos, key, size, i):
    e = heap[i]
    while True:
        child = 2 * i + 1
        if child >= size:
            break
        if child + 1 < size and _before(key, heap[child + 1], heap[child]):
            child += 1
        c = heap[child]
        if not _before(key, c, e):
            break
        heap[i] = c
        pos[c] = i
        i = child
    heap[i] = e
    pos[e] = i


@njit(cache=True, nogil=True)
def _heap_remove(heap, pos, key, size, e):
    """Remove edge ``e`` from the heap of ``size`` entries; returns the new size."""
    i = pos[e]
    size -= 1
    if i != size:
        moved = heap[size]
        heap[i] = moved
        pos[moved] = i
        _sift_up(heap, pos, key, i)
        _sift_down(heap, pos, key, size, pos[moved])
    pos[e] = -1
    return size


@njit(cache=True, nogil=True, inline="always")
def _find(parent, x):
    while parent[x] != x:
        parent[x] = parent[parent[x]]  # path halving
        x = parent[x]
    return x


@njit(cache=True, nogil=True)
def _agglomerate_arrays(u0, v0, esum, ecnt, escore, nodes, max_threshold, index):
    """The greedy mean-affinity agglomeration of :func:`agglomerate` on edge arrays.

    ``u0``/``v0`` are read only; ``esum``, ``ecnt`` (0 marks a removed edge) and ``escore``
    are updated in place; ``index`` (empty) gives the integer type of the index arrays.
    Returns (rows (nodes, 3) float64, number of merges)."""
    E = u0.size
    parent = np.arange(nodes).astype(index.dtype)
    degree = np.zeros(nodes, index.dtype)
    head = np.full(nodes, -1, index.dtype)  # first edge end of each region's list
    nxt = np.empty(2 * E, index.dtype)  # end 2e is edge e at u0[e], end 2e + 1 at v0[e]
    for e in range(E - 1, -1, -1):
        a = u0[e]
        b = v0[e]
        nxt[2 * e] = head[a]
        head[a] = 2 * e
        degree[a] += 1
        nxt[2 * e + 1] = head[b]
        head[b] = 2 * e + 1
        degree[b] += 1
    heap = np.arange(E).astype(index.dtype)
    pos = np.arange(E).astype(index.dtype)
    for i in range(E // 2 - 1, -1, -1):
        _sift_down(heap, pos, escore, E, i)
    size = E
    mark = np.full(nodes, -1, index.dtype)
    rows = np.empty((nodes, 3), np.float64)
    m = 0
    while size > 0:
        e = heap[0]
        s = escore[e]
        if s >= max_threshold:
            break
        size = _heap_remove(heap, pos, escore, size, e)
        a = _find(parent, u0[e])
        b = _find(parent, v0[e])
        u, v = (a, b) if a < b else (b, a)
        keep, gone = (u, v) if degree[u] >= degree[v] else (v, u)
        rows[m, 0] = gone
        rows[m, 1] = keep
        rows[m, 2] = s
        m += 1
        ecnt[e] = 0
        degree[keep] -= 1
        # mark the kept region's neighbours with their edges (dropping removed edge ends)
        prev = -1
        end = head[keep]
        while end >= 0:
            f = end >> 1
            following = nxt[end]
            if ecnt[f] == 0:
                if prev < 0:
                    head[keep] = following
                else:
                    nxt[prev] = following
            else:
                w = _find(parent, v0[f] if end & 1 == 0 else u0[f])
                mark[w] = f
                prev = end
            end = following
        tail = prev
        # the absorbed region's edges: combined with the kept region's, or moved to it
        end = head[gone]
        while end >= 0:
            f = end >> 1
            following = nxt[end]
            if ecnt[f] != 0:
                w = _find(parent, v0[f] if end & 1 == 0 else u0[f])
                g = mark[w]
                if g >= 0:
                    esum[g] += esum[f]
                    ecnt[g] += ecnt[f]
                    ecnt[f] = 0
                    size = _heap_remove(heap, pos, escore, size, f)
                    degree[w] -= 1
                    score = 1.0 - esum[g] / ecnt[g]
                    escore[g] = score if score > s else s
                    _sift_up(heap, pos, escore, pos[g])
                    _sift_down(heap, pos, escore, size, pos[g])
                else:
                    mark[w] = f
                    degree[keep] += 1
                    nxt[end] = -1
                    if tail < 0:
                        head[keep] = end
                    else:
                        nxt[tail] = end
                    tail = end
            end = following
        head[gone] = -1
        degree[gone] = 0
        parent[gone] = keep
        end = head[keep]  # clear the marks
        while end >= 0:
            f = end >> 1
            if ecnt[f] != 0:
                mark[_find(parent, v0[f] if end & 1 == 0 else u0[f])] = -1
            end = nxt[end]
    return rows, m


def segmentations_at(fragments: np.ndarray, history: np.ndarray,
                     thresholds: Sequence[float]) -> list[np.ndarray]:
    """The segmentation (Z, Y, X) for each threshold: fragments joined by the merges of
    ``history`` scored below it, ids 1..N numbered by first voxel in C order (one pass over
    the voxels per threshold)."""
    n = int(fragments.max()) if fragments.size else 0
    flat = np.ascontiguousarray(fragments).reshape(-1)
    out = []
    for t in thresholds:
        roots = merge_roots(history, n, t)
        seg = np.empty(flat.size, fragments.dtype)
        _relabel_by_first_voxel(flat, roots, seg)
        out.append(seg.reshape(fragments.shape))
    return out


@njit(cache=True, nogil=True)
def _relabel_by_first_voxel(fragments, roots, out):
    """``out[i]`` = the number (1..N in order of first appearance) of ``roots[fragments[i]]``;
    0 stays 0."""
    number = np.zeros(roots.size, np.int64)
    nxt = 1
    for i in range(fragments.size):
        f = fragments[i]
        if f == 0:
            out[i] = 0
            continue
        r = roots[f]
        k = number[r]
        if k == 0:
            k = nxt
            number[r] = k
            nxt += 1
        out[i] = k


def merge_roots(history: np.ndarray, num_fragments: int, threshold: float) -> np.ndarray:
    """Region of each fragment id (0..num_fragments) after the merges of ``history`` scored
    below ``threshold``: the id of the region it ended in."""
    history = np.asarray(history, dtype=np.float64).reshape(-1, 3)
    k = int(np.searchsorted(history[:, 2], threshold, side="left"))
    parent = np.arange(num_fragments + 1, dtype=np.int64)
    parent[history[:k, 0].astype(np.int64)] = history[:k, 1].astype(np.int64)
    while True:  # pointer jumping: a region absorbed later points onwards
        nxt = parent[parent]
        if np.array_equal(nxt, parent):
            return parent
        parent = nxt


def number_by_first_voxel(labels: np.ndarray) -> np.ndarray:
    """Ids renumbered 1..N in the C order of their first voxel (0 stays 0), in place."""
    from pytc_decode.kernels import remap

    ids, first = np.unique(labels.reshape(-1), return_index=True)
    table = np.zeros(int(ids[-1]) + 1 if ids.size else 1, dtype=labels.dtype)
    nonzero = ids != 0
    order = np.argsort(first[nonzero], kind="stable")
    table[ids[nonzero][order]] = np.arange(1, order.size + 1, dtype=labels.dtype)
    return remap(labels, table, out=labels)
