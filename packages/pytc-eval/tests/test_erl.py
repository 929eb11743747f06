"""ERL / NERL on hand-computed cases, and against a transcription of funlib's networkx loop."""

import math

import networkx as nx
import numpy as np
import pytest

from pytc_core.errors import UserError
from pytc_eval import Skeletons, expected_run_length
from pytc_eval.erl import CORRECT, MERGED, OMITTED, SPLIT

A, B, C = 1, 2, 3


def lines(*specs):
    """Skeletons made of straight lines along x: spec = (skeleton id, number of nodes)."""
    ids, skel, pos, edges, n = [], [], [], [], 0
    for row, (sid, count) in enumerate(specs):
        for i in range(count):
            ids.append(n + i)
            skel.append(sid)
            pos.append((0.0, float(row), float(i)))
            if i:
                edges.append((n + i - 1, n + i))
        n += count
    return Skeletons(np.array(ids), np.array(skel), np.array(pos),
                     np.array(edges, np.int64).reshape(-1, 2))


# A: 5 nodes, length 4; B: 3 nodes, length 2; total 6; gt ERL = (16 + 4) / 6
SKEL = lines((A, 5), (B, 3))
GT_ERL = 20 / 6


def erl(segments, skel=SKEL, **kw):
    return expected_run_length(skel, np.array(segments, np.uint64), **kw)


def test_perfect():
    r = erl([10] * 5 + [20] * 3)
    assert r["erl"] == pytest.approx(20 / 6) and r["gt_erl"] == pytest.approx(GT_ERL)
    assert r["nerl"] == pytest.approx(1.0)
    assert (r["n_edges_correct"], r["n_edges_split"], r["n_edges_merged"],
            r["n_edges_omitted"]) == (6, 0, 0, 0)
    assert r["merge_stats"] == {} and r["split_stats"] == {}


def test_one_merge():
    r = erl([10] * 8)
    assert r["erl"] == 0 and r["nerl"] == 0 and r["n_edges_merged"] == 6
    assert r["merge_stats"] == {10: [A, B]}


def test_one_split():
    r = erl([10, 10, 10, 11, 11] + [20] * 3)
    # A: correct runs 2 (in 10) and 1 (in 11) → (4 + 1) / 4; B: 2² / 2
    assert r["erl"] == pytest.approx((4 / 6) * (5 / 4) + (2 / 6) * 2)
    assert r["split_stats"] == {A: [(10, 11)]} and r["n_edges_split"] == 1


def test_a_b_a_split_is_pooled_per_segment():
    r = erl([10, 10, 11, 10, 10] + [20] * 3)
    # both runs in segment 10 pool to C = 2 (not 1² + 1²)
    assert r["erl"] == pytest.approx((4 / 6) * (2**2 / 4) + (2 / 6) * 2)
    assert r["split_stats"] == {A: [(10, 11), (11, 10)]}


def test_merge_through_a_single_tip_node_and_merge_threshold():
    segments = [10] * 5 + [20, 20, 10]
    r = erl(segments)
    # segment 10 holds nodes of A and B: all of A's edges are merged; B keeps 20-20, splits 20-10
    assert r["erl"] == pytest.approx((2 / 6) * (1 / 2))
    assert r["merge_stats"] == {10: [A, B]}
    assert (r["n_edges_merged"], r["n_edges_split"], r["n_edges_correct"]) == (4, 1, 1)
    # em_erl's threshold: B has a single node in 10, ignored with merge_threshold = 2
    adapted = erl(segments, merge_threshold=2)
    assert adapted["erl"] == pytest.approx((4 / 6) * 4 + (2 / 6) * (1 / 2))
    assert adapted["merge_stats"] == {} and adapted["nerl"] == pytest.approx(17 / 20)


def test_merge_through_an_edgeless_skeleton():
    skel = lines((A, 5), (B, 3), (C, 1))
    r = erl([10] * 5 + [20] * 3 + [10], skel=skel)
    assert r["erl"] == pytest.approx((2 / 6) * 2)
    assert r["gt_erl"] == pytest.approx(GT_ERL)  # C has no length
    assert r["nerl"] == pytest.approx(0.2) and r["merge_stats"] == {10: [A, C]}
    assert r["n_skeletons"] == 3


def test_predicted_zero_on_nodes():
    r = erl([10, 0, 10, 10, 10, 20, 20, 0])
    # A: two edges omitted, C_10 = 2; B: one omitted, C_20 = 1; segment 0 "merges" A and B
    assert r["erl"] == pytest.approx((4 / 6) * 1 + (2 / 6) * (1 / 2))
    assert r["merge_stats"] == {0: [A, B]} and r["n_edges_omitted"] == 3
    details = erl([10, 0, 10, 10, 10, 20, 20, 0], return_details=True)
    assert details["edge_outcome"].tolist() == [OMITTED, OMITTED, CORRECT, CORRECT,
                                                CORRECT, OMITTED]


def test_everything_merged_and_outcome_codes():
    r = erl([7] * 8, return_details=True)
    assert r["erl"] == 0 and set(r["edge_outcome"].tolist()) == {MERGED}
    r = erl([1, 2, 3, 4, 5, 9, 9, 9], return_details=True)
    assert r["edge_outcome"].tolist() == [SPLIT] * 4 + [CORRECT] * 2


