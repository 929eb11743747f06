"""Benchmark pytc-decode's affinity connected components against peers in the same process.

Run: ``uv run python bench/bench_decode.py [--sizes 256 512] [--repeats 5]``

Data: neuron-like labels (``pytc_core.synthetic.synthetic_labels``; 512³ mirror-tiles 256³), their nearest-neighbour
affinities (3 float32 channels) made prediction-like (0.1 + 0.8 * aff + Gaussian noise σ 0.12,
clipped), threshold 0.5. Peers, each timed on the same array, interleaved, median of N:

- ``affinity_cc``: ours (Numba, z-slabs over all threads), with its three phases timed alone;
- (a) cc3d's affinity path: build its 6-way voxel connectivity graph from the thresholded
  affinities, then ``cc3d.color_connectivity_graph``;
- (b) ``cc3d.connected_components`` of the binary foreground, 6-connectivity (reads 1 byte per
  voxel; we read 12), foreground computed outside the timing;
- (c) a plain single-threaded Numba union-find over voxel indices.

Also: blockwise decode (in memory, 128³ blocks) against the whole-volume decode, the same two
through ``pytc-decode``'s volume paths on precomputed layers on disk (I/O included), peak memory
of a whole-volume decode in a fresh process, and JIT compile time (a fresh Numba cache in a
subprocess) reported apart from the timings.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import cc3d
import numba
import numpy as np
from numba import njit
from table import emit, peer, ratio_x

from pytc_core.synthetic import synthetic_labels
from pytc_core.targets import affinities_from_labels
from pytc_decode import affinity_cc, affinity_cc_blockwise
from pytc_decode.cc import (
    NO_EXTENSION,
    label_slabs,
    merge_slabs,
    slab_bounds,
    write_final,
)

THRESHOLD = 0.5


def make_labels(size: int, seed: int = 0) -> np.ndarray:
    """Neuron-like labels; above 256³ the 256³ volume is mirror-tiled (continuous neurites,
    new ids per tile) because drawing 512³ directly takes minutes on 2 cores."""
    if size <= 256:
        return synthetic_labels((size, size, size), seed=seed)
    tile = make_labels(size // 2, seed)
    step = int(tile.max()) + 1
    out = np.empty((size, size, size), dtype=tile.dtype)
    h = size // 2
    for k, (dz, dy, dx) in enumerate(np.ndindex(2, 2, 2)):
        part = tile[::-1 if dz else 1, ::-1 if dy else 1, ::-1 if dx else 1]
        out[dz * h:(dz + 1) * h, dy * h:(dy + 1) * h, dx * h:(dx + 1) * h] = \
            np.where(part > 0, part + k * step, 0)
    return out


def make_affinities(size: int, seed: int = 0) -> np.ndarray:
    labels = make_labels(size, seed)
    aff = affinities_from_labels(labels)[0]
    del labels
    rng = np.random.default_rng(seed)
    aff *= 0.8
    aff += 0.1
    for c in range(3):
        aff[c] += rng.normal(0.0, 0.12, aff.shape[1:]).astype(np.float32)
    np.clip(aff, 0.0, 1.0, out=aff)
    return aff


# --- (a) cc3d's affinity path -------------------------------------------------------------
# cc3d bit order for 6-way graphs: +a0 1, -a0 2, +a1 4, -a1 8, +a2 16, -a2 32 (a0 = first axis)
def cc3d_graph(aff: np.ndarray, t: float) -> np.ndarray:
    shape = aff.shape[1:]
    vcg = np.zeros(shape, dtype=np.uint8)
    for axis in range(3):
        on = (aff[axis] > t).view(np.uint8)  # edge between v and v - e_axis
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis] = slice(1, None)
        hi[axis] = slice(None, -1)
        minus, plus = np.uint8(2 << (2 * axis)), np.uint8(1 << (2 * axis))
        vcg[tuple(lo)] |= on[tuple(lo)] * minus   # v links to v - e_axis
        vcg[tuple(hi)] |= on[tuple(lo)] * plus    # v - e_axis links to v
    return cc3d.color_connectivity_graph(vcg, connectivity=6)


# --- (b) cc3d's binary labeller ----------------------------------------------------------
def cc3d_binary(foreground: np.ndarray) -> np.ndarray:
    return cc3d.connected_components(foreground, connectivity=6)


# --- (c) a plain single-threaded Numba union-find ------------------------------------------
@njit(cache=True)
def _plain_find(parent, a):
    while parent[a] != a:
        parent[a] = parent[parent[a]]
        a = parent[a]
    return a


@njit(cache=True)
def plain_union_find(aff, t):
    _, Z, Y, X = aff.shape
    n = Z * Y * X
    parent = np.arange(n)
    fg = np.zeros(n, dtype=np.bool_)
    for z in range(Z):
        for y in range(Y):
            for x in range(X):
                v = (z * Y + y) * X + x
                if z > 0 and aff[0, z, y, x] > t:
                    a, b = _plain_find(parent, v), _plain_find(parent, v - Y * X)
                    parent[max(a, b)] = min(a, b)
                    fg[v] = fg[v - Y * X] = True
                if y > 0 and aff[1, z, y, x] > t:
                    a, b = _plain_find(parent, v), _plain_find(parent, v - X)
                    parent[max(a, b)] = min(a, b)
                    fg[v] = fg[v - X] = True
                if x > 0 and aff[2, z, y, x] > t:
                    a, b = _plain_find(parent, v), _plain_find(parent, v - 1)
                    parent[max(a, b)] = min(a, b)
                    fg[v] = fg[v - 1] = True
    out = np.zeros(n, dtype=np.uint32)
    nxt = 0
    for v in range(n):
        if fg[v]:
            r = _plain_find(parent, v)
            if r == v:
                nxt += 1
                out[v] = nxt
            else:
                out[v] = out[r]
    return out.reshape(Z, Y, X)


def check_peers_agree() -> None:
    """The three labellings give the same partition of the foreground on a small volume."""
    aff = make_affinities(48, seed=3)
    ours = affinity_cc(aff, THRESHOLD)
    np.testing.assert_array_equal(plain_union_find(aff, THRESHOLD), ours)
    graph = cc3d_graph(aff, THRESHOLD).astype(np.int64)
    fg = ours > 0
    pairs = np.unique(np.stack([ours[fg], graph[fg]]), axis=1)
    assert pairs.shape[1] == ours.max() == np.unique(graph[fg]).size, "cc3d graph partition differs"


def timed(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def phase_times(aff: np.ndarray) -> tuple[float, float, float]:
    shape = aff.shape[1:]
    n = int(np.prod(shape))
    lab = np.empty(shape, np.uint32)
    parent = np.empty(n + 1, np.uint32)
    bounds = slab_bounds(shape[0], numba.get_num_threads() * 2)
    m = np.ones((1, 1, 1), np.uint8)
    t0 = time.perf_counter()
    counts, _, _ = label_slabs(aff, THRESHOLD, 1.0, m, False, NO_EXTENSION, NO_EXTENSION, bounds, lab,
                                parent)
    t1 = time.perf_counter()
    offsets, _ = merge_slabs(aff, THRESHOLD, bounds, counts, lab, parent)
    t2 = time.perf_counter()
    write_final(bounds, offsets, lab, parent)
    t3 = time.perf_counter()
    return t1 - t0, t2 - t1, t3 - t2


MEMORY_CHILD = r"""
import json, sys, numpy as np
from pytc_decode import affinity_cc
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
affinity_cc(np.zeros((3, 4, 4, 4), np.float32))  # JIT (from cache) before the baseline
base = status("VmRSS")
aff = np.load(sys.argv[1])
labels = affinity_cc(aff, 0.5)
print(json.dumps({"peak_extra": status("VmHWM") - base, "input": aff.nbytes,
                  "output": labels.nbytes}))
