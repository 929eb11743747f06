"""pytc-decode's compiled agglomeration against the Python heapq version it replaced: speed
on the same random region graph (identical histories), and its memory per edge on a large one.

    uv run python bench/bench_agglomeration.py [--edges 5000000] [--repeats 3]

Graphs: random fragment pairs (mean degree 10, scores quantised to 256 levels so they tie,
1-3 boundary voxels per pair), sorted by pair as ``region_graph`` gives them. Speed: both on
a 200 k edge graph (medians, interleaved in one process). Memory: peak resident memory
during ``agglomerate`` above the memory before it (the input graph excluded; the peak is
reset through ``/proc/self/clear_refs``, Linux), per edge of a ``--edges`` graph, merged up to
threshold 1 (every edge merged or combined: the heaviest case).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from table import emit, ratio_x

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "packages" / "pytc-decode" / "tests"))

from test_agglomeration import agglomerate_oracle  # noqa: E402

from pytc_decode.agglomeration import RegionGraph, agglomerate  # noqa: E402


def random_graph(edges: int, seed: int = 0) -> RegionGraph:
    rng = np.random.default_rng(seed)
    n = max(edges // 5, 2)
    a = rng.integers(1, n + 1, int(edges * 1.05))
    b = rng.integers(1, n + 1, a.size)
    keep = a != b
    pairs = np.unique(np.minimum(a, b)[keep] * (n + 1) + np.maximum(a, b)[keep])[:edges]
    u, v = pairs // (n + 1), pairs % (n + 1)
    counts = rng.integers(1, 4, pairs.size)
    sums = rng.integers(0, 256, pairs.size) / 255 * counts
    return RegionGraph(n, u, v, sums.astype(np.float64), counts.astype(np.int64),
                       1.0 - sums / counts)


def rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edges", type=int, default=5_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    small = random_graph(200_000, seed=1)
    agglomerate(small, 1.0)  # compile (cached after the first run)
    times: dict[str, list[float]] = {"compiled": [], "heapq": []}
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        ours = agglomerate(small, 1.0)
        times["compiled"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        theirs = agglomerate_oracle(small, 1.0)
        times["heapq"].append(time.perf_counter() - t0)
        assert np.array_equal(ours, theirs)
    c, h = statistics.median(times["compiled"]), statistics.median(times["heapq"])
    print(f"200k edges, {ours.shape[0]} merges: compiled {c:.3f} s, heapq {h:.2f} s "
          f"({h / c:.0f}x)")
    big = random_graph(args.edges, seed=2)
    m = big.u.size
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    before = rss_kib("VmRSS")
    t0 = time.perf_counter()
    history = agglomerate(big, 1.0)
    seconds = time.perf_counter() - t0
    peak = rss_kib("VmHWM")
    per_edge = (peak - before) * 1024 / m
    print(f"{m} edges, {big.num_fragments} fragments, {history.shape[0]} merges: "
          f"{seconds:.2f} s, peak RSS above the input graph {(peak - before) / 1024:.0f} MiB = "
          f"{per_edge:.1f} B per edge (merge history rows included: "
          f"{history.nbytes / m:.1f} B per edge)")
    emit("decode ws", "agglomeration: compiled (Numba) vs the heapq version it replaced, 200 k "
         "edge random graph, identical history", ratio_x(h / c, "> 1: compiled faster"),
         "pytc heapq agglomeration")
    emit("decode ws", f"agglomeration memory, {m / 1e6:.1f} M edge random graph merged to "
         "threshold 1", f"{per_edge:.1f} B per edge above the input graph (target <= 40)",
         "none")


if __name__ == "__main__":
    main()
