"""Auto-configuration: pick accelerator, devices, precision, batch size and workers from the
machine, unless the config sets them. Every choice is returned with its reason (printed at
the start of a run).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

RunPrecision = Literal["32", "16-mixed", "bf16-mixed"]  # what Lightning's Trainer is given

__all__ = ["AutoChoices", "Machine", "auto_configure", "cpu_has_bf16", "detect_machine",
           "gpu_batch_trial", "rank_zero_choice"]

log = logging.getLogger("pytc.train")


@dataclass(frozen=True)
class Machine:
    """What this process can use: CPU cores, host memory available now (GiB, the job's own
    cgroup and Slurm limits included, see :mod:`pytc_core.memory`), GPUs (name, compute
    capability, GiB)."""

    cpus: int
    memory_gib: float
    gpus: tuple[tuple[str, tuple[int, int], float], ...] = ()
    #: 1-minute load average (runnable processes) when this process started
    load: float = 0.0
    #: the CPU has native bfloat16 arithmetic (x86 avx512_bf16 or amx_bf16)
    cpu_bf16: bool = False
    #: where ``memory_gib`` comes from (the node, a cgroup, a Slurm variable)
    memory_source: str = ""


def detect_machine() -> Machine:
    """CPU cores available to this process, the host memory budget (``pytc_core.memory``:
    the node, the process's own cgroups, Slurm's limit), visible CUDA devices."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS
        cpus = os.cpu_count() or 1
    from pytc_core.memory import memory_budget

    budget = memory_budget()
    gpus = []
    import torch

    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            gpus.append((p.name, (p.major, p.minor), p.total_memory / 2**30))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    busy = busy_cores()
    if busy is not None:  # the 1-minute average lags: a machine idle now counts as idle
        load = min(load, busy)
    return Machine(cpus, budget.available / 2**30, tuple(gpus), load, cpu_has_bf16(),
                   budget.source)


