"""Expected run length (ERL) and normalized ERL on ground-truth skeletons.

Mirrors ``funlib.evaluate.expected_run_length`` (``funlib/evaluate/run_length.py``,
``evaluate_skeletons``) edge rule for edge rule, vectorised over numpy edge arrays; NERL
and the ``merge_threshold`` follow PytorchConnectomics/em_erl (``compute_erl_score``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numba
import numpy as np

from pytc_core.errors import UserError
from pytc_eval.kernels import count_per_key, group_pairs, unique_inverse
from pytc_eval.skeletons import Skeletons

__all__ = ["OMITTED", "SPLIT", "MERGED", "CORRECT", "expected_run_length", "edge_lengths"]

#: Per-edge outcome codes (``edge_outcome`` in the details).
OMITTED, SPLIT, MERGED, CORRECT = 0, 1, 2, 3


def edge_lengths(skeletons: Skeletons, voxel_size: Sequence[float] = (1, 1, 1),
                 index: np.ndarray | None = None) -> np.ndarray:
    """Euclidean length of every edge in nm (float64): voxel positions × ``voxel_size`` (z, y, x)."""
    idx = skeletons.edge_index() if index is None else index
    d = (skeletons.positions[idx[:, 0]] - skeletons.positions[idx[:, 1]]) \
        * np.asarray(voxel_size, np.float64)
    return np.sqrt(np.einsum("ij,ij->i", d, d))


@numba.njit(cache=True, nogil=True)
def _classify_edges(u, v, seg, pair_of_node, merging_pair, length,
                    n_pairs):  # pragma: no cover - numba
    """One pass over the edges: outcome, and correct length (nm) per (skeleton, segment)
    pair, in funlib's rule order (omitted, split, merged, correct)."""
    n_edges = u.shape[0]
    outcome = np.empty(n_edges, np.int8)
    run_len = np.zeros(n_pairs, np.float64)
    for e in range(n_edges):
        a = u[e]
        su = seg[a]
        sv = seg[v[e]]
        if su == 0 or sv == 0:
            outcome[e] = 0
        elif su != sv:
            outcome[e] = 1
        elif merging_pair[pair_of_node[a]]:
            outcome[e] = 2
        else:
            outcome[e] = 3
            run_len[pair_of_node[a]] += length[e]
    return outcome, run_len


@dataclass(frozen=True)
class _Geometry:
    """What ERL needs of the skeletons alone (computed once per skeletons and voxel size):
    dense skeleton index of each node, edge ends, edge lengths (nm), skeleton lengths."""

    sk_ids: np.ndarray  # (S,) skeleton ids, sorted
    sk_node: np.ndarray  # (N,) int64 index into sk_ids
    u: np.ndarray  # (E,) int64 first node (row) of each edge
    v: np.ndarray
    length: np.ndarray  # (E,) float64 nm
    skel_len: np.ndarray  # (S,) float64 nm: an edge counts for its first node's skeleton
    has_edges: np.ndarray  # (S,) bool


def _geometry(skeletons: Skeletons, voxel_size: Sequence[float]) -> _Geometry:
    vs = tuple(float(x) for x in voxel_size)

    def make() -> _Geometry:
        idx = skeletons.edge_index()
        sk_ids, sk_node = _dense_ids(skeletons.skeleton_ids)
        length = edge_lengths(skeletons, vs, idx)
        first_sk = sk_node[idx[:, 0]]
        n_sk = sk_ids.shape[0]
        geo = _Geometry(sk_ids, sk_node.astype(np.int64), np.ascontiguousarray(idx[:, 0]),
                        np.ascontiguousarray(idx[:, 1]), length,
                        np.bincount(first_sk, weights=length, minlength=n_sk),
                        np.bincount(first_sk, minlength=n_sk) > 0)
        for array in vars(geo).values():  # shared by every call: returned read-only
            array.setflags(write=False)
        return geo

    return skeletons.cached(("erl geometry", vs), make)