def test_ids_near_2_64_and_dict_lookup():
    top = 2**64 - 1
    skel = Skeletons(np.arange(8), np.array([top] * 5 + [top - 1] * 3, np.uint64),
                     SKEL.positions, SKEL.edges)
    lut = dict(enumerate([top, top, top, top - 2, top - 2, top - 3, top - 3, top - 3]))
    r = expected_run_length(skel, lut)
    assert r["erl"] == pytest.approx((4 / 6) * (4 + 1) / 4 + (2 / 6) * 2)
    assert r["split_stats"] == {top: [(top, top - 2)]}


def test_anisotropic_voxel_size_gives_nm():
    skel = Skeletons(np.arange(3), np.zeros(3, np.int64),
                     np.array([[0, 0, 0], [1, 0, 0], [1, 1, 1.0]]), np.array([[0, 1], [1, 2]]))
    r = expected_run_length(skel, np.ones(3, np.int64), voxel_size=(40, 4, 3))
    assert r["gt_erl"] == pytest.approx(45.0) and r["erl"] == pytest.approx(45.0)
    assert r["total_length_nm"] == pytest.approx(45.0)


def test_empty_and_bad_input():
    empty = lines((A, 1))
    r = expected_run_length(empty, np.array([3]))
    assert r["erl"] == 0 and r["gt_erl"] == 0 and math.isnan(r["nerl"])
    with pytest.raises(UserError, match="one integer segment id per node"):
        expected_run_length(SKEL, np.zeros(3, np.int64))
    with pytest.raises(UserError, match="node 7 has no segment"):
        expected_run_length(SKEL, {i: 1 for i in range(7)})
    with pytest.raises(UserError, match="merge_threshold"):
        expected_run_length(SKEL, np.ones(8, np.int64), merge_threshold=0)


def funlib_erl(skel: Skeletons, segments: np.ndarray, voxel_size) -> tuple[float, dict]:
    """funlib/evaluate/run_length.py (latest) on a networkx graph, lengths precomputed."""
    g = nx.Graph()
    for n, s, p in zip(skel.node_ids, skel.skeleton_ids, skel.positions, strict=True):
        g.add_node(int(n), skeleton_id=int(s), pos=p * np.asarray(voxel_size))
    lut = {int(n): int(s) for n, s in zip(skel.node_ids, segments, strict=True)}
    lengths = {}
    for u, v in skel.edges.tolist():
        g.add_edge(u, v, length=float(np.linalg.norm(g.nodes[u]["pos"] - g.nodes[v]["pos"])))
    for u, _v, d in g.edges(data=True):
        sid = g.nodes[u]["skeleton_id"]
        lengths[sid] = lengths.get(sid, 0) + d["length"]
    pairs = np.unique(np.array([[d["skeleton_id"], lut[n]] for n, d in g.nodes(data=True)]),
                      axis=0)
    segs, counts = np.unique(pairs[:, 1], return_counts=True)
    merging = set(segs[counts > 1].tolist())
    merged_sk = set(pairs[np.isin(pairs[:, 1], list(merging)), 0].tolist())
    correct: dict = {}
    splits: dict = {}
    for u, v in g.edges():
        sid = g.nodes[u]["skeleton_id"]
        su, sv = lut[u], lut[v]
        if su == 0 or sv == 0:
            continue
        if su != sv:
            splits.setdefault(sid, []).append((su, sv))
            continue
        if sid in merged_sk and su in merging:
            continue
        correct.setdefault(sid, {}).setdefault(su, []).append(g.edges[u, v]["length"])
    total = np.sum(list(lengths.values()))
    result = 0.0
    for sid, per_seg in correct.items():
        sk_erl = sum(np.sum(c) * (np.sum(c) / lengths[sid]) for c in per_seg.values())
        result += (lengths[sid] / total) * sk_erl
    return result, splits


@pytest.mark.parametrize("seed", range(6))
def test_matches_funlib_on_random_skeletons(seed):
    rng = np.random.default_rng(seed)
    n = 300
    skel_ids = np.sort(rng.integers(0, 12, n))
    edges = [(i - 1, i) for i in range(1, n)
             if skel_ids[i] == skel_ids[i - 1] and rng.random() < 0.9]
    skel = Skeletons(np.arange(n) * 3 + 5, skel_ids, rng.random((n, 3)) * 20,
                     (np.array(edges, np.int64).reshape(-1, 2)) * 3 + 5)
    segments = rng.integers(0, 15, n)
    consistent = rng.random(n) < 0.6  # most nodes in their skeleton's own segment
    segments[consistent] = skel_ids[consistent] + 100
    r = expected_run_length(skel, segments, voxel_size=(3, 2, 1))
    ref, splits = funlib_erl(skel, segments, (3, 2, 1))
    assert r["erl"] == pytest.approx(ref, rel=1e-12)
    assert {k: sorted(v) for k, v in r["split_stats"].items()} == \
        {k: sorted(v) for k, v in splits.items()}


def test_sparse_node_ids_take_the_hash_path():
    rng = np.random.default_rng(7)
    segments = rng.integers(0, 4, SKEL.num_nodes)
    dense = expected_run_length(SKEL, segments)
    big = 10**15
    sparse = Skeletons(SKEL.node_ids * big + 3, SKEL.skeleton_ids, SKEL.positions,
                       SKEL.edges * big + 3)
    assert expected_run_length(sparse, segments)["erl"] == dense["erl"]
    broken = Skeletons(sparse.node_ids, sparse.skeleton_ids, sparse.positions,
                       np.array([[3, 5]]))
    with pytest.raises(UserError, match=r"edge \[3, 5\] names a node id that does not exist"):
        broken.edge_index()
