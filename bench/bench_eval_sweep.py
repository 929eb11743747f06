"""Benchmarks for pytc-eval at scale: a threshold sweep from fragments, node lookup by block.

Run: ``uv run python bench/bench_eval_sweep.py [--size 128] [--repeats 3] [--noise 0.15]``.

1. Sweep: fragments of a FlyEM crop (``examples/data/flyem_medulla_250.h5``, noisy affinities
   of its labels → seeded watershed + agglomeration, as ``pytc-decode --method ws`` does),
   ten thresholds scored from the fragments (``run_eval`` on the fragments, merge history
   beside them) vs scoring one written segmentation, and vs scoring each of the ten
   segmentations; skeletons: a chain of sampled voxels inside each ground-truth body. Values
   are checked equal (1e-12) before timing.
2. Several segmentations in parallel: the ten segmentations tiled ``--parallel-tiles`` times
   per axis (default: to about 512³ each, 1.3 G voxels in all, beyond the size at which
   ``--workers 2`` starts processes), scored with ``--workers 2`` (every segmentation's blocks
   sampled by two worker processes) vs ``--workers 1``; reports checked identical first.
3. Node lookup: 10⁵ nodes in a 256³ box cut into 64 blocks of 64³: grouping the nodes once
   by block (``NodeBlocks``) and looking up each block's nodes, vs the former scan (every
   block tests every node).

Medians of ``--repeats`` runs in this process (interleaved), after one warm-up (numba JIT).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
from table import emit, ratio_x

from pytc_core import BBox, create_volume
from pytc_core.blocks import plan_blocks
from pytc_core.merge_history import MergeHistory, write_merge_history
from pytc_core.targets import affinities_from_labels
from pytc_decode.ws import (
    agglomerate,
    fragment_seeds,
    region_graph,
    segmentations_at,
    watershed_fragments,
)
from pytc_eval import EvalConfig, run_eval
from pytc_eval.sample import NodeBlocks

DATA = Path(__file__).resolve().parents[1] / "examples/data/flyem_medulla_250.h5"
THRESHOLDS = tuple(round(0.1 * k, 1) for k in range(1, 10)) + (0.95,)


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def interleaved_medians(fns, repeats: int) -> list[float]:
    """Median seconds of each function, the runs interleaved (a shared machine's load
    changes over time: each round times every function once)."""
    for fn in fns:
        fn()  # warm-up
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, out in zip(fns, times, strict=True):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def skeleton_json(gt: np.ndarray, path: Path, rng: np.random.Generator) -> str:
    nodes, edges = [], []
    for sid in np.unique(gt[gt != 0]):
        vox = np.argwhere(gt == sid)
        pick = vox[np.sort(rng.choice(len(vox), size=min(50, len(vox)), replace=False))]
        for k, (z, y, x) in enumerate(pick):
            nodes.append({"id": int(sid) * 1000 + k, "skeleton_id": int(sid), "z": int(z),
                          "y": int(y), "x": int(x)})
            if k:
                edges.append([int(sid) * 1000 + k - 1, int(sid) * 1000 + k])
    path.write_text(json.dumps({"nodes": nodes, "edges": edges}))
    return str(path)


def write(uri: Path, array: np.ndarray) -> str:
    vol = create_volume(str(uri), array.shape, array.dtype, voxel_size=(10, 10, 10),
                        layer_type="segmentation")
    vol.write(array)
    return str(uri)


def bench_sweep(size: int, repeats: int, tmp: Path, noise: float, parallel_tiles: int) -> None:
    with h5py.File(DATA) as f:
        gt = f["labels"][:size, :size, :size].astype(np.uint32)
    rng = np.random.default_rng(0)
    aff = affinities_from_labels(gt)[0]
    aff = np.clip(aff + rng.normal(0, noise, aff.shape).astype(np.float32), 0, 1)
    fragments = watershed_fragments(aff, fragment_seeds(aff, 0.5, 2))
    rows = agglomerate(region_graph(fragments, aff), 1.0)
    frag_uri = write(tmp / "frag.zarr", fragments)
    write_merge_history(frag_uri, MergeHistory.from_rows(
        rows, int(fragments.max()), thresholds=THRESHOLDS, config={"min_size": 0}))
    seg_uris = [write(tmp / f"seg{k}.zarr", s)
                for k, s in enumerate(segmentations_at(fragments, rows, THRESHOLDS))]
    gt_uri = write(tmp / "gt.zarr", gt)
    cfg = EvalConfig(skeletons=skeleton_json(gt, tmp / "skel.json", rng), block_size=(64,) * 3)

    sweep = run_eval([frag_uri], gt_uri, cfg).segmentations
    each = run_eval(seg_uris, gt_uri, cfg).segmentations
    for a, b in zip(sweep, each, strict=True):
        for key in ("voi_split", "voi_merge", "rand_split", "rand_merge", "nerl", "erl"):
            x = getattr(a, key, None)
            if x is None and a.skeleton_scores is not None:
                x, y = getattr(a.skeleton_scores, key), getattr(b.skeleton_scores, key)
            else:
                y = getattr(b, key)
            assert abs(x - y) <= 1e-12, (key, x, y)
    cfg = replace(cfg, workers=1)
    t_sweep, t_one, t_each = interleaved_medians([
        lambda: run_eval([frag_uri], gt_uri, cfg), lambda: run_eval([seg_uris[4]], gt_uri, cfg),
        lambda: run_eval(seg_uris, gt_uri, cfg)], repeats)
    print(f"{size}³ FlyEM, noise {noise}, {int(fragments.max())} fragments "
          f"({fragments.size / max(int(fragments.max()), 1):.0f} voxels each), 10 thresholds, "
          f"{sweep[0].skeleton_scores.n_skeleton_nodes if sweep[0].skeleton_scores else 0} "
          f"nodes: sweep {t_sweep:.3f} s, one segmentation {t_one:.3f} s, each of ten "
          f"{t_each:.3f} s (medians of {repeats})", flush=True)
    what = (f"{size}³ FlyEM + skeletons, {fragments.size // max(int(fragments.max()), 1)} "
            "voxels per fragment")
    emit("eval", f"sweep of 10 thresholds from fragments vs scoring one segmentation, {what}", ratio_x(t_sweep / t_one, "target ≤ 1.2"),
         f"run_eval on one segmentation {t_one:.2f} s")
    emit("eval", f"sweep of 10 thresholds from fragments vs scoring each of the 10, {what}", ratio_x(t_each / t_sweep, "> 1: sweep faster"),
         f"run_eval on 10 segmentations {t_each:.2f} s")
    if parallel_tiles > 1:
        bench_processes(gt, segmentations_at(fragments, rows, THRESHOLDS), cfg, tmp,
                        parallel_tiles, repeats)


def bench_processes(gt: np.ndarray, segs: list[np.ndarray], cfg: EvalConfig, tmp: Path,
                    tiles: int, repeats: int) -> None:
    """The ten segmentations tiled ``tiles`` times along each axis, scored with ``--workers
    2`` (their blocks sampled by two processes) vs ``--workers 1`` (in this process)."""
    reps = (tiles,) * 3
    gt_uri = write(tmp / "gt_big.zarr", np.tile(gt, reps))
    uris = [write(tmp / f"big{k}.zarr", np.tile(s, reps)) for k, s in enumerate(segs)]
    serial, parallel = replace(cfg, workers=1, skeletons=None), replace(cfg, workers=2,
                                                                         skeletons=None)
    one = run_eval(uris, gt_uri, serial)
    two = run_eval(uris, gt_uri, parallel)
    assert [r.to_json() for r in one.segmentations] == [r.to_json() for r in two.segmentations]
    assert "sampling" in two.timings, "--workers 2 did not start processes at this size"
    t_one, t_two = interleaved_medians([lambda: run_eval(uris, gt_uri, serial),
                                        lambda: run_eval(uris, gt_uri, parallel)], repeats)
    edge = gt.shape[0] * tiles
    print(f"10 segmentations of {edge}³ ({10 * gt.size * tiles ** 3 / 1e9:.2f} G voxels): "
          f"--workers 1 {t_one:.2f} s, --workers 2 {t_two:.2f} s (medians of {repeats})",
          flush=True)
    emit("eval", f"10 segmentations of {edge}³ FlyEM tiles: blocks sampled by 2 processes vs "
         "1", ratio_x(t_one / t_two, "> 1: processes faster; 2 cores: at most 2"),
         f"run_eval --workers 1 {t_one:.2f} s")


def bench_lookup(repeats: int) -> None:
    rng = np.random.default_rng(1)
    box = BBox((0, 0, 0), (256, 256, 256))
    blocks = plan_blocks(box, 64)
    node_vox = rng.integers(0, 256, (100_000, 3))

    def scan() -> int:  # the former lookup: every block tests every node
        seen = 0
        for block in blocks:
            inside = np.all((node_vox >= block.start) & (node_vox < block.stop), axis=1)
            seen += int(np.count_nonzero(inside))
        return seen

    def grouped() -> int:
        groups = NodeBlocks(node_vox, box.start, (64, 64, 64))
        return sum(groups.of(block).size for block in blocks)

    assert scan() == grouped() == node_vox.shape[0]
    t_scan = median_time(scan, repeats)
    t_grouped = median_time(grouped, repeats)
    print(f"node lookup, 1e5 nodes, 64 blocks: scan {t_scan * 1e3:.1f} ms, grouped "
          f"{t_grouped * 1e3:.2f} ms", flush=True)
    emit("eval", "skeleton node lookup, 1e5 nodes x 64 blocks: grouped by block vs scan",
         ratio_x(t_scan / t_grouped, "> 1: grouped faster"), f"scan {t_scan * 1e3:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128, help="edge of the FlyEM crop")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--noise", type=float, default=0.15,
                        help="std of the Gaussian noise on the affinities (0.3: ~45 voxels per "
                             "fragment, 0.15: ~800)")
    parser.add_argument("--parallel-tiles", type=int, default=None,
                        help="also score the ten segmentations tiled this many times per axis "
                             "with --workers 2 vs 1 (default: to about 512³; 0: skip)")
    args = parser.parse_args()
    logging.getLogger("pytc").setLevel(logging.WARNING)
    bench_lookup(max(args.repeats, 5))
    with tempfile.TemporaryDirectory() as tmp:
        tiles = (-(-512 // args.size) if args.parallel_tiles is None else args.parallel_tiles)
        bench_sweep(args.size, args.repeats, Path(tmp), args.noise, tiles)


if __name__ == "__main__":
    main()
