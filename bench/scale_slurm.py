"""The path of docs/scale.md, measured: a volume split over Slurm array tasks equals the
single-machine run.

    tests/slurm/local-slurm.sh start && export SLURM_CONF=/tmp/pytc-local-slurm/slurm.conf
    uv run python bench/scale_slurm.py runs/scale [--size 512] [--tasks 8]

Steps (each timed, wall clock, seconds):
1. a synthetic EM volume of ``size``^3 voxels (``pytc_core.synthetic``) written as precomputed
   layers ``raw`` (uint8) and ``labels`` (uint32), 64^3 chunks;
2. ``pytc-train``: a small MONAI U-Net (filters 8, 16, 32: fast enough to predict 512^3 voxels
   on 2 CPU cores in minutes) trained on the corner z, y, x < 64, 256, 256; the equality does
   not depend on how good it is, the evaluation shows that it works;
3. ``pytc-launch blocks infer --tasks N``: the affinities as a Slurm job array (uint8 layer);
4. ``pytc-launch blocks decode --tasks N``: seeded watershed + agglomeration, label array,
   one reduce job, relabel array;
5. the same two commands on one machine without Slurm: ``pytc-infer`` (one process, all
   blocks) and ``pytc-decode --block-size`` (all three steps in one process), and for
   reference a whole-volume ``pytc-decode`` (no blocks);
6. equality: the affinity layers byte for byte, the segmentations label for label; blockwise
   watershed is close to, not identical with, the whole-volume one (face-cut fragments are
   re-joined by their edges), so that pair is compared by VOI;
7. ``pytc-eval`` of the Slurm segmentation on a 128^3 sub-volume at the centre.

Prints a table on stdout (markdown) and writes ``OUT/scale.json``. Times include Slurm's
scheduling and each task's Python start-up. On the 2-core CI machine class the local Slurm
runs two tasks at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

BIN = Path(sys.executable).parent


def run(*argv: str) -> str:
    """Run a pytc command; its stdout (one line), stderr passed through on failure."""
    proc = subprocess.run([str(BIN / argv[0]), *argv[1:]], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"{' '.join(argv)} failed with exit code {proc.returncode}")
    return proc.stdout.strip()


def wait_for_jobs(directory: Path, timeout: float = 7200) -> None:
    """Wait until every job of a launch directory is final; exit unless all completed."""
    from pytc_launch.status import wait_until_final

    try:
        rows = wait_until_final(directory, timeout, poll=2.0)
    except TimeoutError as exc:
        raise SystemExit(str(exc.args[0])) from None
    bad = [r for r in rows if r.state != "COMPLETED"]
    if bad:
        raise SystemExit(f"jobs of {directory} did not complete: {bad}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--size", type=int, default=512, help="edge of the cube (voxels)")
    parser.add_argument("--tasks", type=int, default=8, help="Slurm array tasks per step")
    parser.add_argument("--block", type=int, default=128, help="block edge (voxels)")
    parser.add_argument("--steps", type=int, default=150, help="training steps")
    parser.add_argument("--agglomeration-threshold", default="0.5")
    args = parser.parse_args()
    if not os.environ.get("SLURM_CONF") and not Path("/etc/slurm/slurm.conf").exists():
        raise SystemExit("no Slurm: run tests/slurm/local-slurm.sh start and export SLURM_CONF")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    n, tasks, block = args.size, str(args.tasks), str(args.block)
    times: dict[str, float] = {}

    def timed(name: str, fn):
        t0 = time.perf_counter()
        result = fn()
        times[name] = time.perf_counter() - t0
        print(f"[scale] {name}: {times[name]:.0f} s", file=sys.stderr, flush=True)
        return result

    def make_data() -> None:
        from pytc_core import create_volume
        from pytc_core.synthetic import synthetic_em_volume

        raw, labels = synthetic_em_volume((n, n, n), seed=0)
        create_volume(str(out / "raw"), raw.shape, np.uint8, voxel_size=(8, 8, 8),
                      chunk_size=(64, 64, 64), overwrite=True).write(raw)
        create_volume(str(out / "labels"), labels.shape, np.uint32, voxel_size=(8, 8, 8),
                      chunk_size=(64, 64, 64), layer_type="segmentation",
                      overwrite=True).write(labels.astype(np.uint32))

    timed("synthetic data", make_data)
    side = min(n, 256)
    ckpt = timed("pytc-train", lambda: run(
        "pytc-train", "--raw", str(out / "raw"), "--labels", str(out / "labels"),
        "--bbox", f"0,0,0,64,{side},{side}", "--val-bbox", f"64,0,0,96,{side},{side}", "--patch", "32,64,64",
        "--max-steps", str(args.steps), "--seed", "0", "--aug", "light",
        "--run-dir", str(out / "train"), "--overwrite", "-q",
        "--arch", "monai_unet", "--set", "model.filters=[8,16,32]", "model.num_res_units=0",
        f"train.val_every={args.steps}", "data.val_max_patches=8", "train.accelerator=cpu"))

    for old in ("aff_slurm", "seg_slurm", "aff_single", "seg_single", "seg_whole",
                "launch-infer", "launch-decode"):  # outputs of an earlier run of this script
        shutil.rmtree(out / old, ignore_errors=True)
    infer = ["-c", ckpt, "-i", str(out / "raw"), "--dtype", "uint8", "-q"]
    decode = ["--method", "ws", "--agglomeration-threshold", args.agglomeration_threshold, "--min-size", "50",
              "-q"]

    def slurm(step: str, argv: list[str]) -> None:
        job = run("pytc-launch", "blocks", step, "--tasks", tasks, "--dir",
                  str(out / f"launch-{step}"), "--", *argv)
        assert job.isdigit(), job
        wait_for_jobs(out / f"launch-{step}")

    timed("slurm: blocks infer", lambda: slurm(
        "infer", [*infer, "-o", str(out / "aff_slurm"), "--block-size", block]))
    timed("slurm: blocks decode", lambda: slurm(
        "decode", [str(out / "aff_slurm"), "-o", str(out / "seg_slurm"), "--block-size", block,
                   *decode]))
    timed("one machine: pytc-infer", lambda: run(
        "pytc-infer", *infer, "-o", str(out / "aff_single")))
    timed("one machine: pytc-decode --block-size", lambda: run(
        "pytc-decode", str(out / "aff_single"), "-o", str(out / "seg_single"), "--block-size",
        block, *decode))
    timed("one machine: pytc-decode, whole volume", lambda: run(
        "pytc-decode", str(out / "aff_single"), "-o", str(out / "seg_whole"), *decode))

    from pytc_core import open_volume
    from pytc_eval import rand_voi

    aff_equal = bool(np.array_equal(open_volume(str(out / "aff_slurm")).read(),
                                    open_volume(str(out / "aff_single")).read()))
    seg_a = open_volume(str(out / "seg_slurm")).read()
    seg_equal = bool(np.array_equal(seg_a, open_volume(str(out / "seg_single")).read()))
    whole = rand_voi(open_volume(str(out / "seg_whole")).read(), seg_a)
    c0, c1 = n // 2 - 64, n // 2 + 64
    report = json.loads(timed("pytc-eval (128^3 sub-volume)", lambda: run(
        "pytc-eval", str(out / "seg_slurm"), "--gt", str(out / "labels"),
        "--bbox", f"{c0},{c0},{c0},{c1},{c1},{c1}", "--json", "-q")))
    summary = {"size": n, "tasks": args.tasks, "block": args.block, "times_s": times,
               "affinities_identical": aff_equal, "segmentations_identical": seg_equal,
               "voi_blockwise_vs_whole": {"split": whole["voi_split"],
                                          "merge": whole["voi_merge"]},
               "segments": int(len(np.unique(seg_a)) - (seg_a == 0).any()),
               "eval": {k: report[k] for k in ("voi_split", "voi_merge", "adapted_rand_error",
                                               "n_segments", "n_gt_segments")},
               "cpus": os.cpu_count()}
    (out / "scale.json").write_text(json.dumps(summary, indent=1))
    print(f"| step ({n}^3 voxels, {args.tasks} tasks, {args.block}^3 blocks) | seconds |")
    print("|---|---|")
    for name, seconds in times.items():
        print(f"| {name} | {seconds:.0f} |")
    print(f"\naffinities identical: {aff_equal}; segmentations identical: {seg_equal} "
          f"({summary['segments']} segments); blockwise vs whole-volume watershed: VOI split "
          f"{whole['voi_split']:.4f}, merge {whole['voi_merge']:.4f}; eval of the centre "
          f"128^3: {summary['eval']}")
    if not (aff_equal and seg_equal):
        raise SystemExit("the Slurm run differs from the single-machine run")


if __name__ == "__main__":
    main()
