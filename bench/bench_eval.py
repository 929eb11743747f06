"""Benchmarks for pytc-eval: rand_voi, ERL, and kimimaro + ERL + VOI end to end.

Run: ``uv run python bench/bench_eval.py [--quick] [--skip-e2e]``.

Peers, measured in this process on the same inputs:

- rand_voi: funlib.evaluate's C++ algorithm (``impl/rand_voi.hpp``: ``std::map`` contingency
  table, one pass) transcribed to C++ here and compiled with ``g++ -O3`` (funlib itself is not
  on PyPI), and scikit-image's ``variation_of_information`` + ``adapted_rand_error``.
- ERL: funlib's ``expected_run_length`` networkx loop (``run_length.py``) transcribed to
  Python here, on a networkx graph with edge lengths precomputed (funlib's reuse path).

Medians of repeated runs; numba JIT compilation is warmed up beforehand and timed apart.
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from table import emit, peer, ratio_x

from pytc_eval import (
    KimimaroParams,
    Skeletons,
    expected_run_length,
    node_segments,
    rand_voi,
    skeletons_from_labels,
)

FUNLIB_CPP = r"""
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <map>

// funlib.evaluate's rand_voi_arrays, transcribed: std::map contingency table over voxels
// with truth != 0, Rand with self-pairs, entropies in bits.
extern "C" void funlib_rand_voi(std::size_t size, const uint64_t* labels_a,
                                const uint64_t* labels_b, double* out) {
    double total = 0;
    std::map<uint64_t, std::map<uint64_t, double>> p_ij;
    std::map<uint64_t, double> p_i, p_j;
    for (std::size_t i = 0; i < size; ++i) {
        uint64_t a = labels_a[i], b = labels_b[i];
        if (a) { ++total; ++p_ij[a][b]; ++p_i[a]; ++p_j[b]; }
    }
    double sum_p_ij = 0, sum_p_i = 0, sum_p_j = 0;
    for (auto& a : p_ij) for (auto& b : a.second) sum_p_ij += b.second * b.second;
    for (auto& a : p_i) sum_p_i += a.second * a.second;
    for (auto& b : p_j) sum_p_j += b.second * b.second;
    for (auto& a : p_ij) for (auto& b : a.second) b.second /= total;
    for (auto& a : p_i) a.second /= total;
    for (auto& b : p_j) b.second /= total;
    double H_ab = 0, H_a = 0, H_b = 0;
    for (auto& a : p_ij) for (auto& b : a.second) if (b.second) H_ab -= b.second * log2(b.second);
    for (auto& a : p_i) if (a.second) H_a -= a.second * log2(a.second);
    for (auto& b : p_j) if (b.second) H_b -= b.second * log2(b.second);
    out[0] = sum_p_ij / sum_p_i;
    out[1] = sum_p_ij / sum_p_j;
    out[2] = H_ab - H_a;
    out[3] = H_ab - H_b;
    out[4] = (H_ab - H_a) / H_ab;
    out[5] = (H_ab - H_b) / H_ab;
    out[6] = 1 - ((H_a + H_b - H_ab) / fmax(H_a, H_b));
}
"""
FUNLIB_KEYS = ("rand_split", "rand_merge", "voi_split", "voi_merge", "nvi_split", "nvi_merge",
               "nid")


def median_time(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def compile_funlib() -> ctypes.CDLL | None:
    tmp = Path(tempfile.mkdtemp(prefix="funlib_cpp_"))
    (tmp / "rand_voi.cpp").write_text(FUNLIB_CPP)
    try:
        subprocess.run(["g++", "-O3", "-shared", "-fPIC", "-std=c++14", "-o",
                        str(tmp / "rand_voi.so"), str(tmp / "rand_voi.cpp")], check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"  (no C++ peer: {exc})")
        return None
    lib = ctypes.CDLL(str(tmp / "rand_voi.so"))
    lib.funlib_rand_voi.argtypes = [ctypes.c_size_t, ctypes.c_void_p, ctypes.c_void_p,
                                    ctypes.c_void_p]
    return lib


def funlib_cpp_rand_voi(lib, truth: np.ndarray, pred: np.ndarray) -> dict:
    out = np.zeros(7)
    lib.funlib_rand_voi(truth.size, truth.ctypes.data, pred.ctypes.data, out.ctypes.data)
    return dict(zip(FUNLIB_KEYS, out.tolist(), strict=True))


def voronoi(shape, n: int, seed: int, jitter: float = 0.0, base=None) -> np.ndarray:
    """Supervoxel-like labels: nearest of ``n`` random seeds (uint64 ids)."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    pts = base if base is not None else rng.random((n, 3)) * np.asarray(shape)
    pts = np.clip(pts + rng.normal(scale=jitter, size=pts.shape), 0, np.asarray(shape) - 1)
    idx = np.unique(pts.astype(np.int64), axis=0)
    seeds = np.ones(shape, bool)
    seeds[tuple(idx.T)] = False
    _, nearest = ndimage.distance_transform_edt(seeds, return_indices=True)
    ids = np.zeros(shape, np.int64)
    ids[tuple(idx.T)] = np.arange(1, idx.shape[0] + 1)
    out = ids[tuple(nearest)]
    remap = rng.permutation(idx.shape[0] + 1).astype(np.uint64) * np.uint64(7919) + np.uint64(1)
    return remap[out], pts


