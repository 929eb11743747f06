"""The host memory this process may use now, and where that number comes from.

A Slurm job's memory limit lives in the job's own cgroup (``--mem=32G`` on a 1 TB node), not in
the root cgroup or in ``/proc/meminfo``: exceed it and slurmstepd kills the job. The budget is
the smallest of

- ``MemAvailable`` of ``/proc/meminfo`` (the node),
- for the process's own cgroup and each of its parents (from ``/proc/self/cgroup``; cgroup v2
  ``memory.max`` - ``memory.current``, v1 ``memory.limit_in_bytes`` - ``memory.usage_in_bytes``
  under the ``memory`` controller's mount),
- Slurm's own figure when set: ``SLURM_MEM_PER_NODE`` (MiB), else ``SLURM_MEM_PER_CPU`` (MiB)
  x the job's CPUs on this node (``SLURM_CPUS_ON_NODE``, else the CPUs this process may run
  on), less this process's resident memory (when the cgroup says nothing finer).

Used by pytc-infer's block plan, pytc-train's machine detection, pytc-eval's block size and
pytc-decode's whole-volume check (one budget for all stages). :func:`peak_rss_bytes` is what
the memory tests and benchmarks measure a run with.
Standard library only; the roots are parameters so tests can hand in a fake tree.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MemoryBudget", "cgroup_limits", "cube_edge", "format_bytes", "memory_budget",
           "peak_rss_bytes", "slurm_limit"]

#: limits at or above this are "no limit" (cgroup v1 writes 2^63 rounded to a page)
_UNLIMITED = 2**60
_MIB = 2**20


def format_bytes(n: float) -> str:
    """Bytes as a short human string (binary units)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


@dataclass(frozen=True)
class MemoryBudget:
    """Bytes of host memory this process may still use (``available``) and what set them
    (``source``, e.g. ``"cgroup /slurm/uid_1000/job_42 (memory.max 32.0 GiB, 1.2 GiB used)"``).
    """

    available: int
    source: str

    def line(self) -> str:
        """One human line: ``"31.0 GiB available (cgroup ...)"``."""
        return f"{format_bytes(self.available)} available ({self.source})"


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _own_cgroups(proc: Path) -> tuple[str | None, str | None]:
    """The process's cgroup v2 path and v1 ``memory`` controller path (either may be None)."""
    v2 = v1 = None
    try:
        lines = (proc / "self" / "cgroup").read_text().splitlines()
    except OSError:
        return None, None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hid, controllers, path = parts
        if hid == "0" and controllers == "":
            v2 = path
        elif "memory" in controllers.split(","):
            v1 = path
    return v2, v1


def _walk_up(root: Path, path: str) -> list[tuple[str, Path]]:
    """``(cgroup path, folder)`` from ``root/path`` up to ``root`` (folders that exist)."""
    rel = path.strip("/")
    out = []
    while True:
        folder = root / rel if rel else root
        if folder.is_dir():
            out.append(("/" + rel, folder))
        if not rel:
            return out
        rel = rel.rpartition("/")[0]


def cgroup_limits(proc: str | os.PathLike[str] = "/proc",
                  cgroup_root: str | os.PathLike[str] = "/sys/fs/cgroup") -> list[MemoryBudget]:
    """A :class:`MemoryBudget` (limit - usage) for each cgroup with a memory limit from the
    process's own cgroup up to the root, v2 and v1 (the ``memory`` controller's mount)."""
    root = Path(cgroup_root)
    v2, v1 = _own_cgroups(Path(proc))
    found: list[MemoryBudget] = []
    checks = []
    if v2 is not None:
        checks.append((root, v2, "memory.max", "memory.current"))
    if v1 is not None:
        checks.append((root / "memory", v1, "memory.limit_in_bytes", "memory.usage_in_bytes"))
    if v2 is None and v1 is None:  # no /proc/self/cgroup: the roots as they are
        checks = [(root, "/", "memory.max", "memory.current"),
                  (root / "memory", "/", "memory.limit_in_bytes", "memory.usage_in_bytes")]
    for base, path, limit_name, usage_name in checks:
        for name, folder in _walk_up(base, path):
            limit = _read_int(folder / limit_name)
            if limit is None or limit >= _UNLIMITED:
                continue
            used = _read_int(folder / usage_name) or 0
            found.append(MemoryBudget(max(limit - used, 0),
                                      f"cgroup {name} ({limit_name} {format_bytes(limit)}, "
                                      f"{format_bytes(used)} used)"))
    return found


