"""Peak training memory of MedNeXt-S with and without gradient checkpointing.

One training step (forward, loss, backward) at batch 2 and 64^3 voxels, 1 -> 3 channels.
CPU: peak resident memory (VmHWM, reset through /proc/self/clear_refs) during the second
step above the resident memory just before it; each configuration runs in a fresh
subprocess with glibc's mmap threshold fixed at 128 KiB and the heap trimmed after the
warm-up step, so freed tensors go back to the OS and resident memory tracks live tensors
(the warm-up step loads code pages and oneDNN kernels, which are not training memory);
configurations alternate, medians over repetitions.
GPU (when present): torch.cuda.max_memory_allocated above the allocation before the step,
in this process. Also prints the median step time (the recomputation's cost); the first
(warm-up) step of every run is timed separately.

    uv run python bench/bench_grad_checkpointing.py [--reps 3] [--size 64] [--batch 2]

Measured 2026-11-23 (2 shared CPU cores, torch 2.15, no GPU), medians of 3:
plain 3893 MiB, 52.7 s/step; outside_block 1742 MiB, 82.4 s/step; memory ratio 0.45,
time ratio 1.56 (step times noisy: the machine was shared; peaks identical in every run).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from table import emit, ratio_x

STYLES = {"plain": None, "outside_block": "outside_block"}


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(field)


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _model_and_input(style: str | None, size: int, batch: int, device: str):
    import torch

    from pytc_core.models import build_model

    torch.manual_seed(0)
    model = build_model({"architecture": "mednext", "mednext_size": "S", "out_channels": 3,
                         "mednext_checkpoint_style": style}).to(device).train()
    x = torch.rand(batch, 1, size, size, size, device=device)
    return model, x


def _step(model, x) -> float:
    import torch

    t0 = time.perf_counter()
    model.zero_grad(set_to_none=True)
    loss = model(x).square().mean()
    loss.backward()
    if x.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def worker(style_name: str, size: int, batch: int) -> dict:
    """One fresh process: a warm-up step, then peak RSS and time of a second step."""
    import ctypes
    import gc

    model, x = _model_and_input(STYLES[style_name], size, batch, "cpu")
    first = _step(model, x)
    model.zero_grad(set_to_none=True)
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    before = _rss_kib("VmRSS")
    if not _reset_peak():
        raise SystemExit("cannot reset VmHWM (/proc/self/clear_refs not writable)")
    second = _step(model, x)
    peak = _rss_kib("VmHWM")
    return {"peak_mib": (peak - before) / 1024, "first_s": first, "step_s": second}


def cpu(reps: int, size: int, batch: int) -> None:
    results: dict[str, list[dict]] = {name: [] for name in STYLES}
    for rep in range(reps):
        for name in STYLES:
            env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}
            out = subprocess.run([sys.executable, __file__, "--worker", name, "--size", str(size),
                                  "--batch", str(batch)], capture_output=True, text=True,
                                 check=True, env=env)
            results[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
            r = results[name][-1]
            print(f"  rep {rep} {name:<14} peak {r['peak_mib']:8.0f} MiB  step "
                  f"{r['step_s']:6.2f} s  (warm-up step {r['first_s']:6.2f} s)", flush=True)
    med = {name: {k: statistics.median(r[k] for r in rs) for k in ("peak_mib", "first_s", "step_s")}
           for name, rs in results.items()}
    print(f"\nMedNeXt-S, batch {batch}, {size}^3, CPU, medians of {reps} fresh processes each:")
    for name, m in med.items():
        print(f"  {name:<14} peak training memory {m['peak_mib']:8.0f} MiB   step "
              f"{m['step_s']:6.2f} s   (warm-up step {m['first_s']:6.2f} s)")
    mem = med["outside_block"]["peak_mib"] / med["plain"]["peak_mib"]
    slow = med["outside_block"]["step_s"] / med["plain"]["step_s"]
    print(f"  memory ratio checkpointed / plain = {mem:.2f}  (target <= 0.60)")
    print(f"  time ratio   checkpointed / plain = {slow:.2f}")
    emit_row("CPU", size, batch, mem, slow)


def emit_row(device: str, size: int, batch: int, mem: float, slow: float) -> None:
    emit("models", f"MedNeXt-S training memory with / without gradient checkpointing "
         f"(outside_block, {size}³, batch {batch}, {device})",
         ratio_x(mem, f"peak memory ratio; < 1: checkpointing saves memory; ≤ 0.60 wanted; "
                 f"time ratio {slow:.2f}"), "MedNeXt-S without checkpointing")


def gpu(reps: int, size: int, batch: int) -> None:
    import torch

    print(f"\nMedNeXt-S, batch {batch}, {size}^3, {torch.cuda.get_device_name()}:")
    med = {}
    for name, style in STYLES.items():
        model, x = _model_and_input(style, size, batch, "cuda")
        _step(model, x)  # warm-up: cuDNN autotuning, allocator
        peaks, times = [], []
        for _ in range(reps):
            model.zero_grad(set_to_none=True)
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            times.append(_step(model, x))
            peaks.append((torch.cuda.max_memory_allocated() - base) / 2**20)
        med[name] = (statistics.median(peaks), statistics.median(times))
        print(f"  {name:<14} peak {med[name][0]:8.0f} MiB   step {med[name][1] * 1e3:7.1f} ms")
        del model, x
        torch.cuda.empty_cache()
    print(f"  memory ratio checkpointed / plain = {med['outside_block'][0] / med['plain'][0]:.2f}")
    print(f"  time ratio   checkpointed / plain = {med['outside_block'][1] / med['plain'][1]:.2f}")
    emit_row(torch.cuda.get_device_name(), size, batch, med["outside_block"][0] / med["plain"][0],
             med["outside_block"][1] / med["plain"][1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--worker", choices=list(STYLES))
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.size, args.batch)))
        return
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    cpu(args.reps, args.size, args.batch)
    if torch.cuda.is_available():
        gpu(args.reps, args.size, args.batch)


if __name__ == "__main__":
    main()
