"""The one hash table of pytc-eval: (a, b) uint64 key pairs → dense entry numbers (numba).

Open addressing with linear probing over a power-of-two number of slots. A table is three
arrays of one length (the capacity): ``keys_a``, ``keys_b`` (uint64, the key in each slot)
and ``index`` (int64, the entry number stored in the slot, -1 when empty). Entries are
numbered 0, 1, 2, ... in order of first insertion, so callers keep their values (rows,
groups, ...) in plain arrays indexed by entry, or per slot (the contingency counts, moved
along by :func:`rehash`). A single key is the pair (key, 0).

Used by the contingency table (:mod:`pytc_eval.voi`), the (skeleton, segment) grouping and
the skeletons-per-segment count (:mod:`pytc_eval.erl`), and the node id → row lookup
(:mod:`pytc_eval.skeletons`).
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["capacity_for", "count_per_key", "find", "group_pairs", "insert", "new_table",
           "rehash", "rows_of", "unique_inverse"]

_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xC2B2AE3D27D4EB4F)
_S = np.uint64(29)


def unique_inverse(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted unique ids, index of each element's id): ``np.unique(return_inverse=True)``
    done by fastremap (its counting path; measured ~100x faster on skeleton ids,
    bench/bench_eval_kernels.py). The hash tables below stay ours where they are faster."""
    import fastremap

    uniq, inverse = fastremap.unique(np.asarray(ids), return_inverse=True)
    return uniq, np.asarray(inverse, np.intp).reshape(-1)


def new_table(capacity: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Empty ``(keys_a, keys_b, index)`` with ``capacity`` slots (a power of two)."""
    return (np.zeros(capacity, np.uint64), np.zeros(capacity, np.uint64),
            np.full(capacity, -1, np.int64))


@numba.njit(cache=True, nogil=True)
def capacity_for(n):  # pragma: no cover - numba
    """Slots for ``n`` entries at most half full (a power of two, at least 16)."""
    cap = 16
    while cap < 2 * n:
        cap *= 2
    return cap


@numba.njit(cache=True, nogil=True, inline="always")
def _slot(a, b, mask):  # pragma: no cover - numba
    h = (a * _M1) ^ (b * _M2)
    return (h ^ (h >> _S)) & mask


@numba.njit(cache=True, nogil=True)
def insert(keys_a, keys_b, index, a, b, n_entries):  # pragma: no cover - numba
    """Slot of key (a, b); a new key gets entry ``n_entries`` (so ``index[slot] ==
    n_entries`` tells the caller it was new)."""
    mask = np.uint64(index.shape[0] - 1)
    i = _slot(a, b, mask)
    while True:
        e = index[i]
        if e == -1:
            keys_a[i] = a
            keys_b[i] = b
            index[i] = n_entries
            return i
        if keys_a[i] == a and keys_b[i] == b:
            return i
        i = (i + np.uint64(1)) & mask


@numba.njit(cache=True, nogil=True)
def find(keys_a, keys_b, index, a, b):  # pragma: no cover - numba
    """Entry of key (a, b), or -1 when absent."""
    mask = np.uint64(index.shape[0] - 1)
    i = _slot(a, b, mask)
    while True:
        e = index[i]
        if e == -1 or (keys_a[i] == a and keys_b[i] == b):
            return e
        i = (i + np.uint64(1)) & mask


@numba.njit(cache=True, nogil=True)
def rehash(keys_a, keys_b, index, values, new_a, new_b, new_index,
           new_values):  # pragma: no cover - numba
    """Move every entry, and its per-slot value, into a larger empty table (entry numbers
    are kept)."""
    mask = np.uint64(new_index.shape[0] - 1)
    for i in range(index.shape[0]):
        e = index[i]
        if e != -1:
            j = _slot(keys_a[i], keys_b[i], mask)
            while new_index[j] != -1:
                j = (j + np.uint64(1)) & mask
            new_a[j] = keys_a[i]
            new_b[j] = keys_b[i]
            new_index[j] = e
            new_values[j] = values[i]


@numba.njit(cache=True, nogil=True)
def group_pairs(a, b):  # pragma: no cover - numba
    """Group elements by the key pair (a[i], b[i]) (uint64 arrays of one length).

    Returns ``(group, first)``: the group number of each element (groups numbered in order
    of first appearance) and the first element of each group.
    """
    n = a.shape[0]
    keys_a = np.zeros(capacity_for(n), np.uint64)
    keys_b = np.zeros(keys_a.shape[0], np.uint64)
    index = np.full(keys_a.shape[0], -1, np.int64)
    group = np.empty(n, np.int64)
    first = np.empty(n, np.int64)
    m = 0
    for i in range(n):
        g = index[insert(keys_a, keys_b, index, a[i], b[i], m)]
        if g == m:
            first[m] = i
            m += 1
        group[i] = g
    return group, first[:m]


@numba.njit(cache=True, nogil=True)
def count_per_key(keys, counted):  # pragma: no cover - numba
    """For each element, how many ``counted`` elements share its key (uint64 keys)."""
    n = keys.shape[0]
    zero = np.zeros(n, np.uint64)
    group, first = group_pairs(keys, zero)
    counts = np.zeros(first.shape[0], np.int64)
    for i in range(n):
        if counted[i]:
            counts[group[i]] += 1
    out = np.empty(n, np.int64)
    for i in range(n):
        out[i] = counts[group[i]]
    return out


@numba.njit(cache=True, nogil=True)
def rows_of(ids, queries):  # pragma: no cover - numba
    """Row of each query id in ``ids`` (unique, uint64 view); -1 when absent."""
    keys_a = np.zeros(capacity_for(ids.shape[0]), np.uint64)
    keys_b = np.zeros(keys_a.shape[0], np.uint64)
    index = np.full(keys_a.shape[0], -1, np.int64)
    zero = np.uint64(0)
    for i in range(ids.shape[0]):
        insert(keys_a, keys_b, index, ids[i], zero, i)
    out = np.empty(queries.shape[0], np.int64)
    for j in range(queries.shape[0]):
        out[j] = find(keys_a, keys_b, index, queries[j], zero)
    return out
