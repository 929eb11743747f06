"""Voxel metrics: VOI and Rand from a truth × prediction contingency table.

Mirrors ``funlib.evaluate.rand_voi`` (``funlib/evaluate/impl/rand_voi.hpp``): only voxels
where the ground truth is non-zero count, a predicted 0 is an ordinary label, Rand scores
include self-pairs, entropies are in bits. The table is built with a numba hash table keyed
on the (truth, prediction) id pair (:mod:`pytc_eval.kernels`), so memory grows with the number
of distinct pairs, never with the largest id; it is additive over blocks
(:class:`ContingencyTable`). Segments are counted as pytc-decode counts them: the distinct
non-zero ids (background 0 is not a segment), over every voxel of the arrays.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

from pytc_eval.kernels import insert, new_table, rehash, unique_inverse

__all__ = ["ContingencyTable", "adapted_rand_error", "rand_voi", "rand_voi_from_table"]


@numba.njit(cache=True, nogil=True, inline="always")
def _relabel(value, lut):  # pragma: no cover - numba
    """``lut[value]`` for ids the table covers, others (and every id with an empty table)
    unchanged."""
    v = np.uint64(value)
    if v < np.uint64(lut.shape[0]):
        return np.uint64(lut[v])
    return v


@numba.njit(cache=True, nogil=True)
def _count_pairs(truth, pred, lut, start, keys_a, keys_b, index, counts,
                 n_used):  # pragma: no cover - numba
    """Add voxels ``start..`` of the flat arrays to the table, each prediction id relabelled
    by ``lut`` first (ids beyond it kept; an empty ``lut`` relabels nothing); stop early when
    the table is half full.

    Returns (next start, entries used). Runs of equal (truth, pred) pairs are counted before
    touching the table, and the slots of recent pairs are remembered in a small direct-mapped
    cache (256 entries, in L1), so a run costs one probe of the table only the first time its
    pair is seen in a while: fragments, with several times a segmentation's runs, revisit
    the same few pairs along a row.
    """
    size = truth.shape[0]
    limit = index.shape[0] // 2
    memo_a = np.zeros(256, np.uint64)
    memo_b = np.zeros(256, np.uint64)
    memo_slot = np.full(256, -1, np.int64)  # slots stay valid: the table grows between calls
    i = start
    while i < size:
        a = np.uint64(truth[i])
        raw = pred[i]
        b = _relabel(raw, lut)
        j = i + 1
        while j < size and np.uint64(truth[j]) == a:
            if pred[j] != raw:  # another id: the same run only if it relabels the same
                raw = pred[j]
                if _relabel(raw, lut) != b:
                    break
            j += 1
        m = (b ^ (a << np.uint64(5)) ^ (b >> np.uint64(8))) & np.uint64(255)
        s = memo_slot[m]
        if s < 0 or memo_a[m] != a or memo_b[m] != b:
            s = np.int64(insert(keys_a, keys_b, index, a, b, n_used))
            if index[s] == n_used:
                n_used += 1
            memo_a[m] = a
            memo_b[m] = b
            memo_slot[m] = s
        counts[s] += j - i
        i = j
        if n_used >= limit:
            break
    return i, n_used


@numba.njit(cache=True, nogil=True)
def _merge_into(keys_a, keys_b, index, counts, a, b, n, n_used):  # pragma: no cover - numba
    for i in range(a.shape[0]):
        s = insert(keys_a, keys_b, index, a[i], b[i], n_used)
        if index[s] == n_used:
            n_used += 1
        counts[s] += n[i]
    return n_used


def _as_unsigned(labels: np.ndarray, name: str) -> np.ndarray:
    """A flat C-order view of integer ``labels`` (signed ids reinterpreted as unsigned)."""
    from pytc_core.errors import UserError

    if labels.dtype == np.bool_:
        labels = labels.view(np.uint8)
    if not np.issubdtype(labels.dtype, np.integer):
        raise UserError(f"{name} has dtype {labels.dtype}, not integer labels",
                        "pass an instance segmentation with integer ids (e.g. uint64)")
    flat = np.ascontiguousarray(labels).reshape(-1)
    if np.issubdtype(flat.dtype, np.signedinteger):
        flat = flat.view(flat.dtype.str.replace("i", "u"))
    return flat


_NO_RELABEL = np.zeros(0, np.uint64)


class ContingencyTable:
    """Counts of voxels per (truth id, prediction id) pair, accumulated over blocks.

    ``add(truth, pred)`` may be called once per block (any shapes, equal within a call).
    Every voxel is counted, truth 0 included (so the segments of the whole box are known);
    the metrics leave out truth 0, as funlib does. ``pairs()`` returns the table.
    """

    def __init__(self, capacity: int = 1 << 12) -> None:
        cap = 1 << max(4, int(capacity - 1).bit_length())
        self._a, self._b, self._index = new_table(cap)
        self._n = np.zeros(cap, np.int64)  # voxel count per slot
        self._used = 0

    def _grow(self) -> None:
        cap = self._index.shape[0] * 2
        a, b, index = new_table(cap)
        counts = np.zeros(cap, np.int64)
        rehash(self._a, self._b, self._index, self._n, a, b, index, counts)
        self._a, self._b, self._index, self._n = a, b, index, counts

    def add(self, truth: np.ndarray, pred: np.ndarray,
            relabel: np.ndarray | None = None) -> ContingencyTable:
        """Count the voxels of one block; ``truth`` and ``pred`` must have the same shape.

        ``relabel`` (uint64, indexed by prediction id) counts each prediction id ``p`` as
        ``relabel[p]``, ids from ``len(relabel)`` on as themselves: a segmentation counted
        straight from its fragments and their fragment → segment table."""
        from pytc_core.errors import UserError

        truth, pred = np.asarray(truth), np.asarray(pred)
        if truth.shape != pred.shape:
            raise UserError(f"ground truth has shape {truth.shape} but the segmentation has "
                            f"shape {pred.shape}", "evaluate volumes of the same shape")
        ta, pb = _as_unsigned(truth, "ground truth"), _as_unsigned(pred, "segmentation")
        lut = _NO_RELABEL if relabel is None else np.ascontiguousarray(relabel, np.uint64)
        start = 0
        while start < ta.shape[0]:
            start, self._used = _count_pairs(ta, pb, lut, start, self._a, self._b,
                                             self._index, self._n, self._used)
            if self._used >= self._index.shape[0] // 2:
                self._grow()
        return self

    def merge(self, other: ContingencyTable) -> ContingencyTable:
        """Add another table's counts to this one (tables of disjoint blocks add up)."""
        return self.add_pairs(*other.pairs(include_background=True))

    def add_pairs(self, a: np.ndarray, b: np.ndarray, n: np.ndarray) -> ContingencyTable:
        """Add counts ``n`` (int64) of (truth ``a``, prediction ``b``) pairs (uint64)."""
        a = np.ascontiguousarray(a, np.uint64)
        b = np.ascontiguousarray(b, np.uint64)
        n = np.ascontiguousarray(n, np.int64)
        for start in range(0, a.shape[0], 1 << 16):
            sl = slice(start, start + (1 << 16))
            while self._used + (sl.stop - sl.start) >= self._index.shape[0] // 2:
                self._grow()
            self._used = _merge_into(self._a, self._b, self._index, self._n, a[sl], b[sl],
                                     n[sl], self._used)
        return self

    def pairs(self, include_background: bool = False) -> tuple[np.ndarray, np.ndarray,
                                                               np.ndarray]:
        """(truth ids uint64, prediction ids uint64, voxel counts int64), sorted by (truth,
        pred); pairs with truth 0 only with ``include_background``."""
        used = self._index >= 0
        a, b, n = self._a[used], self._b[used], self._n[used]
        if not include_background:
            keep = a != 0
            a, b, n = a[keep], b[keep], n[keep]
        order = np.lexsort((b, a))
        return a[order], b[order], n[order]

    @property
    def total(self) -> int:
        """Number of counted voxels (ground truth non-zero)."""
        return int(self.pairs()[2].sum())

    @property
    def n_segments(self) -> int:
        """Distinct non-zero prediction ids over every voxel added (truth 0 included)."""
        b = self.pairs(include_background=True)[1]
        return int(np.unique(b[b != 0]).shape[0])