def _dense_ids(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(unique sorted ids, index of each element): O(N) when ``ids`` is already sorted."""
    if ids.size and np.all(ids[1:] >= ids[:-1]):
        first = np.empty(ids.shape[0], bool)
        first[0] = True
        np.not_equal(ids[1:], ids[:-1], out=first[1:])
        return ids[first], np.cumsum(first) - 1
    return unique_inverse(ids)


def _segments_array(skeletons: Skeletons, node_segment) -> np.ndarray:
    if isinstance(node_segment, Mapping):
        try:
            values = [node_segment[int(n)] for n in skeletons.node_ids]
        except KeyError as exc:
            raise UserError(f"node {exc.args[0]} has no segment in node_segment",
                            "map every skeleton node id to a segment id") from None
        return np.array(values, dtype=np.uint64).reshape(-1)
    seg = np.asarray(node_segment)
    if seg.shape != (skeletons.num_nodes,) or not np.issubdtype(seg.dtype, np.integer):
        raise UserError(f"node_segment has shape {seg.shape} and dtype {seg.dtype}",
                        f"give one integer segment id per node ({skeletons.num_nodes})")
    if np.issubdtype(seg.dtype, np.signedinteger):
        seg = seg.astype(np.int64).view(np.uint64)
    return seg.astype(np.uint64, copy=False)


def expected_run_length(skeletons: Skeletons, node_segment: Mapping[int, int] | np.ndarray,
                        voxel_size: Sequence[float] = (1, 1, 1), merge_threshold: int = 1,
                        return_details: bool = False, stats: bool = True) -> dict:
    """ERL of a segmentation on ground-truth ``skeletons`` (funlib ``expected_run_length``).

    ``node_segment`` maps node id → predicted segment id (a dict, or an array aligned with
    ``skeletons.node_ids``); ``voxel_size`` (z, y, x nm) turns voxel positions into edge
    lengths in nm. Each edge (of the skeleton of its first node) is, in this order:
    *omitted* if either end is in segment 0; *split* if its ends are in different segments;
    *merged* if its segment is a merging segment, one that holds nodes of two or more
    skeletons (segment 0 and skeletons without edges included; a (skeleton, segment) pair
    counts only with >= ``merge_threshold`` nodes, em_erl's rule, 1 = funlib); else *correct*.

    ``erl = Σ_s (L_s/L) · Σ_g C_sg²/L_s`` in nm, C_sg the correct length of skeleton s in
    segment g pooled over the skeleton, L_s its length, L = ΣL_s over skeletons with edges;
    ``gt_erl = ΣL_s²/ΣL_s`` (0 when L = 0) and ``nerl = erl/gt_erl`` (NaN when gt_erl = 0).
    Returns those, ``merge_stats`` {segment: [skeleton ids]}, ``split_stats``
    {skeleton: [(seg_u, seg_v), ...]} (funlib's shapes), edge counts by outcome, and with
    ``return_details`` the per-edge ``edge_outcome`` codes, ``edge_length`` and the
    ``node_segment`` array; ``stats=False`` leaves ``merge_stats`` and ``split_stats`` empty
    (their dicts cost more than the scores when many edges split). Deviation: a skeleton whose edges all have length 0 contributes 0
    (funlib divides 0 by 0 and returns NaN for the whole ERL).
    """
    if merge_threshold < 1:
        raise UserError(f"merge_threshold must be >= 1, got {merge_threshold}",
                        "use 1 (funlib) or a small node count such as 5")
    seg = _segments_array(skeletons, node_segment)
    geo = _geometry(skeletons, voxel_size)
    sk_ids, sk_node, u, v = geo.sk_ids, geo.sk_node, geo.u, geo.v
    skel_len, has_edges = geo.skel_len, geo.has_edges
    n_sk = sk_ids.shape[0]

    # (skeleton, segment) pairs; a segment merges when >= 2 skeletons hold >= k nodes in it
    pair_of_node, first = group_pairs(sk_node.view(np.uint64), seg)
    pair_sk, pair_seg = sk_node[first], seg[first]
    pair_count = np.bincount(pair_of_node, minlength=first.shape[0])
    big = pair_count >= merge_threshold
    merging_pair = count_per_key(pair_seg, big) > 1

    # an edge belongs to its first node's skeleton, so its pair is (skeleton, seg[u]);
    # run_len[p] is C_sg, the correct length of skeleton s in segment g pooled over s
    outcome, run_len = _classify_edges(u, v, seg, pair_of_node, merging_pair, geo.length,
                                       pair_sk.shape[0])
    split = outcome == SPLIT
    total = float(skel_len[has_edges].sum())
    c2 = np.bincount(pair_sk, weights=run_len * run_len, minlength=n_sk)
    with np.errstate(divide="ignore", invalid="ignore"):
        per_skel = np.where(skel_len > 0, c2 / skel_len, 0.0)
        erl = float(np.sum((skel_len / total) * per_skel)) if total > 0 else 0.0
    gt_erl = float(np.dot(skel_len, skel_len) / total) if total > 0 else 0.0
    nerl = erl / gt_erl if gt_erl > 0 else float("nan")

    sel = np.flatnonzero(merging_pair & big)
    n_merging = int(np.unique(pair_seg[sel]).shape[0])
    merge_stats: dict[int, list[int]] = {}
    split_stats: dict[int, list[tuple[int, int]]] = {}
    if stats:
        order = sel[np.lexsort((pair_sk[sel], pair_seg[sel]))]
        for g, sk in zip(pair_seg[order].tolist(), sk_ids[pair_sk[order]].tolist(),
                         strict=True):
            merge_stats.setdefault(g, []).append(sk)
        split_edges = np.flatnonzero(split)
        for s, a, b in zip(sk_ids[sk_node[u[split_edges]]].tolist(),
                           seg[u[split_edges]].tolist(), seg[v[split_edges]].tolist(),
                           strict=True):
            split_stats.setdefault(s, []).append((a, b))

    out = {
        "erl": erl,
        "gt_erl": gt_erl,
        "nerl": nerl,
        "merge_threshold": int(merge_threshold),
        "merge_stats": merge_stats,
        "split_stats": split_stats,
        "n_skeletons": int(n_sk),
        "n_skeleton_nodes": int(skeletons.num_nodes),
        "n_edges": int(u.shape[0]),
        "n_edges_omitted": int(np.count_nonzero(outcome == OMITTED)),
        "n_edges_split": int(np.count_nonzero(split)),
        "n_edges_merged": int(np.count_nonzero(outcome == MERGED)),
        "n_edges_correct": int(np.count_nonzero(outcome == CORRECT)),
        "n_merging_segments": n_merging,
        "total_length_nm": total,
    }
    if return_details:
        out.update(edge_outcome=outcome, edge_length=geo.length, node_segment=seg)
    return out
