"""Blockwise decode at growing volume sizes with the block size fixed: does anything grow?

Synthetic labels (``pytc_core.synthetic``) → affinities with an imperfect model's defects
(``defective_affinities``) at 128³ → 256³ (→ 512³), stored as a precomputed layer in 64³
chunks; then the real blockwise steps of ``pytc-decode`` (``--method cc`` and ``ws``, block
size fixed), each as a subprocess the way Slurm array tasks run them: ``--step label
--blocks i/n`` shares of a fixed number of blocks, ``--step reduce``, ``--step relabel
--blocks i/n``. Each subprocess reports its own time (from just before the command runs,
imports excluded) and peak RSS (``VmHWM``; ``ru_maxrss`` would include the parent's). Printed per method and size:

- time per voxel (sum over every step's processes) and its ratio to the smallest size
  (target for the largest: ≤ 1.2);
- the peak RSS of a share (label or relabel), whose ratio should stay within 1.15 (flat). A
  block's memory follows its context (the block plus its halo, clipped at the volume's
  faces), so this ratio compares the largest size with the smallest one that has an
  interior block (at least 3 blocks per axis): below that every block lies on the volume's
  faces and has less context than the blocks of any larger volume;
- the reduce step's peak RSS;
- bytes of scratch per voxel after the label step (local labels; block summaries).

The peer of each ratio is the same pipeline at the smallest size, in the same run.

    uv run python bench/bench_decode_scale.py --sizes 128,384,512 --methods ws
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from table import emit, ratio_x  # noqa: E402


def child(argv: list[str]) -> None:
    """Run one pytc-decode command in this process; print its time and peak RSS as JSON."""
    from pytc_core.cli import run_entry_point
    from pytc_decode.cli import app

    t0 = time.perf_counter()
    rc = run_entry_point("pytc-decode", app, argv)
    seconds = time.perf_counter() - t0
    print(json.dumps({"rc": rc, "s": seconds, "rss_mb": peak_rss_mb()}), flush=True)


def peak_rss_mb() -> float:
    """This process's peak RSS (MB), its own address space only (VmHWM)."""
    from pytc_core.memory import peak_rss_bytes

    return peak_rss_bytes() / 2**20