def _group_sum(ids: np.ndarray, values: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sorted unique ids, sum of ``values`` per id, index of each element's id)."""
    uniq, inverse = unique_inverse(ids)
    return uniq, np.bincount(inverse, weights=values, minlength=uniq.shape[0]), inverse


def _div(x: float, y: float) -> float:
    """IEEE division as C does it (x/0 → ±inf or NaN), as funlib's C++ computes."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.float64(x) / np.float64(y))


def rand_voi_from_table(truth_ids: np.ndarray, pred_ids: np.ndarray, counts: np.ndarray,
                        return_cluster_scores: bool = False) -> dict:
    """The metrics of :func:`rand_voi` from a contingency table (see :class:`ContingencyTable`).

    Rows with truth id 0 count only towards ``n_segments`` (distinct non-zero prediction ids
    over all rows), never towards the metrics.
    """
    truth_ids, pred_ids = np.asarray(truth_ids), np.asarray(pred_ids)
    n_segments = int(np.unique(pred_ids[pred_ids != 0]).shape[0])
    fg = truth_ids != 0
    truth_ids, pred_ids, counts = truth_ids[fg], pred_ids[fg], np.asarray(counts)[fg]
    n = np.asarray(counts, np.float64)
    total = float(n.sum())
    a_ids, a_sum, a_inv = _group_sum(truth_ids, n)
    b_ids, b_sum, b_inv = _group_sum(pred_ids, n)

    sum_nij2 = float(np.dot(n, n))
    rand_split = _div(sum_nij2, float(np.dot(a_sum, a_sum)))
    rand_merge = _div(sum_nij2, float(np.dot(b_sum, b_sum)))

    def entropy_terms(x: np.ndarray) -> np.ndarray:
        p = x / total
        return -p * np.log2(p)

    with np.errstate(divide="ignore", invalid="ignore"):
        h_ab = float(entropy_terms(n).sum()) if total else 0.0
        h_a = float(entropy_terms(a_sum).sum()) if total else 0.0
        h_b = float(entropy_terms(b_sum).sum()) if total else 0.0
        # conditional entropies summed term by term (each term >= 0, so VOI >= 0 exactly);
        # equal to funlib's H_ab - H_a and H_ab - H_b up to rounding
        p = n / total if total else n
        split_terms = -p * np.log2(n / a_sum[a_inv])
        merge_terms = -p * np.log2(n / b_sum[b_inv])
    voi_split = float(split_terms.sum())
    voi_merge = float(merge_terms.sum())
    out: dict[str, Any] = {
        "voi_split": voi_split,
        "voi_merge": voi_merge,
        "nvi_split": _div(voi_split, h_ab),
        "nvi_merge": _div(voi_merge, h_ab),
        "nid": 1.0 - _div(h_a + h_b - h_ab, max(h_a, h_b)),
        "rand_split": rand_split,
        "rand_merge": rand_merge,
        "adapted_rand_error": adapted_rand_error(rand_split, rand_merge),
        "h_truth": h_a,
        "h_pred": h_b,
        "h_joint": h_ab,
        "n_voxels": int(total),
        "n_gt_segments": int(a_ids.shape[0]),
        "n_segments": n_segments,
    }
    if return_cluster_scores:
        vs = np.bincount(a_inv, weights=split_terms, minlength=a_ids.shape[0])
        vm = np.bincount(b_inv, weights=merge_terms, minlength=b_ids.shape[0])
        out["voi_split_i"] = {int(k): float(v) for k, v in zip(a_ids, vs, strict=True)}
        out["voi_merge_j"] = {int(k): float(v) for k, v in zip(b_ids, vm, strict=True)}
    return out


def adapted_rand_error(rand_split: float, rand_merge: float) -> float:
    """``1 − 2·rs·rm/(rs + rm)``: one minus the F-score of funlib's Rand split and merge scores."""
    return 1.0 - _div(2.0 * rand_split * rand_merge, rand_split + rand_merge)


def rand_voi(truth: np.ndarray, pred: np.ndarray, return_cluster_scores: bool = False) -> dict:
    """VOI and Rand of segmentation ``pred`` against ground truth ``truth`` (funlib's ``rand_voi``).

    ``truth`` and ``pred`` are integer label arrays of one shape (any axis order, any integer
    dtype, ids up to 2**64 - 1). Only voxels with ``truth != 0`` count; ``pred == 0`` there is
    one ordinary segment. With n_ij the voxels of truth i and prediction j, a_i and b_j its row
    and column sums, and entropies in bits:

    - ``rand_split = Σn_ij² / Σa_i²``, ``rand_merge = Σn_ij² / Σb_j²`` (1 = perfect);
    - ``voi_split = H(pred|truth)`` (over-segmentation), ``voi_merge = H(truth|pred)``;
    - ``nvi_split/merge = voi_*/H_ab``, ``nid = 1 − (H_a + H_b − H_ab)/max(H_a, H_b)``;
    - ``adapted_rand_error = 1 − 2·rand_split·rand_merge/(rand_split + rand_merge)``.

    NaN exactly where funlib's C++ gives NaN: with no voxel counted (truth all zero) the Rand
    scores, NVI, NID and the adapted Rand error are NaN while VOI is 0; with a single
    (truth, pred) pair (H_ab = 0) NVI and NID are NaN. ``return_cluster_scores`` adds per-label
    contributions ``voi_split_i`` {truth id: bits} and ``voi_merge_j`` {pred id: bits} that sum
    to the totals. Also returned: the entropies, ``n_voxels`` (voxels counted),
    ``n_gt_segments`` and ``n_segments``: the distinct non-zero ids of ``truth`` and of
    ``pred`` over the whole arrays (background 0 is not a segment, as in pytc-decode).
    """
    table = ContingencyTable().add(truth, pred)
    return rand_voi_from_table(*table.pairs(include_background=True),
                               return_cluster_scores=return_cluster_scores)
