"""Benchmark pytc-infer: overhead over pure model compute, against MONAI, bf16, peak memory.

Run: ``uv run python bench/bench_infer.py [--size 256] [--repeats 1] [--model unet-small]``

Data: a uint8 raw precomputed layer (smoothed noise, 64³ chunks) on local disk, a checkpoint
written by ``pytc_core.models.save_checkpoint``; patch 64³, overlap 0.25, Gaussian blending.
Measured in one process, interleaved, medians of ``--repeats``:

0. A warm-up forward on the patch before any timing.
1. **Overhead over pure model compute**: one ``run_infer`` over the whole layer (default
   memory plan, reading the input and writing a float32 precomputed layer included) against
   the sum of the model's forward times on the same windows, timed inside that run (global
   forward hooks; the planner's small probe passes count as overhead).
2. **Against MONAI**: load the same checkpoint, read the whole layer, one
   ``sliding_window_inference`` (same patch, overlap, Gaussian mode, sigmoid per window) and
   write its result to a precomputed layer. Ratio = MONAI time / pytc-infer time (≥ 1.0 means
   pytc-infer is as fast); max |difference| of the outputs; windows computed by each.
3. **bf16**: forward time of one window with autocast bf16 vs fp32 (median of several), and
   the max deviation of a blended bf16 prediction from fp32 on a (2·patch)³ volume.
   With ``blocks``: the windows a plan with smaller blocks computes (counted, not run).
4. **Peak memory**: peak RSS of ``pytc-infer`` in a fresh process on a volume of one block
   vs a volume of 8 blocks (same ``--block-size``, default 128), a tiny model and 32³
   patches; also the peak of a run on an 8³ bbox (the process's own baseline: torch, MONAI).
   That peak is mostly start-up; the run's own working set (the increment above the RSS
   after start-up) is measured by packages/pytc-infer/tests/test_peak_memory.py (slow):
   83.7 MiB for one 128³ block, 99.1 MiB for a 256³ volume of 8 such blocks, ratio 1.19.
5. **Write-behind** (``--wb-size 128 --wb-block 64 --wb-repeats 5``): ``run_infer`` with the
   writer thread (block k is written while block k+1 is computed) against writing each block
   before computing the next (``write_behind=False``), interleaved, medians; the same blocks
   written alone give the write share. Then again with every chunk write slowed by
   ``--wb-latency`` s (a sleep standing in for a bucket or network disk).

The machine is shared (2 cores for ~8 developers): absolute times are noisy; the ratios are
taken within one process, interleaved.

Measured (2026-11-23, ``--model tiny --patch 32``, 128³ volume, 64³ blocks = 8 blocks, 7
repeats, load average 3–6 on the 2 cores from other jobs, so single runs varied 1.9–17.8 s;
the ``_min`` ratios compare the least disturbed run of each side):

- local disk: writing the 8 blocks alone takes 0.01–0.02 s, 0.2–0.5 % of a run, so
  overlapping them can buy at most that here: final run median ratio sync/write-behind
  1.05, min ratio **0.99** (earlier sessions' medians 1.11, 0.73, 0.38: load noise).
- storage that adds 0.3 s per chunk write (a sleep standing in for a bucket; 2.4 s of writes
  per run): final run medians 10.78 s vs 6.77 s = **1.59×**, least disturbed runs 7.16 s vs
  4.43 s = **1.62×** (a first session: medians 8.37 s vs 5.24 s = 1.60×; one session under
  burstier load: medians 0.63×, min 1.64×). The writes hide behind compute: write-behind ≈
  max(compute, writes) instead of their sum. Outputs equal in every run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from table import emit, peer, ratio_x

from pytc_core.models import build_model, load_model_from_checkpoint, save_checkpoint
from pytc_core.volume import create_volume, open_volume

MODELS = {
    # a 3-level MONAI U-Net (8/16/32 channels): small enough for 256³ on a shared 2-core CPU
    "unet-small": {"architecture": "monai_unet", "in_channels": 1, "out_channels": 3,
                   "filters": [8, 16, 32], "num_res_units": 1},
    "mednext-s": {"architecture": "mednext", "mednext_size": "S", "in_channels": 1,
                  "out_channels": 3},
    "tiny": {"architecture": "monai_unet", "in_channels": 1, "out_channels": 3,
             "filters": [2, 4], "num_res_units": 0},
}


def make_raw(shape, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.random(shape, dtype=np.float32)
    for axis in range(3):
        noise = (noise + np.roll(noise, 1, axis) + np.roll(noise, -1, axis)) / 3
    lo, hi = noise.min(), noise.max()
    return ((noise - lo) / (hi - lo) * 255).astype(np.uint8)


def write_layer(uri: str, array: np.ndarray) -> str:
    vol = create_volume(uri, array.shape, array.dtype, voxel_size=(8, 8, 8),
                        chunk_size=(64, 64, 64))
    vol.write(array)
    return uri


def save_model(path: Path, table: dict, patch) -> Path:
    torch.manual_seed(0)
    net = build_model(table)
    return save_checkpoint(path, net, {"model": table, "data": {"patch_size": list(patch)}})


class ForwardTimer:
    """Sums the wall time of the top-level forward calls of modules of one class on inputs
    of one spatial shape (global module hooks)."""

    def __init__(self, cls: type, shape) -> None:
        self.cls, self.shape = cls, tuple(shape)
        self.total, self.calls, self._start = 0.0, 0, None
        from torch.nn.modules.module import (
            register_module_forward_hook,
            register_module_forward_pre_hook,
        )

        self._handles = [register_module_forward_pre_hook(self._pre),
                         register_module_forward_hook(self._post)]

    def _pre(self, module, args):
        if type(module) is self.cls and tuple(args[0].shape[2:]) == self.shape:
            self._start = time.perf_counter()

    def _post(self, module, args, output):
        if type(module) is self.cls and self._start is not None and \
                tuple(args[0].shape[2:]) == self.shape:
            self.total += time.perf_counter() - self._start
            self.calls += args[0].shape[0]
            self._start = None

    def close(self) -> None:
        for h in self._handles:
            h.remove()


def run_pytc(ckpt: Path, raw_uri: str, out_uri: str, patch, overlap: float, model_cls,
             **options):
    from pytc_infer import predict_volume

    timer = ForwardTimer(model_cls, patch)
    t0 = time.perf_counter()
    result = predict_volume(str(ckpt), raw_uri, out_uri, overwrite=True, patch=tuple(patch),
                            overlap=overlap, **options)
    wall = time.perf_counter() - t0
    timer.close()
    return wall, timer.total, timer.calls, result


def run_monai(ckpt: Path, raw_uri: str, out_uri: str, patch, overlap: float):
    from monai.inferers import sliding_window_inference

    t0 = time.perf_counter()
    model, _ = load_model_from_checkpoint(ckpt)
    raw = open_volume(raw_uri).read()
    x = torch.from_numpy(raw.astype(np.float32) / 255)[None, None]
    calls = 0

    def predictor(t):
        nonlocal calls
        calls += t.shape[0]
        return torch.sigmoid(model(t))

    with torch.inference_mode():
        out = sliding_window_inference(x, tuple(patch), 1, predictor, overlap=overlap,
                                       mode="gaussian")[0].numpy()
    vol = create_volume(out_uri, out.shape, np.float32, voxel_size=(8, 8, 8),
                        chunk_size=(64, 64, 64), overwrite=True)
    vol.write(out)
    return time.perf_counter() - t0, calls


def bench_bf16(table: dict, patch, repeats: int = 5) -> dict:
    from pytc_infer import predict

    torch.manual_seed(0)
    model = build_model(table).eval()
    x = torch.rand((1, 1, *patch))
    times = {"32": [], "bf16": []}
    with torch.inference_mode():
        model(x)
        for _ in range(repeats):
            for prec in ("32", "bf16"):
                t0 = time.perf_counter()
                if prec == "bf16":
                    with torch.autocast("cpu", dtype=torch.bfloat16):
                        model(x)
                else:
                    model(x)
                times[prec].append(time.perf_counter() - t0)
    raw = make_raw(tuple(2 * p for p in patch), seed=3)
    fp32 = predict(model, raw, patch=patch, overlap=0.25)
    bf16 = predict(model, raw, patch=patch, overlap=0.25, precision="bf16")
    t32, tbf = statistics.median(times["32"]), statistics.median(times["bf16"])
    return {"fp32_window_s": round(t32, 4), "bf16_window_s": round(tbf, 4),
            "bf16_speedup": round(t32 / tbf, 3),
            "bf16_max_abs_deviation": float(np.abs(fp32 - bf16).max()),
            "bf16_mean_abs_deviation": float(np.abs(fp32 - bf16).mean())}


_PEAK = """
import sys
from pytc_core.memory import peak_rss_bytes
from pytc_core.cli import run_entry_point
from pytc_infer.cli import app
code = run_entry_point("pytc-infer", app, sys.argv[1:])
print(peak_rss_bytes(), file=sys.stderr)  # VmHWM: not the parent's peak
sys.exit(code)
"""


def peak_rss(ckpt: Path, raw_uri: str, out_uri: str, block: int, extra=()) -> int:
    proc = subprocess.run([sys.executable, "-c", _PEAK, "-c", str(ckpt), "-i", raw_uri, "-o",
                           out_uri, "--block-size", str(block), "--patch", "32", "-q",
                           "--overwrite", *extra], capture_output=True, text=True, check=True)
    return int(proc.stderr.strip().splitlines()[-1])


def bench_memory(tmp: Path, block: int = 64) -> dict:
    ckpt = save_model(tmp / "tiny.ckpt", MODELS["tiny"], (32, 32, 32))
    one = write_layer(str(tmp / "raw_one"), make_raw((block,) * 3, seed=1))
    eight = write_layer(str(tmp / "raw_eight"), make_raw((2 * block,) * 3, seed=2))
    p1 = peak_rss(ckpt, one, str(tmp / "out_one"), block)
    p8 = peak_rss(ckpt, eight, str(tmp / "out_eight"), block)
    base = peak_rss(ckpt, one, str(tmp / "out_base"), block, ["--bbox", "0,0,0,8,8,8"])
    return {"block": block, "peak_tiny_bbox_MiB": round(base / 2**20, 1),
            "peak_one_block_MiB": round(p1 / 2**20, 1),
            "peak_eight_blocks_MiB": round(p8 / 2**20, 1), "ratio": round(p8 / p1, 3)}


@contextlib.contextmanager
def slow_storage(latency: float):
    """Every chunk write of a precomputed layer takes ``latency`` s longer (a sleep: what a
    bucket or a network disk adds per request); 0 leaves the writes as they are."""
    from pytc_core.volume.precomputed import PrecomputedVolume

    original = PrecomputedVolume._write

    def slow(self, array, bbox):
        time.sleep(latency * len(list(self.chunk_boxes(bbox))))
        original(self, array, bbox)

    if latency > 0:
        PrecomputedVolume._write = slow  # type: ignore[method-assign]
    try:
        yield
    finally:
        PrecomputedVolume._write = original  # type: ignore[method-assign]


def bench_write_behind(tmp: Path, table: dict, patch, size: int, block: int,
                       repeats: int, latency: float = 0.0) -> dict:
    """``run_infer`` with the writer thread (a block is written while the next is computed)
    against writing each block before computing the next; interleaved, medians. With
    ``latency``, each chunk write sleeps that long first (simulated slow storage)."""
    from pytc_core.blocks import plan_blocks
    from pytc_infer.infer import InferConfig, run_infer

    tmp = tmp / f"write_behind_{latency}"
    tmp.mkdir()
    ckpt = save_model(tmp / "wb.ckpt", table, patch)
    raw_uri = write_layer(str(tmp / "wb_raw"), make_raw((size,) * 3, seed=4))
    times: dict[bool, list[float]] = {True: [], False: []}
    with slow_storage(latency):
        for k in range(repeats + 1):  # the first round warms both paths up, not counted
            for behind in ((True, False) if k % 2 else (False, True)):
                cfg = InferConfig(checkpoint=str(ckpt), input=raw_uri,
                                  output=str(tmp / f"wb_out_{behind}"), patch=tuple(patch),
                                  block_size=(block,) * 3)
                t0 = time.perf_counter()
                result = run_infer(cfg, overwrite=True, show_progress=False,
                                   write_behind=behind)
                if k:
                    times[behind].append(time.perf_counter() - t0)
        pred = open_volume(str(tmp / "wb_out_True")).read()
        same = bool(np.array_equal(pred, open_volume(str(tmp / "wb_out_False")).read()))
        write_s = []
        for _ in range(repeats):  # the writes alone: the same blocks into a fresh layer
            vol = create_volume(str(tmp / "wb_write"), pred.shape, pred.dtype,
                                voxel_size=(8, 8, 8), chunk_size=result_chunk(block),
                                overwrite=True)
            t0 = time.perf_counter()
            for b in plan_blocks(vol.bbox, block):
                vol.write(pred[(slice(None), *b.relative_to((0, 0, 0)))], offset=b.start)
            write_s.append(time.perf_counter() - t0)
    sync, behind = statistics.median(times[False]), statistics.median(times[True])
    print(f"write-behind (latency {latency} s/chunk): sync {times[False]}, "
          f"behind {times[True]}", file=sys.stderr)
    return {"size": size, "block": block, "blocks": result.planned, "repeats": repeats,
            "latency_per_chunk_s": latency,
            "sync_s": round(sync, 3), "write_behind_s": round(behind, 3),
            "sync_over_write_behind": round(sync / behind, 3),
            # the least disturbed run of each: robust to bursts of load from other processes
            "sync_min_s": round(min(times[False]), 3),
            "write_behind_min_s": round(min(times[True]), 3),
            "sync_over_write_behind_min": round(min(times[False]) / min(times[True]), 3),
            "writes_alone_s": round(statistics.median(write_s), 3),
            "writes_share_of_sync": round(statistics.median(write_s) / sync, 3),
            "outputs_equal": same}


def result_chunk(block: int) -> tuple[int, int, int]:
    """pytc-infer's output chunk for ``--block-size block`` (64, or the block when smaller)."""
    c = block if block < 64 or block % 64 else 64
    return (c, c, c)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--model", choices=sorted(MODELS), default="unet-small")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--memory-block", type=int, default=128,
                        help="block size of the peak-memory comparison (voxels)")
    parser.add_argument("--skip", nargs="*", default=[],
                        choices=["overhead", "bf16", "memory", "blocks", "write-behind"])
    parser.add_argument("--wb-size", type=int, default=128,
                        help="volume size of the write-behind comparison (voxels)")
    parser.add_argument("--wb-block", type=int, default=64)
    parser.add_argument("--wb-repeats", type=int, default=5)
    parser.add_argument("--wb-latency", type=float, default=0.3,
                        help="simulated storage latency per chunk write (s) of the second "
                             "write-behind comparison; 0 skips it")
    args = parser.parse_args()
    patch = (args.patch,) * 3
    table = MODELS[args.model]
    report: dict = {"size": args.size, "patch": args.patch, "overlap": args.overlap,
                    "model": args.model, "threads": torch.get_num_threads(),
                    "cpus": os.cpu_count(), "load_avg": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        ckpt = save_model(tmp / "model.ckpt", table, patch)
        raw_uri = write_layer(str(tmp / "raw"), make_raw((args.size,) * 3))
        warm = build_model(table).eval()
        model_cls = type(warm)
        with torch.inference_mode():  # one-time kernel set-up outside every timing
            warm(torch.zeros((1, 1, *patch)))
        if "overhead" not in args.skip:
            walls, fwd, ratio_monai = [], [], []
            for _ in range(args.repeats):
                wall, forward, calls, result = run_pytc(ckpt, raw_uri, str(tmp / "pytc"), patch,
                                                        args.overlap, model_cls)
                walls.append(wall)
                fwd.append(forward)
                t_monai, monai_calls = run_monai(ckpt, raw_uri, str(tmp / "monai"), patch,
                                                 args.overlap)
                ratio_monai.append(t_monai / wall)
                print(f"pytc-infer {wall:.1f} s (forward {forward:.1f} s, {calls} windows), "
                      f"MONAI+write {t_monai:.1f} s ({monai_calls} windows)", file=sys.stderr)
            ours = open_volume(str(tmp / "pytc")).read()
            theirs = open_volume(str(tmp / "monai")).read()
            report["overhead"] = {
                "pytc_infer_s": round(statistics.median(walls), 2),
                "forward_sum_s": round(statistics.median(fwd), 2),
                "overhead_vs_compute": round(statistics.median(
                    [w / f - 1 for w, f in zip(walls, fwd, strict=True)]), 4),
                "plan": result.plan, "pytc_windows": calls, "monai_windows": monai_calls,
                "monai_time_over_pytc_time": round(statistics.median(ratio_monai), 3),
                "max_abs_diff_vs_monai": float(np.abs(ours - theirs).max())}
        if "blocks" not in args.skip:
            # the cost of smaller blocks: windows recomputed where blocks meet (counted from
            # the plan, no model run)
            from pytc_core.bbox import BBox
            from pytc_core.blocks import plan_blocks
            from pytc_infer.tiling import window_grid

            box = BBox.from_shape((args.size,) * 3)
            grid = window_grid(box, patch, args.overlap)
            report["blocks"] = {"grid_windows": grid.count}
            for block in (64, 128, 256):
                if block <= args.size:
                    count = sum(len(grid.windows_in(b)) for b in plan_blocks(box, block))
                    report["blocks"][f"windows_with_{block}_blocks"] = count
        if "bf16" not in args.skip:
            report["bf16"] = bench_bf16(table, patch)
        if "write-behind" not in args.skip:
            report["write_behind"] = bench_write_behind(tmp, table, patch, args.wb_size,
                                                        args.wb_block, args.wb_repeats)
            if args.wb_latency > 0:
                report["write_behind_slow_storage"] = bench_write_behind(
                    tmp, table, patch, args.wb_size, args.wb_block, args.wb_repeats,
                    args.wb_latency)
        if "memory" not in args.skip:
            report["memory"] = bench_memory(tmp, args.memory_block)
    print(json.dumps(report, indent=1))
    emit_rows(report)


def emit_rows(report: dict) -> None:
    """One BENCH line per measured comparison of ``report``."""
    shape = f"{report['size']}³, {report['patch']}³ patches, {report['model']}"
    if "overhead" in report:
        o = report["overhead"]
        emit("infer", f"pytc-infer vs MONAI sliding_window_inference + writing the layer, {shape} "
             f"(max abs difference {o['max_abs_diff_vs_monai']:.1e})",
             ratio_x(o["monai_time_over_pytc_time"], "MONAI time / pytc time; > 1: pytc faster"),
             peer("monai"))
        emit("infer", f"pytc-infer overhead over the sum of the model's forwards, {shape}",
             f"{100 * o['overhead_vs_compute']:.1f} % (run time / forward time - 1; ≤ 10 % wanted)",
             "the model's forward passes")
    if "bf16" in report:
        emit("infer", f"bf16 autocast vs fp32 forward on CPU, one {report['patch']}³ window, "
             f"{report['model']} (max deviation {report['bf16']['bf16_max_abs_deviation']:.1e})",
             ratio_x(report["bf16"]["bf16_speedup"], "fp32 time / bf16 time; > 1: bf16 faster"),
             f"torch {torch.__version__} fp32")
    for key, label in (("write_behind", "local disk"),
                       ("write_behind_slow_storage", "storage +latency per chunk write")):
        if key in report:
            w = report[key]
            emit("infer", f"write-behind vs write-then-compute, {w['size']}³ in {w['blocks']} "
                 f"blocks, {label} ({w['latency_per_chunk_s']} s/chunk)",
                 ratio_x(w["sync_over_write_behind"], "median sync time / median write-behind "
                         "time; > 1: write-behind faster; least disturbed runs: "
                         f"{w['sync_over_write_behind_min']:.2f}×"),
                 "pytc-infer write_behind=False")
    if "memory" in report:
        m = report["memory"]
        emit("infer", f"peak RSS of pytc-infer, 8 blocks vs 1 block of {m['block']}³ "
             f"({m['peak_eight_blocks_MiB']} / {m['peak_one_block_MiB']} MiB; an 8³ bbox: "
             f"{m['peak_tiny_bbox_MiB']} MiB: the peak is mostly start-up, see the docstring)",
             ratio_x(m["ratio"], "8-block peak / 1-block peak; ≈ 1: memory bounded by the "
                     "block"), "pytc-infer on one block")


if __name__ == "__main__":
    main()