def run_child(argv: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *argv], capture_output=True,
                         text=True, check=False)
    try:
        result = json.loads(out.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise SystemExit(f"child failed: {argv}\n{out.stderr[-2000:]}") from None
    if result["rc"] != 0:
        raise SystemExit(f"child exited {result['rc']}: {argv}\n{out.stderr[-2000:]}")
    return result


def make_input(size: int, directory: Path, seed: int = 0, name: str = "aff") -> str:
    from pytc_core.synthetic import defective_affinities, synthetic_labels
    from pytc_core.targets import affinities_from_labels
    from pytc_core.volume import create_volume

    labels = synthetic_labels((size,) * 3, seed=seed)
    aff = defective_affinities(affinities_from_labels(labels)[0], seed=seed)
    uri = str(directory / f"{name}{size}")
    create_volume(uri, aff.shape, np.float32, chunk_size=(64, 64, 64)).write(aff)
    return uri


def scratch_bytes(out: str) -> tuple[int, int]:
    work = Path(out) / "pytc_decode"
    labels = sum(p.stat().st_size for p in work.glob("labels_*"))
    summaries = sum(p.stat().st_size for p in work.glob("block_*"))
    return labels, summaries


def measure(aff_uri: str, size: int, method: str, block: int, per_share: int,
            directory: Path) -> dict:
    out = str(directory / f"seg_{method}_{size}_{Path(aff_uri).name}")
    blocks = (-(-size // block)) ** 3
    n = max(1, blocks // per_share)
    base = [aff_uri, "-o", out, "--block-size", str(block), "-q", "--method", method]
    label = [run_child([*base, "--step", "label", "--blocks", f"{i}/{n}"]) for i in range(n)]
    lab_b, sum_b = scratch_bytes(out)
    reduce = run_child([*base, "--step", "reduce"])
    relabel = [run_child([*base, "--step", "relabel", "--blocks", f"{i}/{n}"]) for i in range(n)]
    voxels = size ** 3
    seconds = sum(r["s"] for r in label + relabel) + reduce["s"]
    shutil.rmtree(out, ignore_errors=True)
    return {"size": size, "method": method, "shares": n, "s": seconds,
            "ns_per_voxel": seconds / voxels * 1e9,
            "share_rss_mb": max(r["rss_mb"] for r in label + relabel),
            "label_share_rss_mb": max(r["rss_mb"] for r in label),
            "reduce_rss_mb": reduce["rss_mb"],
            "scratch_labels_b_per_voxel": lab_b / voxels,
            "scratch_summaries_b_per_voxel": sum_b / voxels}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="128,384,512", help="edge lengths (voxels), comma-separated")
    p.add_argument("--methods", default="cc,ws")
    p.add_argument("--block", type=int, default=128,
                   help="block edge (voxels; ws: a multiple of its fragment grid, 128)")
    p.add_argument("--per-share", type=int, default=8, help="blocks per --blocks share")
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    methods = args.methods.split(",")
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench_decode_scale_") as tmp:
        directory = Path(tmp)
        warm = make_input(64, directory, name="warm")  # compile/cache the kernels once, not measured
        for method in methods:
            measure(warm, 64, method, args.block, args.per_share, directory)
        for size in sizes:
            uri = make_input(size, directory)
            for method in methods:
                row = measure(uri, size, method, args.block, args.per_share, directory)
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
            shutil.rmtree(uri, ignore_errors=True)
    print(f"{'method':6} {'size':>5} {'shares':>6} {'ns/voxel':>9} {'share MB':>9} "
          f"{'reduce MB':>9} {'labels B/vx':>11} {'summ. B/vx':>10}", file=sys.stderr)
    for r in rows:
        print(f"{r['method']:6} {r['size']:>5} {r['shares']:>6} {r['ns_per_voxel']:>9.1f} "
              f"{r['share_rss_mb']:>9.0f} {r['reduce_rss_mb']:>9.0f} "
              f"{r['scratch_labels_b_per_voxel']:>11.3f} "
              f"{r['scratch_summaries_b_per_voxel']:>10.3f}", file=sys.stderr)
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        if len(mine) < 2:
            continue
        small, big = mine[0], mine[-1]
        what = f"blockwise {method}, {big['size']}³ vs {small['size']}³, {args.block}³ blocks"
        emit("decode", f"{what}: time per voxel",
             ratio_x(big["ns_per_voxel"] / small["ns_per_voxel"], "target ≤ 1.2"),
             f"the same pipeline at {small['size']}³")
        interior = [r for r in mine if r["size"] >= 3 * args.block]  # has an interior block
        if len(interior) >= 2:
            first = interior[0]
            emit("decode", f"blockwise {method}, {big['size']}³ vs {first['size']}³ (both with "
                 f"interior blocks), {args.block}³ blocks: peak RSS of a share",
                 ratio_x(big["share_rss_mb"] / first["share_rss_mb"], "target ≤ 1.15"),
                 f"the same pipeline at {first['size']}³")
        else:
            print(f"{method}: peak RSS of a share not compared: give two sizes of at least "
                  f"{3 * args.block} (3 blocks per axis, so that a block has context on every "
                  "side)", file=sys.stderr)
        emit("decode", f"{what}: reduce peak RSS",
             ratio_x(big["reduce_rss_mb"] / small["reduce_rss_mb"], "< 1: smaller"),
             f"the same pipeline at {small['size']}³")
        emit("decode", f"{what}: scratch labels bytes per voxel (old: 4 or 8)",
             f"{big['scratch_labels_b_per_voxel']:.3f} vs {small['scratch_labels_b_per_voxel']:.3f}",
             f"the same pipeline at {small['size']}³")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
        raise SystemExit(0)
    raise SystemExit(main())