#: /proc/cpuinfo flags of native bfloat16 arithmetic, which oneDNN's bf16 kernels use
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether the CPU does bfloat16 arithmetic natively (Linux x86 flags; False elsewhere).
    There, a bf16-mixed training step of the small MedNeXt took 1.0 s against 1.35 s in
    float32 (2 cores, AMD EPYC with avx512_bf16); without it, bf16 is emulated and slower."""
    try:
        with open(cpuinfo) as fh:
            for line in fh:
                if line.startswith("flags"):
                    return any(flag in line.split() for flag in BF16_FLAGS)
    except OSError:
        pass
    return False


def _cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs from /proc/stat, or None where there is none."""
    try:
        with open("/proc/stat") as fh:
            fields = [int(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def busy_cores(interval: float = 0.25) -> float | None:
    """How many cores other work keeps busy now, sampled over ``interval`` seconds (Linux;
    None elsewhere)."""
    import time

    first = _cpu_times()
    if first is None:
        return None
    time.sleep(interval)
    second = _cpu_times()
    if second is None or second[1] <= first[1]:
        return None
    n = os.cpu_count() or 1
    return n * (second[0] - first[0]) / (second[1] - first[1])


@dataclass(frozen=True)
class AutoChoices:
    """Resolved run settings and why each was chosen."""

    accelerator: str
    devices: int
    precision: RunPrecision
    batch_size: int
    num_workers: int
    threads: int = 1
    reasons: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        return "; ".join(f"{k} {getattr(self, k)} ({self.reasons[k]})" for k in
                         ("accelerator", "devices", "precision", "batch_size", "num_workers",
                          "threads"))


def cpu_batch_size(patch: Sequence[int]) -> int:
    """The CPU rule: 2 patches of 32x64x64 voxels, scaled inversely with patch volume (1-8)."""
    voxels = patch[0] * patch[1] * patch[2]
    return int(min(8, max(1, round(2 * 32 * 64 * 64 / voxels))))


def gpu_batch_trial(step: Callable[[int], None], *, start: int = 1, limit: int = 64,
                    margin: float = 0.8) -> int:
    """Largest batch whose forward + backward ``step(batch)`` fits, doubling from ``start``;
    the result is scaled by ``margin`` (headroom for fragmentation and validation)."""
    import torch

    best, batch = 0, start
    while batch <= limit:
        try:
            step(batch)
            best = batch
            batch *= 2
        except torch.OutOfMemoryError:
            break
        finally:
            torch.cuda.empty_cache()
    return max(1, int(best * margin))


def rank_zero_choice(name: str, compute: Callable[[], int], *, rank: int, folder: Path,
                     environ: dict[str, str] | None = None, timeout: float = 600.0,
                     poll: float = 0.5) -> int:
    """One machine choice (e.g. the GPU batch-size trial) made by rank 0 alone, on its own
    device, and handed to every other rank, so no rank touches another rank's GPU.

    Rank 0 computes it and publishes it in the environment (``PYTC_TRAIN_AUTO_<NAME>``: the
    ranks Lightning starts as child processes inherit it) and, under Slurm (every rank started
    by srun at once), in ``folder/.pytc_auto_<name>.<job id>.<restart count>``. Another rank
    takes the environment's value, else waits for that file; without either it computes its
    own (a single process).
    """
    env = os.environ if environ is None else environ
    key = f"PYTC_TRAIN_AUTO_{name.upper()}"
    job = env.get("SLURM_JOB_ID")
    path = (folder / f".pytc_auto_{name}.{job}.{env.get('SLURM_RESTART_COUNT', '0')}"
            if job else None)
    if rank == 0:
        value = int(compute())
        env[key] = str(value)
        if path is not None:
            from pytc_core.files import write_atomic

            write_atomic(path, str(value).encode())
        return value
    if env.get(key):
        return int(env[key])
    if path is None:
        return int(compute())
    import time

    deadline = time.monotonic() + timeout
    while not path.is_file():
        if time.monotonic() > deadline:
            raise TimeoutError(f"rank {rank} waited {timeout:.0f} s for rank 0's {name} in "
                               f"{path}")
        time.sleep(poll)
    return int(path.read_text())


def auto_configure(*, accelerator: str, devices: int, precision: str, batch_size: int | None,
                   num_workers: int | None, patch: Sequence[int], machine: Machine,
                   gpu_trial: Callable[[], int] | None = None, threads: int = 0) -> AutoChoices:
    """Fill every 'auto' setting (``accelerator`` "auto", ``devices`` 0, ``precision``
    "auto", ``batch_size`` / ``num_workers`` None) for ``machine``; keep the given ones."""
    reasons: dict[str, str] = {}
    if accelerator == "auto":
        accelerator = "gpu" if machine.gpus else "cpu"
        reasons["accelerator"] = f"{len(machine.gpus)} GPU(s) found" if machine.gpus else "no GPU found"
    else:
        reasons["accelerator"] = "set"
    if devices == 0:
        devices = len(machine.gpus) if accelerator == "gpu" else 1
        reasons["devices"] = "all GPUs" if accelerator == "gpu" else "one process on CPU"
    else:
        reasons["devices"] = "set"
    chosen: RunPrecision
    if precision == "auto":
        if accelerator == "gpu" and machine.gpus:
            ampere = min(cc for _, cc, _ in machine.gpus) >= (8, 0)
            chosen = "bf16-mixed" if ampere else "16-mixed"
            reasons["precision"] = "Ampere or newer GPU" if ampere else "pre-Ampere GPU"
        elif machine.cpu_bf16:
            chosen = "bf16-mixed"
            reasons["precision"] = "CPU with native bfloat16 (avx512_bf16/amx_bf16)"
        else:
            chosen = "32"
            reasons["precision"] = "CPU without native bfloat16: float32 is the fast path"
    elif precision in ("32", "16-mixed", "bf16-mixed"):
        chosen = precision  # type: ignore[assignment]  # narrowed by the membership test
        reasons["precision"] = "set"
    else:
        raise ValueError(f"unknown precision {precision!r} (auto, 32, 16-mixed or bf16-mixed)")
    if batch_size is None:
        if accelerator == "gpu" and gpu_trial is not None:
            batch_size = gpu_trial()
            reasons["batch_size"] = "forward+backward trial on the GPU, 80% of the largest fit"
        else:
            batch_size = cpu_batch_size(patch)
            reasons["batch_size"] = "CPU rule: 2 at 32x64x64, scaled by patch volume"
    else:
        reasons["batch_size"] = "set"
    if num_workers is None:
        per_process = max(1, machine.cpus // max(1, devices))
        num_workers = min(4, max(1, per_process - 1)) if accelerator == "gpu" else min(4, max(1, per_process // 2))
        reasons["num_workers"] = f"{machine.cpus} cores for {devices} process(es)"
    else:
        reasons["num_workers"] = "set"
    if threads <= 0:
        # the cores this process may use, never fewer on a busy machine: a weight gradient's
        # sums depend on the thread count (float32 and bf16 alike), so a thread count that
        # followed the load would give other weights, and other figures, for the same command
        threads = max(1, machine.cpus // max(1, devices))
        reasons["threads"] = f"{threads} core(s) per process, whatever the load"
        if machine.load >= 0.5:
            reasons["threads"] += (f"; load {machine.load:.1f} on {machine.cpus} cores now: "
                                   "steps are slower (--threads 1 is faster on a busy machine, "
                                   "with other figures)")
    else:
        reasons["threads"] = "set"
    return AutoChoices(accelerator, devices, chosen, batch_size, num_workers, threads, reasons)
