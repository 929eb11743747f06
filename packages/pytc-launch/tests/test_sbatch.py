"""sbatch scripts: the header, and the requeue wrapper's logic run by bash itself.

The wrapper is exercised outside Slurm here (bash, a real child process, real signals;
``scontrol`` is a two-line script that records its arguments and ends the batch shell as
Slurm's requeue does). The same scripts run on a real Slurm in tests/slurm.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytc_core.errors import UserError
from pytc_launch.sbatch import SlurmOptions, render_script


def test_header_has_requeue_signal_and_resources():
    opts = SlurmOptions(partition="gpu", gpus=4, nodes=2, time="24:00:00", mem="64G",
                        account="lab", qos="high", constraint="a100", grace=120,
                        max_parallel=2, extra=["--mail-type=END"])
    text = render_script(opts, ["pytc-train", "--config", "a b.toml"], job_name="j",
                         output="/x/%A_%a.out", description="d", array="0-3%2")
    lines = text.splitlines()
    for expected in ["#SBATCH --requeue", "#SBATCH --open-mode=append",
                     "#SBATCH --signal=B:USR1@120", "#SBATCH --array=0-3%2",
                     "#SBATCH --partition=gpu", "#SBATCH --account=lab", "#SBATCH --qos=high",
                     "#SBATCH --constraint=a100", "#SBATCH --time=24:00:00", "#SBATCH --mem=64G",
                     "#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4",
                     "#SBATCH --gpus-per-node=4", "#SBATCH --mail-type=END",
                     "#SBATCH --output=/x/%A_%a.out"]:
        assert expected in lines
    assert "pytc-train --config 'a b.toml' &" in text
    assert lines[0] == "#!/bin/bash"
    check = subprocess.run(["bash", "-n"], input=text, text=True, capture_output=True)
    assert check.returncode == 0, check.stderr


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"time": "tomorrow"}, "bad time limit 'tomorrow'"),
    ({"nodes": 0}, "nodes must be >= 1"),
    ({"grace": -1}, "grace must be >= 0"),
    ({"max_parallel": 0}, "max_parallel must be >= 1"),
])
def test_bad_options(kwargs, message):
    with pytest.raises(UserError, match=message):
        SlurmOptions(**kwargs)


WORK = """
import signal, sys, time, pathlib
d = pathlib.Path(sys.argv[1])
mode = sys.argv[2]
def on_usr1(*_):
    (d / "saved").write_text("checkpoint")
    sys.exit(0 if mode == "finish" else 3)
signal.signal(signal.SIGUSR1, on_usr1)
(d / "started").write_text("")
if mode == "fail":
    sys.exit(1)
for _ in range(600):
    time.sleep(0.05)
"""

SCONTROL = """#!/bin/sh
echo "$@" >> "{log}"
kill -TERM $PPID
"""


def _run_wrapper(tmp_path: Path, mode: str, restart: int, signal_it: bool, max_restarts: int = 2):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(SCONTROL.format(log=tmp_path / "scontrol.log"))
    (bin_dir / "scontrol").chmod(0o755)
    (tmp_path / "work.py").write_text(WORK)
    script = render_script(SlurmOptions(max_restarts=max_restarts),
                           [sys.executable, str(tmp_path / "work.py"), str(tmp_path), mode],
                           job_name="t", output="o", description="test",
                           attempts_log=str(tmp_path / "attempts.log"))
    (tmp_path / "job.sh").write_text(script)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_ID": "42",
           "SLURM_RESTART_COUNT": str(restart)}
    proc = subprocess.Popen(["bash", str(tmp_path / "job.sh")], env=env,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (tmp_path / "started").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    if signal_it:
        proc.send_signal(signal.SIGUSR1)
    _, err = proc.communicate(timeout=60)
    scontrol = tmp_path / "scontrol.log"
    return (proc.returncode, scontrol.read_text() if scontrol.exists() else "",
            (tmp_path / "attempts.log").read_text(), err)


def test_usr1_is_forwarded_then_the_job_is_requeued(tmp_path):
    rc, scontrol, attempts, err = _run_wrapper(tmp_path, "run", restart=1, signal_it=True)
    assert (tmp_path / "saved").read_text() == "checkpoint"  # the work checkpointed first
    assert scontrol == "requeue 42\n"
    assert rc == -signal.SIGTERM  # ended by the (stand-in) requeue, as Slurm does
    assert "start job=42 array_job=none task=none restart=1" in attempts
    assert "end job=42 task=none rc=3 signalled=1" in attempts
    assert "requeue job=42 task=none restart=2" in attempts
    assert "requeueing job 42 (restart 2 of at most 2)" in err


def test_ordinary_failure_is_not_requeued(tmp_path):
    rc, scontrol, attempts, _ = _run_wrapper(tmp_path, "fail", restart=0, signal_it=False)
    assert rc == 1 and scontrol == ""
    assert "end job=42 task=none rc=1 signalled=0" in attempts and "requeue" not in attempts


def test_max_restarts_bounds_the_loop(tmp_path):
    rc, scontrol, attempts, err = _run_wrapper(tmp_path, "run", restart=2, signal_it=True)
    assert scontrol == "" and rc == 3
    assert "gave-up job=42 task=none restarts=2" in attempts
    assert "not requeued: 2 restarts reached --max-restarts 2" in err


def test_work_that_finishes_despite_the_signal_is_not_requeued(tmp_path):
    rc, scontrol, attempts, _ = _run_wrapper(tmp_path, "finish", restart=0, signal_it=True)
    assert rc == 0 and scontrol == ""
    assert "end job=42 task=none rc=0 signalled=1" in attempts and "requeue" not in attempts
