"""auto_configure: each 'auto' setting resolved from the machine, given settings kept."""

import pytest

from pytc_train.autoconfig import Machine, auto_configure, cpu_has_bf16

CPU2 = Machine(cpus=2, memory_gib=24.0)
A100 = Machine(cpus=16, memory_gib=128.0, gpus=(("A100", (8, 0), 80.0),) * 2)
V100 = Machine(cpus=16, memory_gib=128.0, gpus=(("V100", (7, 0), 32.0),))


def choose(machine, **given):
    options = dict(accelerator="auto", devices=0, precision="auto", batch_size=None,
                   num_workers=None, patch=(32, 64, 64), machine=machine)
    options.update(given)
    return auto_configure(**options)


def test_cpu_machine_runs_float32_in_one_process():
    c = choose(CPU2)
    assert (c.accelerator, c.devices, c.precision, c.batch_size) == ("cpu", 1, "32", 2)
    assert (c.num_workers, c.threads) == (1, 2)


def test_cpu_with_native_bf16_trains_bf16_mixed():
    c = choose(Machine(cpus=2, memory_gib=24.0, cpu_bf16=True))
    assert (c.accelerator, c.precision) == ("cpu", "bf16-mixed")
    assert "native bfloat16" in c.reasons["precision"]
    # a GPU run follows the GPU, not the host CPU
    assert choose(Machine(cpus=16, memory_gib=128.0, gpus=V100.gpus, cpu_bf16=True)).precision \
        == "16-mixed"


def test_cpu_bf16_is_read_from_the_cpuinfo_flags(tmp_path):
    def cpuinfo(flags):
        path = tmp_path / "cpuinfo"
        path.write_text(f"processor\t: 0\nmodel name\t: x\nflags\t\t: {flags}\n\n")
        return str(path)

    assert cpu_has_bf16(cpuinfo("fpu avx2 avx512f avx512_bf16 fma"))
    assert cpu_has_bf16(cpuinfo("fpu avx2 amx_bf16 amx_tile"))
    assert not cpu_has_bf16(cpuinfo("fpu avx2 avx512f avx512_vnni"))
    assert not cpu_has_bf16(str(tmp_path / "missing"))  # not Linux: no cpuinfo


def test_gpu_precision_follows_compute_capability():
    assert choose(A100).precision == "bf16-mixed"
    assert choose(A100).devices == 2
    assert choose(V100).precision == "16-mixed"


def test_given_settings_are_kept_and_unknown_precision_refused():
    c = choose(A100, precision="32", devices=1, batch_size=8, num_workers=3)
    assert (c.precision, c.devices, c.batch_size, c.num_workers) == ("32", 1, 8, 3)
    assert c.reasons["precision"] == "set"
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        choose(CPU2, precision="fp8")


@pytest.mark.parametrize("load", [0.0, 0.4, 1.0, 1.6, 2.0, 7.5])
def test_thread_count_does_not_follow_the_load(load):
    """Same command, same machine, same figures: the thread count (which the sums of a
    weight gradient depend on) is the cores per process whatever the load."""
    c = choose(Machine(cpus=2, memory_gib=24.0, load=load))
    assert c.threads == 2
    assert c.reasons["threads"].startswith("2 core(s) per process, whatever the load")
    assert ("--threads 1 is faster" in c.reasons["threads"]) == (load >= 0.5)
    assert choose(Machine(cpus=8, memory_gib=24.0, load=load), accelerator="cpu",
                  devices=2).threads == 4
    assert choose(Machine(cpus=2, memory_gib=24.0, load=load), threads=1).threads == 1


def test_busy_cores_sees_a_spinning_process():
    import multiprocessing as mp
    import os

    from pytc_train.autoconfig import busy_cores

    idle_estimate = busy_cores(0.3)
    assert idle_estimate is not None and 0.0 <= idle_estimate <= (os.cpu_count() or 1) + 1e-6
    stop = mp.Event()
    spinner = mp.Process(target=_spin, args=(stop,))
    spinner.start()
    try:
        assert busy_cores(0.5) >= 0.7  # one core spinning shows, whatever else runs
    finally:
        stop.set()
        spinner.join()


def _spin(stop) -> None:
    while not stop.is_set():
        pass


def test_the_machine_sees_the_jobs_memory_limit(monkeypatch):
    """A Slurm job's --mem (1 GiB here), not the node's memory, is what training may use."""
    from pytc_train.autoconfig import detect_machine

    monkeypatch.setenv("SLURM_MEM_PER_NODE", "1024")
    machine = detect_machine()
    assert machine.memory_gib < 1.0
    assert machine.memory_source.startswith("SLURM_MEM_PER_NODE=1024 MiB") or \
        machine.memory_source.startswith("cgroup ")


def test_rank_zero_choice_is_made_once_and_handed_to_the_other_ranks(tmp_path):
    """Rank 0 runs the (GPU) trial; a rank Lightning starts as a child inherits the value
    through the environment, a rank srun started beside it reads rank 0's file; none runs
    its own trial."""
    from pytc_train.autoconfig import rank_zero_choice

    calls = []

    def trial():
        calls.append(1)
        return 12

    parent: dict[str, str] = {}
    assert rank_zero_choice("batch_size", trial, rank=0, folder=tmp_path, environ=parent) == 12
    assert parent == {"PYTC_TRAIN_AUTO_BATCH_SIZE": "12"} and not list(tmp_path.iterdir())
    child = dict(parent)
    assert rank_zero_choice("batch_size", trial, rank=1, folder=tmp_path, environ=child) == 12
    assert len(calls) == 1
    # srun: every rank its own process, the job id names the attempt's file
    slurm0 = {"SLURM_JOB_ID": "77", "SLURM_RESTART_COUNT": "2"}
    slurm1 = dict(slurm0)
    assert rank_zero_choice("batch_size", lambda: 6, rank=0, folder=tmp_path,
                            environ=slurm0) == 6
    assert (tmp_path / ".pytc_auto_batch_size.77.2").read_text() == "6"
    assert rank_zero_choice("batch_size", trial, rank=1, folder=tmp_path,
                            environ=slurm1) == 6
    assert len(calls) == 1
    with pytest.raises(TimeoutError, match="rank 1 waited 0 s for rank 0's batch_size"):
        rank_zero_choice("batch_size", trial, rank=1, folder=tmp_path,
                         environ={"SLURM_JOB_ID": "78"}, timeout=0.0, poll=0.0)
