"""The blockwise ws reduce: an octree of agglomerations (each block with its face fragments
frozen, by the label step; then each 2×2×2 group of groups in the reduce, up to the whole
grid) vs the flat reduce (every edge in one graph), at growing sizes.

Synthetic labels → affinities with an imperfect model's defects (as
``bench_decode_scale.py``), block summaries of the real label step (``ws_fragment_block``,
64³ blocks, halo 8) written to disk twice: with the block's edges (what the flat reduce
needs) and with the block's own agglomeration done (what the label step writes now; the time
of that level 0, summed over the blocks, is printed: it runs in the label shares); then,
each in its own process, :func:`pytc_decode.ws_blockwise.block_history` streams them from
disk (one block file read at a time, as ``pytc-decode --step reduce``). Printed per size:
fragments, the regions and edges of the largest group agglomerated, summary bytes, each reduce's time
and its peak memory above the process's RSS before it (``VmHWM`` reset through
``/proc/self/clear_refs``), per fragment, and the flat / octree ratios (the peer: the
flat reduce on the same blocks, same run). Histories are checked equal first.

    uv run python bench/bench_ws_reduce.py --sizes 128,192,256
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from table import emit  # noqa: E402


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def child(directory: str, size: int, mode: str, out: str, block: int) -> None:
    """Run one reduce over the summaries in ``directory``; print time and peak increment."""
    from pytc_core.bbox import BBox
    from pytc_core.blocks import plan_blocks
    from pytc_decode.ws_blockwise import WsBlockSummary, block_history
    from pytc_decode.ws_hierarchy import morton_order

    files = sorted(Path(directory).glob("block_*.npz"))
    box = BBox.from_shape((size,) * 3)
    if mode == "two":  # octree order, as the reduce step reads them
        blocks = plan_blocks(box, block)
        files = [files[i] for i in morton_order([[s // block for s in b.start]
                                                 for b in blocks])]
    seen: dict[str, int] = {}

    class Grab(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            _, seen["regions"], seen["edges"] = record.args  # type: ignore[assignment,misc]

    logger = logging.getLogger("pytc_decode.ws_blockwise")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(Grab())
    # warm up: load the compiled kernels (cached) and import everything the reduce touches
    from pytc_decode.agglomeration import RegionGraph, agglomerate, agglomerate_frozen

    first = WsBlockSummary.from_bytes(files[0].read_bytes())
    block_history([first], BBox(first.bbox.start, first.bbox.stop), 0.5,
                  flat=mode == "flat")
    tiny = RegionGraph(3, np.array([1, 2]), np.array([2, 3]), np.array([0.5, 0.25]),
                       np.array([1, 1]), np.array([0.5, 0.75]), np.array([5, 7]))
    agglomerate(tiny, 1.0)
    agglomerate_frozen(tiny, np.array([0, 0, 0, 1], bool), 1.0)
    before = _status_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS
    t0 = time.perf_counter()
    fragments, history = block_history(
        (WsBlockSummary.from_bytes(f.read_bytes()) for f in files), box, 0.5,
        block_shape=(block,) * 3, flat=mode == "flat")
    seconds = time.perf_counter() - t0
    peak = _status_kb("VmHWM") - before
    np.save(out, history[np.lexsort((history[:, 0], history[:, 2]))])
    print(json.dumps({"s": seconds, "peak_kb": peak, "fragments": fragments.total,
                      "merges": len(history), **seen}))


def make_summaries(size: int, block: int, directory: Path, seed: int = 0) -> float:
    """Write ``flat/`` and ``two/`` summaries; return level 0's total time (s)."""
    from pytc_core.bbox import BBox
    from pytc_core.blocks import plan_blocks
    from pytc_core.synthetic import defective_affinities, synthetic_labels
    from pytc_core.targets import affinities_from_labels
    from pytc_decode.ws_blockwise import _block_level0, quantised_affinities, ws_fragment_block

    labels = synthetic_labels((size,) * 3, seed=seed)
    aff = quantised_affinities(defective_affinities(affinities_from_labels(labels)[0],
                                                    seed=seed))
    box = BBox.from_shape(aff.shape[1:])
    (directory / "flat").mkdir()
    (directory / "two").mkdir()
    level0 = 0.0
    for i, b in enumerate(plan_blocks(box, block)):
        context = b.grow(8).intersect(box)
        _, summary = ws_fragment_block(aff[(slice(None), *context.slices)], context, b, box)
        (directory / "flat" / f"block_{i:05d}.npz").write_bytes(summary.to_bytes())
        t0 = time.perf_counter()
        done = _block_level0(summary, box, 0.5)
        level0 += time.perf_counter() - t0
        (directory / "two" / f"block_{i:05d}.npz").write_bytes(done.to_bytes())
    return level0


def run(directory: Path, size: int, mode: str, block: int) -> dict:
    out = directory / f"history_{mode}.npy"
    proc = subprocess.run([sys.executable, __file__, "--child", str(directory / mode),
                           str(size), mode, str(out), str(block)], capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"child failed ({mode}, {size}): {proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["history"] = np.load(out)
    result["bytes"] = sum(p.stat().st_size for p in (directory / mode).glob("block_*"))
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="128,192,256")
    p.add_argument("--block", type=int, default=64)
    p.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), args.child[2], args.child[3],
              int(args.child[4]))
        return 0
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory(prefix="bench_ws_reduce_") as tmp:
            level0 = make_summaries(size, args.block, Path(tmp))
            flat = run(Path(tmp), size, "flat", args.block)
            two = run(Path(tmp), size, "two", args.block)
        if not np.array_equal(flat["history"], two["history"]):
            raise SystemExit(f"{size}³: the octree history differs from the flat one")
        rows.append((size, flat, two))
        f = flat["fragments"]
        print(f"{size}³: {f} fragments, {two['merges']} merges; largest group "
              f"{two['regions']} regions ({two['regions'] / f:.0%}), {two['edges']} edges "
              f"(flat: {flat['edges']}); flat {flat['s']:.2f} s, "
              f"{flat['peak_kb'] / 1024:.1f} MB ({flat['peak_kb'] * 1024 / f:.0f} B/fragment); "
              f"octree {two['s']:.2f} s, {two['peak_kb'] / 1024:.1f} MB "
              f"({two['peak_kb'] * 1024 / f:.0f} B/fragment), level 0 in the label step "
              f"{level0:.2f} s; summaries {flat['bytes'] / 2**20:.1f} vs "
              f"{two['bytes'] / 2**20:.1f} MB", file=sys.stderr)
    size, flat, two = rows[-1]
    emit("decode ws", f"blockwise reduce peak memory, flat / octree, {size}³ "
         f"({args.block}³ blocks, {flat['fragments']} fragments)",
         f"{flat['peak_kb'] / max(two['peak_kb'], 1):.2f}× (> 1: octree smaller; "
         f"{flat['peak_kb'] / 1024:.0f} vs {two['peak_kb'] / 1024:.0f} MB)",
         "flat reduce, same run")
    emit("decode ws", f"blockwise reduce time, flat / octree, {size}³",
         f"{flat['s'] / two['s']:.2f}× (> 1: octree faster)", "flat reduce, same run")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
