"""Region graph and agglomeration of watershed fragments (``pytc-decode --method ws``, steps
3 and 4 of :mod:`pytc_decode.ws`): touching fragment pairs scored by their boundary
affinities, merged lowest score first (waterz's convention: ``1 - mean affinity`` below the
agglomeration threshold merges), and the segmentation at each threshold of one merge history.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numba import njit

from pytc_decode.fragments import nearest_neighbour_float

__all__ = ["RegionGraph", "agglomerate", "boundary_edges", "group_pairs", "merge_roots",
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
    order, starts, u, v = group_pairs(a, b, n, tiebreak=w)
    w = w[order].astype(np.float64)
    sums = sum_groups(w, starts)
    counts = sum_groups(np.ones(w.size, np.int64), starts)
    if merge_function == "mean":
        score = 1.0 - sums / np.maximum(counts, 1)
    else:
        score = 1.0 - w[starts + np.floor(quantile * (counts - 1)).astype(np.int64)]
    return RegionGraph(n, u, v, sums, counts, score.astype(np.float64))


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
    threshold. Ties go to the edge pushed first (lower (u, v)): the history is deterministic.
    """
    nodes = graph.num_fragments + 1
    adj: list[dict[int, int]] = [{} for _ in range(nodes)]
    eu = graph.u.astype(np.int64).tolist()
    ev = graph.v.astype(np.int64).tolist()
    esum = graph.affinity_sum.astype(np.float64).tolist()
    ecnt = graph.edge_count.astype(np.int64).tolist()
    stamp = [0] * len(eu)  # an edge's heap entries are valid while their stamp matches
    heap = []
    for e, (u, v, score) in enumerate(zip(eu, ev, graph.score.tolist(), strict=True)):
        adj[u][v] = e
        adj[v][u] = e
        heap.append((score, u, v, e, 0))
    heapq.heapify(heap)
    history = []
    while heap:
        s, _, _, e, st = heapq.heappop(heap)
        if st != stamp[e]:
            continue  # an outdated entry of an edge that was combined or absorbed
        if s >= max_threshold:
            break
        u, v = eu[e], ev[e]
        keep, gone = (u, v) if len(adj[u]) >= len(adj[v]) else (v, u)
        history.append((gone, keep, s))
        del adj[keep][gone]
        del adj[gone][keep]
        stamp[e] = -1
        for w, f in adj[gone].items():
            del adj[w][gone]
            g = adj[keep].get(w)
            if g is None:  # the edge moves to the kept region with its score
                adj[keep][w] = f
                adj[w][keep] = f
                eu[f], ev[f] = min(keep, w), max(keep, w)
            else:  # both regions touch w: one edge over the combined boundary
                esum[g] += esum[f]
                ecnt[g] += ecnt[f]
                stamp[f] = -1
                stamp[g] += 1
                heapq.heappush(heap, (max(1.0 - esum[g] / ecnt[g], s), eu[g], ev[g], g,
                                      stamp[g]))
        adj[gone] = {}
    return np.array(history, dtype=np.float64).reshape(-1, 3)


def segmentations_at(fragments: np.ndarray, history: np.ndarray,
                     thresholds: Sequence[float]) -> list[np.ndarray]:
    """The segmentation (Z, Y, X) for each threshold: fragments joined by the merges of
    ``history`` scored below it, ids 1..N numbered by first voxel in C order."""
    n = int(fragments.max()) if fragments.size else 0
    out = []
    for t in thresholds:
        roots = merge_roots(history, n, t)
        out.append(number_by_first_voxel(roots[fragments].astype(fragments.dtype)))
    return out


def merge_roots(history: np.ndarray, num_fragments: int, threshold: float) -> np.ndarray:
    """Region of each fragment id (0..num_fragments) after the merges of ``history`` scored
    below ``threshold``: the id of the region it ended in."""
    parent = np.arange(num_fragments + 1, dtype=np.int64)
    for gone, keep, score in history:
        if score >= threshold:
            break
        parent[int(gone)] = int(keep)
    roots = parent.copy()  # follow the chains (a region absorbed later points onwards)
    while True:
        nxt = parent[roots]
        if np.array_equal(nxt, roots):
            return roots
        roots = nxt


def number_by_first_voxel(labels: np.ndarray) -> np.ndarray:
    """Ids renumbered 1..N in the C order of their first voxel (0 stays 0), in place."""
    from pytc_decode.kernels import remap

    ids, first = np.unique(labels.reshape(-1), return_index=True)
    table = np.zeros(int(ids[-1]) + 1 if ids.size else 1, dtype=labels.dtype)
    nonzero = ids != 0
    order = np.argsort(first[nonzero], kind="stable")
    table[ids[nonzero][order]] = np.arange(1, order.size + 1, dtype=labels.dtype)
    return remap(labels, table, out=labels)