"""


def peak_memory(aff: np.ndarray) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "aff.npy")
        np.save(path, aff)
        out = subprocess.run([sys.executable, "-c", MEMORY_CHILD, path], capture_output=True,
                             text=True, check=True)
    return json.loads(out.stdout)


COMPILE_CHILD = r"""
import time, numpy as np
t0 = time.perf_counter()
from pytc_decode import affinity_cc, affinity_cc_blockwise
t1 = time.perf_counter()
aff = np.random.default_rng(0).random((3, 16, 16, 16), dtype=np.float32)
affinity_cc(aff, 0.5)
t2 = time.perf_counter()
affinity_cc_blockwise(aff, 0.5, 0, 8)
t3 = time.perf_counter()
print(f"{t1 - t0:.2f} {t2 - t1:.2f} {t3 - t2:.2f}")
"""


def compile_times() -> tuple[str, str]:
    out = {}
    for name, env in (("cold", {"NUMBA_CACHE_DIR": tempfile.mkdtemp()}), ("cached", {})):
        proc = subprocess.run([sys.executable, "-c", COMPILE_CHILD], capture_output=True,
                              text=True, check=True, env={**os.environ, **env})
        imp, cc, blk = proc.stdout.split()
        out[name] = f"import {imp} s, affinity_cc first call {cc} s, blockwise first call {blk} s"
    return out["cold"], out["cached"]


def on_disk(aff: np.ndarray, repeats: int) -> tuple[float, float, bool]:
    """Median seconds of the ``pytc-decode`` command (in process, through its CLI) whole-volume
    and blockwise (``--block-size 128``) on a precomputed layer in a temporary folder (reads,
    decoding, writes, config and stats included), and whether the two segmentations are
    identical."""
    import contextlib
    import io
    import shutil

    from pytc_core import create_volume, open_volume
    from pytc_core.cli import run_entry_point
    from pytc_decode.cli import app

    def cli(*args: str) -> None:
        with contextlib.redirect_stdout(io.StringIO()):
            code = run_entry_point("pytc-decode", app, [*args, "--overwrite", "-q"])
        assert code == 0, args

    root = tempfile.mkdtemp(prefix="bench_decode_")
    try:
        create_volume(f"{root}/aff", aff.shape, aff.dtype, chunk_size=(128, 128, 128)).write(aff)
        whole, blocks = [], []
        for _ in range(repeats):
            t = time.perf_counter()
            cli(f"{root}/aff", "-o", f"{root}/whole")
            whole.append(time.perf_counter() - t)
            t = time.perf_counter()
            cli(f"{root}/aff", "-o", f"{root}/blocks", "--block-size", "128")
            blocks.append(time.perf_counter() - t)
        same = bool(np.array_equal(open_volume(f"{root}/whole").read(),
                                   open_volume(f"{root}/blocks").read()))
        return statistics.median(whole), statistics.median(blocks), same
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"numba threads: {numba.get_num_threads()}, cores: {os.cpu_count()}, "
          f"load average at start: {os.getloadavg()[0]:.1f}")
    cold, cached = compile_times()
    print(f"JIT, fresh cache (compile): {cold}")
    print(f"JIT, warm cache (load):     {cached}")
    check_peers_agree()  # also warms every kernel up in this process
    print("peers agree on a 48³ volume (same partition)")
    per_voxel = {}
    rows: list[tuple[str, str, str, str]] = []
    cc3d_peer = peer("connected-components-3d", "cc3d")
    for size in args.sizes:
        t0 = time.perf_counter()
        aff = make_affinities(size)
        n = size**3
        fg = (aff > THRESHOLD).any(axis=0)
        print(f"\n{size}³ ({n / 1e6:.0f} Mvox, input {aff.nbytes / 2**20:.0f} MiB), "
              f"data made in {time.perf_counter() - t0:.0f} s")
        reps = args.repeats if size <= 256 else max(3, args.repeats // 2)
        times: dict[str, list[float]] = {k: [] for k in
                                         ("ours", "cc3d_graph", "cc3d_binary", "plain_uf",
                                          "blockwise")}
        phases = []
        for _ in range(reps):
            times["ours"].append(timed(affinity_cc, aff, THRESHOLD))
            times["cc3d_graph"].append(timed(cc3d_graph, aff, THRESHOLD))
            times["cc3d_binary"].append(timed(cc3d_binary, fg))
            times["plain_uf"].append(timed(plain_union_find, aff, THRESHOLD))
            times["blockwise"].append(timed(affinity_cc_blockwise, aff, THRESHOLD, 0, 128))
            phases.append(phase_times(aff))
        med = {k: statistics.median(v) for k, v in times.items()}
        labels = affinity_cc(aff, THRESHOLD)
        print(f"segments {labels.max()}, foreground {100 * (labels > 0).mean():.1f}%, "
              f"median of {reps} runs:")
        for k, v in med.items():
            print(f"  {k:12s} {v * 1e3:8.1f} ms  {n / v / 1e6:7.1f} Mvox/s   "
                  f"ours is {v / med['ours']:.2f}x its speed")
        p = [statistics.median(x) for x in zip(*phases, strict=True)]
        print(f"  ours by phase: label slabs (threads) {p[0] * 1e3:.1f} ms, merge + final ids "
              f"(serial) {p[1] * 1e3:.1f} ms, write ids (threads) {p[2] * 1e3:.1f} ms; "
              f"the rest (allocation, checks) {(med['ours'] - sum(p)) * 1e3:.1f} ms")
        print(f"  targets: ≥ 2x cc3d graph: {med['cc3d_graph'] / med['ours']:.2f}x; "
              f"≥ 0.5x cc3d binary: {med['cc3d_binary'] / med['ours']:.2f}x; "
              f"blockwise 128³ ≤ 1.5x whole: {med['blockwise'] / med['ours']:.2f}x")
        per_voxel[size] = med["ours"] / n
        whole, blocks, same = on_disk(aff, 2 if size > 256 else 3)
        print(f"  through the CLI on disk (precomputed layers, I/O included): pytc-decode whole volume "
              f"{whole:.1f} s, blockwise 128³ {blocks:.1f} s, ratio {blocks / whole:.2f} "
              f"(target ≤ 1.5); identical: {same}")
        faster = "> 1: pytc faster"
        rows += [
            ("decode", f"affinity_cc vs cc3d graph path (color_connectivity_graph), {size}³",
             ratio_x(med["cc3d_graph"] / med["ours"], faster), cc3d_peer),
            ("decode", f"affinity_cc vs a plain single-threaded Numba union-find, {size}³",
             ratio_x(med["plain_uf"] / med["ours"], faster), peer("numba")),
            ("decode", f"affinity_cc (reads 12 B/voxel) vs cc3d binary CC (1 B/voxel, foreground "
             f"precomputed), {size}³", ratio_x(med["cc3d_binary"] / med["ours"], faster), cc3d_peer),
            ("decode", f"pytc-decode blockwise 128³ vs whole volume, on disk through the CLI, "
             f"{size}³", f"{blocks / whole:.2f} (blockwise time / whole time; ≤ 1.5 wanted)",
             "pytc-decode whole volume"),
        ]
        mem = peak_memory(aff)
        limit = mem["input"] + 2 * mem["output"]
        print(f"  peak memory of a whole-volume decode (fresh process, RSS high-water mark above "
              f"the baseline): {mem['peak_extra'] / 2**20:.0f} MiB; input + 2 x output = "
              f"{limit / 2**20:.0f} MiB ({mem['peak_extra'] / limit:.2f} of the limit)")
        del aff, fg, labels
    print(f"\nload average at end: {os.getloadavg()[0]:.1f} (other work on the machine skews "
          "absolute numbers; the ratios are measured interleaved)")
    if len(per_voxel) > 1:
        small, big = min(per_voxel), max(per_voxel)
        print(f"\nper-voxel time {big}³ / {small}³: {per_voxel[big] / per_voxel[small]:.2f} "
              "(target ≤ 1.3)")
    for row in rows:
        emit(*row)


if __name__ == "__main__":
    main()
