"""Expected run length (ERL) and normalized ERL on ground-truth skeletons.

Mirrors ``funlib.evaluate.expected_run_length`` (``funlib/evaluate/run_length.py``,
``evaluate_skeletons``) edge rule for edge rule, vectorised over numpy edge arrays; NERL
and the ``merge_threshold`` follow PytorchConnectomics/em_erl (``compute_erl_score``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from pytc_core.errors import UserError

from pytc_eval.skeletons import Skeletons

__all__ = ["OMITTED", "SPLIT", "MERGED", "CORRECT", "expected_run_length", "edge_lengths"]

#: Per-edge outcome codes (``edge_outcome`` in the details).
OMITTED, SPLIT, MERGED, CORRECT = 0, 1, 2, 3


def edge_lengths(skeletons: Skeletons, voxel_size: Sequence[float] = (1, 1, 1)) -> np.ndarray:
    """Euclidean length of every edge in nm (float64): voxel positions × ``voxel_size`` (z, y, x)."""
    idx = skeletons.edge_index()
    d = (skeletons.positions[idx[:, 0]] - skeletons.positions[idx[:, 1]]) \
        * np.asarray(voxel_size, np.float64)
    return np.sqrt(np.einsum("ij,ij->i", d, d))


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
                        return_details: bool = False) -> dict:
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
    ``node_segment`` array. Deviation: a skeleton whose edges all have length 0 contributes 0
    (funlib divides 0 by 0 and returns NaN for the whole ERL).
    """
    if merge_threshold < 1:
        raise UserError(f"merge_threshold must be >= 1, got {merge_threshold}",
                        "use 1 (funlib) or a small node count such as 5")
    seg = _segments_array(skeletons, node_segment)
    idx = skeletons.edge_index()
    length = edge_lengths(skeletons, voxel_size)
    sk_ids, sk_node = np.unique(skeletons.skeleton_ids, return_inverse=True)
    seg_ids, seg_node = np.unique(seg, return_inverse=True)
    n_sk, n_seg = sk_ids.shape[0], seg_ids.shape[0]

    # merging segments: segments holding >= merge_threshold nodes of two or more skeletons
    pair_key, pair_count = np.unique(sk_node.astype(np.int64) * n_seg + seg_node,
                                     return_counts=True)
    big = pair_key[pair_count >= merge_threshold]
    big_seg = big % n_seg
    merging = np.bincount(big_seg, minlength=n_seg) > 1

    u, v = idx[:, 0], idx[:, 1]
    edge_sk = sk_node[u]
    su, sv = seg[u], seg[v]
    outcome = np.full(idx.shape[0], CORRECT, np.int8)
    omitted = (su == 0) | (sv == 0)
    split = ~omitted & (su != sv)
    merged = ~omitted & ~split & merging[seg_node[u]]
    outcome[merged] = MERGED
    outcome[split] = SPLIT
    outcome[omitted] = OMITTED
    correct = outcome == CORRECT

    skel_len = np.bincount(edge_sk, weights=length, minlength=n_sk)
    has_edges = np.bincount(edge_sk, minlength=n_sk) > 0
    total = float(skel_len[has_edges].sum())
    key = edge_sk[correct].astype(np.int64) * n_seg + seg_node[u[correct]]
    run_key, run_inv = np.unique(key, return_inverse=True)
    run_len = np.bincount(run_inv, weights=length[correct], minlength=run_key.shape[0])
    c2 = np.bincount(run_key // n_seg, weights=run_len * run_len, minlength=n_sk)
    with np.errstate(divide="ignore", invalid="ignore"):
        per_skel = np.where(skel_len > 0, c2 / skel_len, 0.0)
        erl = float(np.sum((skel_len / total) * per_skel)) if total > 0 else 0.0
    gt_erl = float(np.dot(skel_len, skel_len) / total) if total > 0 else 0.0
    nerl = erl / gt_erl if gt_erl > 0 else float("nan")

    merge_stats = {}
    for s in np.flatnonzero(merging):
        merge_stats[int(seg_ids[s])] = [int(sk_ids[k]) for k in big[big_seg == s] // n_seg]
    split_stats: dict[int, list[tuple[int, int]]] = {}
    for e in np.flatnonzero(split):
        split_stats.setdefault(int(sk_ids[edge_sk[e]]), []).append((int(su[e]), int(sv[e])))

    out = {
        "erl": erl,
        "gt_erl": gt_erl,
        "nerl": nerl,
        "merge_threshold": int(merge_threshold),
        "merge_stats": merge_stats,
        "split_stats": split_stats,
        "n_skeletons": int(n_sk),
        "n_skeleton_nodes": int(skeletons.num_nodes),
        "n_edges": int(idx.shape[0]),
        "n_edges_omitted": int(np.count_nonzero(outcome == OMITTED)),
        "n_edges_split": int(np.count_nonzero(split)),
        "n_edges_merged": int(np.count_nonzero(merged)),
        "n_edges_correct": int(np.count_nonzero(correct)),
        "n_merging_segments": int(np.count_nonzero(merging)),
        "total_length_nm": total,
    }
    if return_details:
        out.update(edge_outcome=outcome, edge_length=length, node_segment=seg)
    return out
