"""The compiled agglomeration (:func:`pytc_decode.agglomeration.agglomerate`) against the
Python heapq implementation it replaced (kept here as the oracle): identical merge histories
on random graphs with ties and on the region graph of real (defective FlyEM) affinities."""

from __future__ import annotations

import heapq
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytc_decode.agglomeration import (
    RegionGraph,
    agglomerate,
    merge_roots,
    region_graph,
    relabel_by_first_voxel,
    segmentations_at,
)

DATA = Path(__file__).resolve().parents[3] / "examples" / "data" / "flyem_medulla_250.h5"


def agglomerate_oracle(graph: RegionGraph, max_threshold: float) -> np.ndarray:
    """pytc-decode's agglomeration before the compiled one (heapq over dicts), verbatim but
    for the survivor of a merge (the lower id) and the key of a combined edge (the lower of
    its two edges' keys): the compiled one names regions and breaks ties so."""
    nodes = graph.num_fragments + 1
    adj: list[dict[int, int]] = [{} for _ in range(nodes)]
    eu = graph.u.astype(np.int64).tolist()
    ev = graph.v.astype(np.int64).tolist()
    esum = graph.affinity_sum.astype(np.float64).tolist()
    ecnt = graph.edge_count.astype(np.int64).tolist()
    stamp = [0] * len(eu)
    heap = []
    ekey = list(zip(eu, ev, strict=True))  # an edge's key: the lowest fragment pair it joins
    for e, (u, v, score) in enumerate(zip(eu, ev, graph.score.tolist(), strict=True)):
        adj[u][v] = e
        adj[v][u] = e
        heap.append((score, u, v, e, 0))
    heapq.heapify(heap)
    history = []
    while heap:
        s, _, _, e, st_ = heapq.heappop(heap)
        if st_ != stamp[e]:
            continue
        if s >= max_threshold:
            break
        u, v = eu[e], ev[e]
        keep, gone = min(u, v), max(u, v)  # a region is named by its lowest id
        history.append((gone, keep, s))
        del adj[keep][gone]
        del adj[gone][keep]
        stamp[e] = -1
        for w, f in adj[gone].items():
            del adj[w][gone]
            g = adj[keep].get(w)
            if g is None:
                adj[keep][w] = f
                adj[w][keep] = f
                eu[f], ev[f] = min(keep, w), max(keep, w)
            else:
                esum[g] += esum[f]
                ecnt[g] += ecnt[f]
                ekey[g] = min(ekey[g], ekey[f])
                stamp[f] = -1
                stamp[g] += 1
                heapq.heappush(heap, (max(1.0 - esum[g] / ecnt[g], s), *ekey[g], g, stamp[g]))
        adj[gone] = {}
    return np.array(history, dtype=np.float64).reshape(-1, 3)


def random_graph(rng: np.random.Generator, n: int, m: int, levels: int) -> RegionGraph:
    """``m`` random pairs among ``n`` fragments (deduplicated, sorted by (u, v) as
    region_graph's), affinities quantised to ``levels`` values so scores tie often."""
    a = rng.integers(1, n + 1, m)
    b = rng.integers(1, n + 1, m)
    keep = a != b
    u, v = np.minimum(a, b)[keep], np.maximum(a, b)[keep]
    pairs = np.unique(u * (n + 1) + v)
    u, v = pairs // (n + 1), pairs % (n + 1)
    counts = rng.integers(1, 4, pairs.size)
    sums = rng.integers(0, levels + 1, pairs.size) / levels * counts
    return RegionGraph(n, u.astype(np.int64), v.astype(np.int64), sums.astype(np.float64),
                       counts.astype(np.int64), 1.0 - sums / counts)


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 60), density=st.floats(0.5, 6.0),
       levels=st.sampled_from([1, 2, 4, 10, 255]),
       threshold=st.sampled_from([0.0, 0.3, 0.5, 0.9, 1.0, 1.5]))
def test_matches_the_python_implementation(seed: int, n: int, density: float, levels: int,
                                           threshold: float) -> None:
    graph = random_graph(np.random.default_rng(seed), n, int(density * n), levels)
    expected = agglomerate_oracle(graph, threshold)
    got = agglomerate(graph, threshold)
    np.testing.assert_array_equal(got, expected)


def test_unsorted_pairs_give_the_same_history() -> None:
    graph = random_graph(np.random.default_rng(3), 40, 160, 4)
    perm = np.random.default_rng(4).permutation(graph.u.size)
    shuffled = RegionGraph(graph.num_fragments, graph.u[perm], graph.v[perm],
                           graph.affinity_sum[perm], graph.edge_count[perm], graph.score[perm])
    np.testing.assert_array_equal(agglomerate(shuffled, 1.0), agglomerate_oracle(graph, 1.0))


def test_hand_made_graph() -> None:
    # 1-2 (0.9 mean -> score 0.1), 2-3 (0.5), 1-3 (0.7 -> 0.3): merge 1+2 first (1 survives,
    # the lower id), then 1-3 and 2-3 combine into
    # sum 0.7 + 0.5 over 2 edges: score 0.4
    graph = RegionGraph(3, np.array([1, 1, 2]), np.array([2, 3, 3]), np.array([0.9, 0.7, 0.5]),
                        np.array([1, 1, 1]), np.array([0.1, 0.3, 0.5]))
    np.testing.assert_allclose(agglomerate(graph, 1.0), [[2, 1, 0.1], [3, 1, 0.4]])
    np.testing.assert_allclose(agglomerate(graph, 0.4), [[2, 1, 0.1]])
    assert agglomerate(RegionGraph(0, *(np.zeros(0),) * 5), 1.0).shape == (0, 3)


def test_relabel_by_first_voxel_and_roots() -> None:
    frag = np.array([[[3, 3, 1], [0, 2, 4]]], np.uint32)
    history = np.array([[4, 3, 0.2], [3, 1, 0.5]])
    np.testing.assert_array_equal(merge_roots(history, 4, 0.3), [0, 1, 2, 3, 3])
    np.testing.assert_array_equal(merge_roots(history, 4, 0.6), [0, 1, 2, 1, 1])
    seg = relabel_by_first_voxel(frag, merge_roots(history, 4, 0.6))
    np.testing.assert_array_equal(seg, [[[1, 1, 1], [0, 2, 1]]])
    assert seg.dtype == np.uint32
    segs = segmentations_at(frag, history, [0.1, 0.3])
    np.testing.assert_array_equal(segs[0], [[[1, 1, 2], [0, 3, 4]]])
    np.testing.assert_array_equal(segs[1], [[[1, 1, 2], [0, 3, 1]]])


@pytest.mark.slow
def test_matches_on_real_affinities() -> None:
    from pytc_core.synthetic import defective_affinities
    from pytc_core.targets import affinities_from_labels
    from pytc_decode.ws import fragment_seeds, nearest_neighbour_float, watershed_fragments

    with h5py.File(DATA) as f:
        labels = f["labels"][175:207, :96, :96].astype(np.uint32)
    aff = nearest_neighbour_float(
        defective_affinities(affinities_from_labels(labels)[0], seed=0, missing=(10,)))
    frag = watershed_fragments(aff, fragment_seeds(aff))
    for merge_function in ("mean", "quantile"):
        graph = region_graph(frag, aff, merge_function)
        assert graph.u.size > 1000
        np.testing.assert_array_equal(agglomerate(graph, 0.9), agglomerate_oracle(graph, 0.9))