Row = tuple[str, str, str, str]
FASTER = "> 1: pytc faster"


def bench_rand_voi(size: int, n_ids: int, repeats: int) -> list[Row]:
    import skimage.metrics as skm

    print(f"== rand_voi: {size}^3 uint64 pair, ~{n_ids} ids each ==")
    shape = (size, size, size)
    truth, pts = voronoi(shape, n_ids, seed=1)
    pred, _ = voronoi(shape, n_ids, seed=2, jitter=4.0, base=pts)
    pred[truth % np.uint64(97) == 0] = 0  # a little predicted background
    print(f"  truth ids {len(np.unique(truth))}, pred ids {len(np.unique(pred))}")
    t0 = time.perf_counter()
    rand_voi(truth[:2], pred[:2])
    print(f"  numba warm-up (compile or cache load): {time.perf_counter() - t0:.2f} s")

    ours_t, ours = median_time(lambda: rand_voi(truth, pred), repeats)
    print(f"  pytc_eval.rand_voi           median {ours_t:.3f} s")
    lib = compile_funlib()
    what = f"rand_voi, {size}³ uint64 pair, ~{n_ids} ids"
    rows: list[Row] = []
    if lib is None:
        rows.append(("eval", f"{what} vs funlib's C++ algorithm", "not run: no C++ compiler",
                     "funlib.evaluate rand_voi.hpp"))
    else:
        cpp_t, cpp = median_time(lambda: funlib_cpp_rand_voi(lib, truth, pred), repeats)
        worst = max(abs(ours[k] - cpp[k]) / max(abs(cpp[k]), 1e-300) for k in FUNLIB_KEYS)
        print(f"  funlib C++ (std::map, -O3)   median {cpp_t:.3f} s   ratio {cpp_t / ours_t:.1f}x"
              f"   max rel. difference of the 7 metrics {worst:.1e}")
        rows.append(("eval", f"{what} vs funlib's C++ algorithm transcribed, g++ -O3",
                     ratio_x(cpp_t / ours_t, FASTER), "funlib.evaluate rand_voi.hpp (std::map)"))
    sk_t, (sk_vi, sk_are) = median_time(
        lambda: (skm.variation_of_information(truth, pred, ignore_labels=(0,)),
                 skm.adapted_rand_error(truth, pred)), max(1, repeats // 2))
    print(f"  skimage VOI + adapted_rand   median {sk_t:.3f} s   ratio {sk_t / ours_t:.1f}x")
    rows.append(("eval", f"{what} vs variation_of_information + adapted_rand_error",
                 ratio_x(sk_t / ours_t, FASTER), peer("scikit-image")))
    print(f"  values: voi_split {ours['voi_split']:.6f} voi_merge {ours['voi_merge']:.6f} "
          f"adapted_rand_error {ours['adapted_rand_error']:.6f}")
    print(f"  skimage's values: VI {sk_vi.round(6).tolist()}, adapted_rand_error "
          f"{sk_are[0]:.6f} (skimage leaves self-pairs out of the Rand sums; funlib keeps them)")
    return rows


def synthetic_skeletons(n_skel: int, n_nodes: int, seed: int) -> tuple[Skeletons, np.ndarray]:
    """Random-walk trees (branching) and a node → segment table with splits, merges, zeros."""
    rng = np.random.default_rng(seed)
    per = n_nodes // n_skel
    skel_ids = np.repeat(np.arange(n_skel, dtype=np.int64) * 13 + 5, per)
    steps = rng.normal(size=(n_skel * per, 3))
    pos = np.cumsum(steps, axis=0) + 50.0
    local = np.tile(np.arange(per), n_skel)
    # parent: previous node, or (5 % of nodes) a random earlier node of the same skeleton
    parent_local = local - 1
    branch = (rng.random(local.shape) < 0.05) & (local > 1)
    parent_local[branch] = (rng.random(branch.sum()) * (local[branch] - 1)).astype(np.int64)
    node_ids = np.arange(n_skel * per, dtype=np.int64) * 3 + 11
    first = np.repeat(np.arange(n_skel) * per, per)
    has_parent = local > 0
    edges = np.stack([node_ids[(first + parent_local)[has_parent]], node_ids[has_parent]], 1)
    # segmentation: each skeleton's own segment, split at random points, 2 % merged into a
    # neighbour skeleton's segment, 0.5 % of nodes in background
    # (ids below 2**62: funlib's np.array of [skeleton, segment] pairs goes to float above 2**63)
    seg = (skel_ids.astype(np.uint64) * np.uint64(1000003)) % np.uint64(2**40)
    cut = rng.random(seg.shape) < 0.002
    seg = seg + np.cumsum(cut).astype(np.uint64) * np.uint64(1 << 41)
    merged = np.repeat(rng.random(n_skel) < 0.02, per)
    seg[merged] = seg[np.minimum(np.arange(seg.size) + per, seg.size - 1)][merged]
    seg[rng.random(seg.shape) < 0.005] = 0
    skel = Skeletons(node_ids, skel_ids, pos, edges)
    return skel, seg


def funlib_networkx_erl(graph, lut: dict, skeleton_lengths: dict) -> tuple[float, dict]:
    """funlib.evaluate.expected_run_length (run_length.py, latest), transcribed: the
    evaluate_skeletons per-edge loop on a networkx graph, lengths in edge attribute
    'length' and ``skeleton_lengths`` precomputed, return_merge_split_stats=True."""
    total_skeletons_length = np.sum([v for _, v in skeleton_lengths.items()])
    skeleton_segment = np.array([[data["skeleton_id"], lut[n]]
                                 for n, data in graph.nodes(data=True)])
    skeleton_segment = np.unique(skeleton_segment, axis=0)
    segments, num_segment_skeletons = np.unique(skeleton_segment[:, 1], return_counts=True)
    merging_segments = segments[num_segment_skeletons > 1]
    merging_segments_mask = np.isin(skeleton_segment[:, 1], merging_segments)
    merged_skeletons = skeleton_segment[:, 0][merging_segments_mask]
    merging_segments = set(merging_segments)
    merges, splits = {}, {}
    merged_segments = skeleton_segment[:, 1][merging_segments_mask]
    for segment, skeleton in zip(merged_segments, merged_skeletons, strict=True):
        merges.setdefault(segment, []).append(skeleton)
    merged_skeletons = set(np.unique(merged_skeletons))
    scores = {}
    for u, v in graph.edges():
        skeleton_id = graph.nodes[u]["skeleton_id"]
        segment_u, segment_v = lut[u], lut[v]
        s = scores.setdefault(skeleton_id, {"ommitted": 0, "split": 0, "merged": 0,
                                            "correct": 0, "correct_edges": {}})
        if segment_u == 0 or segment_v == 0:
            s["ommitted"] += 1
            continue
        if segment_u != segment_v:
            s["split"] += 1
            splits.setdefault(skeleton_id, []).append((segment_u, segment_v))
            continue
        if skeleton_id in merged_skeletons and segment_u in merging_segments:
            s["merged"] += 1
            continue
        s["correct"] += 1
        s["correct_edges"].setdefault(segment_u, []).append((u, v))
    skeletons_erl = 0
    for skeleton_id, s in scores.items():
        skeleton_length = skeleton_lengths[skeleton_id]
        skeleton_erl = 0
        for correct_edges in s["correct_edges"].values():
            correct_edges_length = np.sum([graph.edges[e]["length"] for e in correct_edges])
            skeleton_erl += correct_edges_length * (correct_edges_length / skeleton_length)
        skeletons_erl += (skeleton_length / total_skeletons_length) * skeleton_erl
    return float(skeletons_erl), {"merge_stats": merges, "split_stats": splits}


def bench_erl(n_skel: int, n_nodes: int, repeats: int) -> list[Row]:
    import networkx as nx

    print(f"== ERL: {n_skel} skeletons, {n_nodes} nodes ==")
    skel, seg = synthetic_skeletons(n_skel, n_nodes, seed=0)
    vs = (40.0, 4.0, 4.0)
    t0 = time.perf_counter()
    g = nx.Graph()
    g.add_nodes_from((int(n), {"skeleton_id": int(s)})
                     for n, s in zip(skel.node_ids, skel.skeleton_ids, strict=True))
    index = skel.edge_index()
    lengths = np.linalg.norm((skel.positions[index[:, 0]] - skel.positions[index[:, 1]])
                             * np.asarray(vs), axis=1)
    g.add_edges_from((int(u), int(v), {"length": float(d)})
                     for (u, v), d in zip(skel.edges, lengths, strict=True))
    skeleton_lengths: dict = {}
    for u, _v, d in g.edges(data=True):
        sid = g.nodes[u]["skeleton_id"]
        skeleton_lengths[sid] = skeleton_lengths.get(sid, 0) + d["length"]
    lut = {int(n): int(s) for n, s in zip(skel.node_ids, seg, strict=True)}
    print(f"  networkx graph + lut construction (not timed below): "
          f"{time.perf_counter() - t0:.1f} s")

    ours_t, ours = median_time(lambda: expected_run_length(skel, seg, vs), repeats)
    print(f"  pytc_eval.expected_run_length  median {ours_t:.3f} s   (edge lengths included)")
    ref_t, (ref, stats) = median_time(lambda: funlib_networkx_erl(g, lut, skeleton_lengths),
                                      max(1, repeats // 3))
    rel = abs(ours["erl"] - ref) / ref
    print(f"  funlib networkx loop           median {ref_t:.3f} s   ratio {ref_t / ours_t:.1f}x")
    print(f"  ERL ours {ours['erl']:.9f} nm, funlib {ref:.9f} nm, relative difference {rel:.1e}")
    same_merges = {int(k): sorted(int(x) for x in v) for k, v in stats["merge_stats"].items()} \
        == {k: sorted(v) for k, v in ours["merge_stats"].items()}
    n_split = sum(len(v) for v in stats["split_stats"].values())
    print(f"  merge_stats equal: {same_merges}; split edges ours {ours['n_edges_split']}, "
          f"funlib {n_split}; edges omitted/split/merged/correct "
          f"{ours['n_edges_omitted']}/{ours['n_edges_split']}/{ours['n_edges_merged']}/"
          f"{ours['n_edges_correct']}")
    return [("eval", f"expected_run_length, {n_skel} skeletons, {n_nodes} nodes, vs funlib's "
             "networkx loop transcribed (edge lengths precomputed for it)",
             ratio_x(ref_t / ours_t, FASTER), peer("networkx", "funlib run_length.py on networkx"))]


def bench_end_to_end(size: int, n_objects: int) -> None:
    from pytc_core.synthetic import synthetic_labels

    print(f"== end to end: {size}^3 segmentation, ~{n_objects} objects ==")
    t0 = time.perf_counter()
    # 8 tiles of neuron-like labels (different seeds), each keeping its largest objects
    half, per_tile = size // 2, n_objects // 8
    gt = np.zeros((size, size, size), np.uint64)
    next_id = 1
    for t, (z, y, x) in enumerate(np.ndindex(2, 2, 2)):
        tile = synthetic_labels((half, half, half), seed=10 + t, n_neurons=max(8, per_tile // 2),
                                radius_range=(2.0, 5.0))
        sizes = np.bincount(tile.ravel().astype(np.intp))
        sizes[0] = 0
        keep = np.argsort(sizes)[::-1][:per_tile]
        keep = keep[sizes[keep] > 0]
        remap = np.zeros(sizes.size, np.uint64)
        remap[keep] = np.arange(next_id, next_id + keep.size, dtype=np.uint64)
        next_id += keep.size
        gt[z * half:(z + 1) * half, y * half:(y + 1) * half, x * half:(x + 1) * half] = \
            remap[tile.astype(np.intp)]
    print(f"  synthetic ground truth: {int(gt.max())} objects, {100 * np.mean(gt > 0):.0f} % "
          f"foreground, {time.perf_counter() - t0:.1f} s (not counted)")
    rng = np.random.default_rng(4)
    # prediction: merge 3 % of the objects into their id-neighbour, split 3 % at each tile's
    # mid x
    n = int(gt.max())
    k = max(1, n * 3 // 100)
    ids = np.arange(n + 1, dtype=np.uint64)
    merged = rng.choice(np.arange(2, n + 1), k, replace=False)
    ids[merged] = merged - 1
    pred = ids[gt]
    split = np.isin(gt, rng.choice(np.arange(1, n + 1), k, replace=False))
    split[:, :, (np.arange(size) % half) < half // 2] = False
    pred[split] += np.uint64(10**6)
    vs = (8.0, 8.0, 8.0)
    parts = {}
    t = time.perf_counter()
    skel = skeletons_from_labels(gt, vs, KimimaroParams(dust_threshold=100, parallel=1))
    parts["kimimaro skeletonization (1 process)"] = time.perf_counter() - t
    seg = node_segments(skel, pred)
    expected_run_length(skel, seg, vs)  # numba warm-up (cache load), not counted
    rand_voi(gt[:1], pred[:1])
    t = time.perf_counter()
    seg = node_segments(skel, pred)
    erl = expected_run_length(skel, seg, vs)
    parts["node lookup + ERL"] = time.perf_counter() - t
    t = time.perf_counter()
    voi = rand_voi(gt, pred)
    parts["rand_voi"] = time.perf_counter() - t
    total = sum(parts.values())
    print(f"  {skel.num_skeletons} skeletons, {skel.num_nodes} nodes; nerl {erl['nerl']:.4f}, "
          f"voi_split {voi['voi_split']:.4f}, voi_merge {voi['voi_merge']:.4f}")
    for name, secs in parts.items():
        print(f"  {name:40s} {secs:8.2f} s  {100 * secs / total:5.1f} %")
    print(f"  {'total':40s} {total:8.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    parser.add_argument("--skip-e2e", action="store_true", help="skip the end-to-end run")
    args = parser.parse_args()
    if args.quick:
        rows = bench_rand_voi(64, 200, 3) + bench_erl(100, 20_000, 3)
        if not args.skip_e2e:
            bench_end_to_end(96, 60)
    else:
        rows = bench_rand_voi(256, 4000, 7) + bench_erl(2000, 1_000_000, 5)
        if not args.skip_e2e:
            bench_end_to_end(512, 2500)
    for row in rows:
        emit(*row)


if __name__ == "__main__":
    main()
