"""pytc-eval's hash-table kernels (pytc_eval.kernels) against fastremap doing the same job.

Run: ``uv run python bench/bench_eval_kernels.py [--quick]``. Prints, per job, the median
time of each and the ratio fastremap / ours (> 1: ours is faster), in this process, on the
same inputs, after a warm-up (numba compilation timed apart). The jobs:

- contingency table of a label volume pair (VOI/Rand): ours counts runs of equal pairs in a
  hash table; fastremap packs (truth, pred) into one uint64 key (only possible for ids below
  2**32) and counts with ``fastremap.unique(return_counts=True)``.
- skeletons per segment (ERL merges): ``count_per_key`` vs ``fastremap.unique`` inverse +
  ``np.bincount``.
- node id → row lookup (sparse ids): ``rows_of`` vs ``fastremap.remap`` with a dict.
- dense renumbering of skeleton ids: ``np.unique(return_inverse)`` (what erl uses for
  unsorted ids) vs ``fastremap.unique(return_inverse=True)``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import fastremap
import numpy as np
from table import emit, peer, ratio_x

from pytc_core.synthetic import synthetic_labels
from pytc_eval.kernels import count_per_key, rows_of
from pytc_eval.voi import ContingencyTable


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


ROWS: list[tuple[str, float]] = []


def report(name: str, ours, theirs, repeats: int) -> None:
    ours(), theirs()  # warm-up (numba compile, caches)
    a, b = median_time(ours, repeats), median_time(theirs, repeats)
    print(f"{name:<34} ours {a * 1e3:9.2f} ms   fastremap {b * 1e3:9.2f} ms   "
          f"fastremap/ours {b / a:6.2f}")
    ROWS.append((name, b / a))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller inputs")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    shape = (48, 96, 96) if args.quick else (96, 192, 192)
    repeats = 3 if args.quick else 5

    truth = synthetic_labels(shape, seed=1).astype(np.uint64)
    pred = truth.copy()
    pred[:, :, shape[2] // 2:] += 1000  # every body split in two
    t32, p32 = truth.ravel(), pred.ravel()

    def ours_table():
        return ContingencyTable().add(truth, pred).pairs(include_background=True)

    def fastremap_table():
        key = (t32 << np.uint64(32)) | p32
        return fastremap.unique(key, return_counts=True)

    got = ours_table()
    keys, counts = fastremap_table()
    assert int(counts.sum()) == int(got[2].sum()) and keys.shape[0] == got[0].shape[0]
    report(f"contingency table {shape}", ours_table, fastremap_table, repeats)

    n = 200_000 if args.quick else 2_000_000
    seg = rng.integers(0, n // 20, size=n).astype(np.uint64) * np.uint64(7919)
    counted = rng.random(n) < 0.7

    def fastremap_per_key():
        _, inverse = fastremap.unique(seg, return_inverse=True)
        return np.bincount(inverse, weights=counted)[inverse].astype(np.int64)

    np.testing.assert_array_equal(count_per_key(seg, counted), fastremap_per_key())
    report(f"skeletons per segment (n={n})", lambda: count_per_key(seg, counted),
           fastremap_per_key, repeats)

    ids = rng.choice(np.arange(1, 50 * n, dtype=np.uint64), size=n // 4, replace=False)
    queries = ids[rng.integers(0, ids.shape[0], size=n)]

    def fastremap_rows():
        table = dict(zip(ids.tolist(), range(ids.shape[0]), strict=True))
        return fastremap.remap(queries, table, preserve_missing_labels=True)

    np.testing.assert_array_equal(rows_of(ids, queries), fastremap_rows())
    report(f"node id -> row (n={n})", lambda: rows_of(ids, queries), fastremap_rows, repeats)

    sk = rng.integers(0, n // 100, size=n).astype(np.int64)
    np.testing.assert_array_equal(np.unique(sk, return_inverse=True)[1],
                                  fastremap.unique(sk, return_inverse=True)[1])
    report(f"dense skeleton ids (n={n}) [np.unique]", lambda: np.unique(sk, return_inverse=True),
           lambda: fastremap.unique(sk, return_inverse=True), repeats)
    for name, r in ROWS:
        what = (f"np.unique(return_inverse) (what erl uses for unsorted skeleton ids) vs "
                f"fastremap.unique (n={n})" if "[np.unique]" in name
                else f"hash-table kernel vs fastremap: {name}")
        emit("eval", what, ratio_x(r, "> 1: pytc faster"), peer("fastremap"))


if __name__ == "__main__":
    main()
