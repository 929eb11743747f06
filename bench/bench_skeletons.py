"""Ground-truth skeletons for ERL: kimimaro object by object with --workers 2 vs 1 vs one
kimimaro call, and every object in joined blocks (igneous-like, ``max_object_voxels = 0``).

End to end (``run_eval`` with ``--skeletons kimimaro``) on the FlyEM volumes, the same process
running every variant in turn, ``--repeats`` times (the all-blocks variant once); prints
medians, the ratios, each task's CPU seconds, the machine's load average, and how far ERL/NERL
lie from the whole-volume skeletons' (the segmentation scored is the ground truth with every
label split in two along z at mid-volume, so ERL is finite and not trivially the skeletons'
total length).

    uv run python bench/bench_skeletons.py            # both volumes, 3 repeats
    uv run python bench/bench_skeletons.py --quick    # the 50x100x200 volume, 1 repeat
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import h5py
import kimimaro
import numpy as np

from pytc_core.bbox import BBox
from pytc_eval.eval import EvalConfig, run_eval
from pytc_eval.skeleton_blocks import skeletonize_blockwise
from pytc_eval.skeletons import KimimaroParams

ROOT = Path(__file__).resolve().parents[1]
VOLUMES = [ROOT / "examples/data/flyem_medulla_250.h5",
           ROOT.parent / "shared" / "data" / "flyem_gala_train_50x100x200.h5"]


def _split_seg(gt_path: Path, out: Path) -> str:
    with h5py.File(gt_path) as f:
        gt = f["labels"][...]
    seg = gt.astype(np.uint32) * 2
    seg[gt.shape[0] // 2:] += 1
    np.save(out, seg)
    return str(out)


def _run(seg: str, gt: str, config: EvalConfig) -> tuple[float, dict]:
    t0 = time.perf_counter()
    rep = run_eval([seg], gt, config)
    return time.perf_counter() - t0, json.loads(rep.segmentations[0].to_json())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--block", type=int, default=128)
    args = ap.parse_args()
    vols = VOLUMES[1:] if args.quick else VOLUMES
    repeats = 1 if args.quick else args.repeats
    print(f"cores usable: {len(os.sched_getaffinity(0))}; load average before: "
          f"{os.getloadavg()}")
    bench_lines: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for vol in vols:
            gt = f"{vol}:labels"
            seg = _split_seg(vol, Path(tmp) / f"{vol.stem}_split.npy")
            base = EvalConfig(skeletons="kimimaro", voxel_size=(10.0, 10.0, 10.0))
            variants = {
                "whole volume, 1 call": replace(base, workers=1,
                                                kimimaro=KimimaroParams(block=0)),
                "objects, --workers 1": replace(base, workers=1,
                                                kimimaro=KimimaroParams(block=args.block)),
                "objects, --workers 2": replace(base, workers=2,
                                                kimimaro=KimimaroParams(block=args.block)),
                "all in blocks, --workers 2": replace(base, workers=2, kimimaro=KimimaroParams(
                    block=args.block, max_object_voxels=0)),
            }
            times: dict[str, list[float]] = {k: [] for k in variants}
            scores: dict[str, dict] = {}
            for rep in range(repeats):
                for name, cfg in variants.items():
                    if rep and name.startswith("all in blocks"):
                        continue
                    t, js = _run(seg, gt, cfg)
                    times[name].append(t)
                    scores[name] = js
            med = {k: statistics.median(v) for k, v in times.items()}
            print(f"\n{vol.name} ({repeats} repeats, blocks of {args.block}³; load average now "
                  f"{os.getloadavg()})")
            for name in variants:
                js = scores[name]
                print(f"  {name:24s} median {med[name]:7.2f} s  erl {js['erl']:10.2f} nm  "
                      f"nerl {js['nerl']:.5f}  gt_erl {js['gt_erl']:10.2f}")
            w1, w2 = med["objects, --workers 1"], med["objects, --workers 2"]
            whole = med["whole volume, 1 call"]
            print(f"  ratio workers 2 vs 1: {w1 / w2:.2f}x; workers 2 vs whole volume: "
                  f"{whole / w2:.2f}x; objects workers 1 vs whole volume: {whole / w1:.2f}x")
            peer = f"kimimaro {getattr(kimimaro, '__version__', '')}".strip()
            bench_lines.append(f"BENCH|eval|end to end with kimimaro skeletons, {vol.name}, "
                               f"objects --workers 2 vs --workers 1|{w1 / w2:.2f}× "
                               f"(> 1: 2 workers faster)|pytc objects, 1 process")
            bench_lines.append(f"BENCH|eval|end to end with kimimaro skeletons, {vol.name}, "
                               f"objects --workers 2 vs one kimimaro call|{whole / w2:.2f}× "
                               f"(> 1: pytc faster)|{peer}, whole volume in one call")
            ref = scores["whole volume, 1 call"]
            for key in ("erl", "nerl", "gt_erl"):
                for name in ("objects, --workers 2", "all in blocks, --workers 2"):
                    b = scores[name][key]
                    print(f"  {key}: {name} differs from whole volume by "
                          f"{100 * (b - ref[key]) / ref[key]:+.3f} %")
            with h5py.File(vol) as f:
                labels = f["labels"][...]
            cpu: list[float] = []
            t0 = time.perf_counter()
            skeletonize_blockwise(labels, BBox.from_shape(labels.shape), (10, 10, 10),
                                  KimimaroParams(), block=args.block, workers=2,
                                  cpu_seconds=cpu)
            wall = time.perf_counter() - t0
            print(f"  skeletons alone, 2 workers: {wall:.2f} s wall, {len(cpu)} tasks, "
                  f"CPU s per task {sorted((round(c, 2) for c in cpu), reverse=True)[:12]}, "
                  f"total {sum(cpu):.2f} s "
                  f"(ideal wall on 2 cores {sum(cpu) / 2:.2f} s)")

    print("\n".join(bench_lines))


if __name__ == "__main__":
    main()
