"""pytc-decode's compiled agglomeration as the region graph grows: time and memory per edge.

    uv run python bench/bench_agglomeration.py [--sizes 40 64 100] [--threshold 0.7]

Region graphs of a lattice of N³ fragments (each touching its 6 neighbours: the degree of a
watershed region graph; 3·N³ edges) with random mean affinities, agglomerated to the
threshold in a fresh process each (so its peak RSS is its own): seconds per million edges and
the peak RSS increase during ``agglomerate`` in bytes per edge. A scalable agglomeration keeps
both flat as the graph grows (ratios largest / smallest size, 1.0 = flat). The previous Python
implementation (heapq over dicts) took 26 s and about 377 B per edge for 475 k edges.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np
from table import emit


def _peak_rss() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # resets VmHWM to the current RSS


def lattice_graph(n: int):
    """The region graph of N³ lattice fragments with random mean affinities."""
    from pytc_decode.agglomeration import RegionGraph

    rng = np.random.default_rng(0)
    ids = np.arange(1, n**3 + 1, dtype=np.int64).reshape(n, n, n)
    u = np.concatenate([ids[:-1].ravel(), ids[:, :-1].ravel(), ids[:, :, :-1].ravel()])
    v = np.concatenate([ids[1:].ravel(), ids[:, 1:].ravel(), ids[:, :, 1:].ravel()])
    order = np.lexsort((v, u))
    u, v = u[order], v[order]
    counts = rng.integers(1, 50, u.size).astype(np.int64)
    sums = rng.random(u.size) * counts
    return RegionGraph(n**3, u, v, sums, counts, 1.0 - sums / counts)


def child(n: int, threshold: float) -> dict[str, float]:
    from pytc_decode.agglomeration import agglomerate

    graph = lattice_graph(n)
    u = graph.u
    agglomerate(lattice_graph(3), threshold)  # compiled (cached) outside the measurement
    _reset_peak()
    before = _peak_rss()
    t0 = time.perf_counter()
    rows = agglomerate(graph, threshold)
    seconds = time.perf_counter() - t0
    return {"edges": int(u.size), "merges": int(len(rows)), "seconds": seconds,
            "bytes": float(_peak_rss() - before)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[40, 64, 100])
    parser.add_argument("--threshold", type=float, default=0.7)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.threshold)))
        return
    results = []
    for n in args.sizes:
        out = subprocess.run([sys.executable, __file__, "--child", str(n), "--threshold",
                              str(args.threshold)], check=True, capture_output=True, text=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        results.append(r)
        print(f"{r['edges']:>10,} edges  {r['merges']:>9,} merges  {r['seconds']:7.2f} s  "
              f"{r['seconds'] / r['edges'] * 1e6:6.2f} s per M edges  "
              f"{r['bytes'] / r['edges']:6.1f} B per edge (peak RSS increase)")
    first, last = results[0], results[-1]
    time_ratio = (last["seconds"] / last["edges"]) / (first["seconds"] / first["edges"])
    emit("decode ws", f"agglomeration time per edge, {last['edges']:,} vs {first['edges']:,} "
         "edges (lattice region graph)", f"{time_ratio:.2f}× (1.0 = flat; "
         f"{last['seconds'] / last['edges'] * 1e6:.2f} s per M edges)", "none (scaling)")
    emit("decode ws", f"agglomeration peak memory per edge, {last['edges']:,} edges",
         f"{last['bytes'] / last['edges']:.1f} B per edge (was ~377 with heapq over dicts)",
         "none (scaling)")


if __name__ == "__main__":
    main()
