"""Node id → row lookup for sparse node ids (a numba hash table)."""

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def rows_of(ids, queries):  # pragma: no cover - numba
    """Row of each query id in ``ids`` (unique int64) via a hash table; -1 when absent."""
    cap = 16
    while cap < 2 * ids.shape[0]:
        cap *= 2
    mask = np.uint64(cap - 1)
    keys = np.zeros(cap, np.int64)
    slot = np.full(cap, -1, np.int64)
    for i in range(ids.shape[0]):
        h = (np.uint64(ids[i]) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(20) & mask
        while slot[h] != -1:
            h = (h + np.uint64(1)) & mask
        slot[h] = i
        keys[h] = ids[i]
    out = np.empty(queries.shape[0], np.int64)
    for j in range(queries.shape[0]):
        q = queries[j]
        h = (np.uint64(q) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(20) & mask
        while slot[h] != -1 and keys[h] != q:
            h = (h + np.uint64(1)) & mask
        out[j] = slot[h]
    return out