def _cpus(env: Mapping[str, str]) -> int:
    try:
        return int(env["SLURM_CPUS_ON_NODE"])
    except (KeyError, ValueError):
        pass
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def slurm_limit(env: Mapping[str, str] | None = None) -> tuple[int, str] | None:
    """Slurm's memory limit for this job on this node, in bytes, and its source text; None
    when the job sets none (``SLURM_MEM_PER_NODE=0`` means the whole node)."""
    env = os.environ if env is None else env
    try:
        per_node = int(env.get("SLURM_MEM_PER_NODE", "0"))
    except ValueError:
        per_node = 0
    if per_node > 0:
        return per_node * _MIB, f"SLURM_MEM_PER_NODE={per_node} MiB"
    try:
        per_cpu = int(env.get("SLURM_MEM_PER_CPU", "0"))
    except ValueError:
        per_cpu = 0
    if per_cpu > 0:
        cpus = _cpus(env)
        return per_cpu * cpus * _MIB, f"SLURM_MEM_PER_CPU={per_cpu} MiB x {cpus} CPUs"
    return None


def _status_bytes(proc: Path, field: str) -> int:
    """A ``kB`` field of ``/proc/self/status`` in bytes, 0 when unknown."""
    try:
        for line in (proc / "self" / "status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _rss(proc: Path) -> int:
    """Resident bytes of this process (VmRSS), 0 when unknown."""
    return _status_bytes(proc, "VmRSS")


def peak_rss_bytes(proc: str | os.PathLike[str] = "/proc") -> int:
    """This process's peak resident memory in bytes, its own address space only.

    ``VmHWM`` on Linux: ``ru_maxrss`` is kept across ``exec``, so a process started by a big
    parent (a test runner, a benchmark) reports the parent's peak there. ``ru_maxrss`` where
    ``/proc`` is missing."""
    peak = _status_bytes(Path(proc), "VmHWM")
    if peak:
        return peak
    import resource  # POSIX only

    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def memory_budget(proc: str | os.PathLike[str] = "/proc",
                  cgroup_root: str | os.PathLike[str] = "/sys/fs/cgroup",
                  env: Mapping[str, str] | None = None) -> MemoryBudget:
    """The smallest of the node's available memory, every cgroup limit up the process's tree
    and Slurm's limit (see the module docstring)."""
    proc = Path(proc)
    candidates: list[MemoryBudget] = []
    try:
        for line in (proc / "meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                candidates.append(MemoryBudget(int(line.split()[1]) * 1024,
                                               "MemAvailable of the node"))
    except (OSError, ValueError, IndexError):
        pass
    if not candidates:
        pages = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        candidates.append(MemoryBudget(int(pages), "free pages of the node"))
    candidates += cgroup_limits(proc, cgroup_root)
    slurm = slurm_limit(env)
    if slurm is not None:
        limit, text = slurm
        used = _rss(proc)
        candidates.append(MemoryBudget(max(limit - used, 0),
                                       f"{text}, {format_bytes(used)} used by this process"))
    return min(candidates, key=lambda b: b.available)


def cube_edge(budget: int, bytes_per_voxel: float, largest: int = 256, multiple: int = 64) -> int:
    """The edge (voxels) of the largest cube block, a multiple of ``multiple`` and at most
    ``largest``, whose ``edge³ × bytes_per_voxel`` fits in ``budget`` bytes; ``multiple`` when
    not even that fits (the smallest block the plans use)."""
    edge = largest - largest % multiple
    while edge > multiple and edge ** 3 * bytes_per_voxel > budget:
        edge -= multiple
    return max(edge, multiple)
