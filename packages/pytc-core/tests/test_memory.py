"""The memory budget: node, the process's own cgroup (v2 and v1) and its parents, Slurm."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pytc_core.memory import MemoryBudget, cgroup_limits, memory_budget, slurm_limit

GiB = 2**30
MiB = 2**20


def fake_proc(tmp_path: Path, cgroup: str, available: int = 1024 * GiB, rss: int = 0) -> Path:
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "meminfo").write_text(f"MemTotal: {2 * available // 1024} kB\n"
                                  f"MemAvailable: {available // 1024} kB\n")
    (proc / "self" / "cgroup").write_text(cgroup)
    (proc / "self" / "status").write_text(f"Name: python\nVmRSS: {rss // 1024} kB\n")
    return proc


def write(folder: Path, **files: object) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, value in files.items():
        (folder / name.replace("_", ".", 1)).write_text(f"{value}\n")


def test_v2_the_jobs_own_cgroup_and_the_smallest_limit_up_the_tree(tmp_path):
    """A Slurm job's --mem=32G lives in its own cgroup on a 1 TB node: the root says nothing."""
    proc = fake_proc(tmp_path, "0::/system.slice/slurmstepd.scope/job_42/step_0/user/task_0\n")
    root = tmp_path / "cgroup"
    write(root, memory_current=5 * GiB)  # the root cgroup has no memory.max
    job = root / "system.slice/slurmstepd.scope/job_42"
    write(job, memory_max=32 * GiB, memory_current=2 * GiB)
    write(job / "step_0", memory_max="max", memory_current=GiB)
    write(job / "step_0/user/task_0", memory_max="max", memory_current=GiB)
    budget = memory_budget(proc, root, env={})
    assert budget.available == 30 * GiB
    assert budget.source == ("cgroup /system.slice/slurmstepd.scope/job_42 "
                             "(memory.max 32.0 GiB, 2.0 GiB used)")
    # a tighter limit further down wins
    write(job / "step_0", memory_max=8 * GiB, memory_current=GiB)
    assert memory_budget(proc, root, env={}) == MemoryBudget(
        7 * GiB, "cgroup /system.slice/slurmstepd.scope/job_42/step_0 "
        "(memory.max 8.0 GiB, 1.0 GiB used)")
    assert len(cgroup_limits(proc, root)) == 2


def test_v1_memory_controller_path(tmp_path):
    proc = fake_proc(tmp_path, "12:pids:/slurm/uid_1000/job_7\n"
                               "4:memory:/slurm/uid_1000/job_7/step_batch\n0::/\n")
    root = tmp_path / "cgroup"
    mem = root / "memory"
    write(mem, memory_limit_in_bytes=9223372036854771712, memory_usage_in_bytes=50 * GiB)
    write(mem / "slurm/uid_1000/job_7", memory_limit_in_bytes=16 * GiB,
          memory_usage_in_bytes=4 * GiB)
    write(mem / "slurm/uid_1000/job_7/step_batch", memory_limit_in_bytes=9223372036854771712,
          memory_usage_in_bytes=4 * GiB)
    budget = memory_budget(proc, root, env={})
    assert budget.available == 12 * GiB
    assert budget.source.startswith("cgroup /slurm/uid_1000/job_7 (memory.limit_in_bytes 16.0")


def test_no_limit_anywhere_is_the_nodes_available_memory(tmp_path):
    proc = fake_proc(tmp_path, "0::/user.slice\n", available=100 * GiB)
    write(tmp_path / "cgroup" / "user.slice", memory_max="max", memory_current=GiB)
    assert memory_budget(proc, tmp_path / "cgroup", env={}) == MemoryBudget(
        100 * GiB, "MemAvailable of the node")


def test_slurm_variables(tmp_path):
    assert slurm_limit({}) is None
    assert slurm_limit({"SLURM_MEM_PER_NODE": "0"}) is None  # 0: the whole node
    assert slurm_limit({"SLURM_MEM_PER_NODE": "32768"}) == (32 * GiB,
                                                            "SLURM_MEM_PER_NODE=32768 MiB")
    assert slurm_limit({"SLURM_MEM_PER_CPU": "4000", "SLURM_CPUS_ON_NODE": "3"}) == (
        12000 * MiB, "SLURM_MEM_PER_CPU=4000 MiB x 3 CPUs")
    # without SLURM_CPUS_ON_NODE: the CPUs this process may run on
    import os

    n = len(os.sched_getaffinity(0))
    assert slurm_limit({"SLURM_MEM_PER_CPU": "1000"})[0] == 1000 * MiB * n
    # no cgroup enforcement (cgroup paths absent): Slurm's figure less this process's RSS
    proc = fake_proc(tmp_path, "0::/\n", available=1024 * GiB, rss=GiB)
    budget = memory_budget(proc, tmp_path / "nocgroup",
                           env={"SLURM_MEM_PER_NODE": str(32 * 1024)})
    assert budget == MemoryBudget(31 * GiB, "SLURM_MEM_PER_NODE=32768 MiB, 1.0 GiB used by "
                                            "this process")
    assert budget.line() == ("31.0 GiB available (SLURM_MEM_PER_NODE=32768 MiB, 1.0 GiB used by "
                             "this process)")


def test_cube_edge_is_the_largest_fitting_multiple():
    from pytc_core.memory import cube_edge

    assert cube_edge(10**12, 24) == 256                 # capped
    assert cube_edge(192**3 * 24, 24) == 192            # exactly fits
    assert cube_edge(192**3 * 24 - 1, 24) == 128        # one byte short
    assert cube_edge(0, 24) == 64                       # the smallest plan
    assert cube_edge(10**12, 1, largest=100, multiple=32) == 96


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="Linux /proc")
def test_peak_rss_of_a_child_is_its_own_not_its_big_parents():
    """A child of a process that touched 400 MB reports its own peak (ru_maxrss would carry
    the parent's across exec, as it did for pytc-eval's memory test on CI)."""
    import subprocess
    import sys

    from pytc_core.memory import peak_rss_bytes

    big = np.ones(400 * 2**20, dtype=np.uint8)  # touched: resident in this process
    child = subprocess.run([sys.executable, "-c", "import resource\n"
                            "from pytc_core.memory import peak_rss_bytes\n"
                            "print(peak_rss_bytes(), resource.getrusage(0).ru_maxrss * 1024)"],
                           capture_output=True, text=True, check=True)
    own, kept = map(int, child.stdout.split())
    assert peak_rss_bytes() > big.nbytes
    assert own < 200 * 2**20, own  # the interpreter and pytc_core: tens of MB
    del big
    print(f"child's own peak {own / 2**20:.0f} MiB; its ru_maxrss {kept / 2**20:.0f} MiB")
