"""Issue 23 §2/§3 in the runs layer: the lease records the Slurm job and knows when that job
is over; it lasts until the last share leaves; a share that joins never starts the run afresh;
SIGUSR1 in a claimed run is a requeue (exit 75) that keeps the finished work."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pytc_core import lease as lease_module
from pytc_core.cli import run_entry_point
from pytc_core.errors import UserError
from pytc_core.lease import (
    LeaseHolder,
    acquire_lease,
    members_dir,
    parse_scontrol_job,
    read_lease,
    slurm_job_gone,
    slurm_job_state,
)
from pytc_core.output_run import RunRecord, _write_record, claim_output, read_run_record

# captured from Slurm 23.02 (the local test cluster): `scontrol show job -o 4242`
SCONTROL_RUNNING = (
    "JobId=4242 ArrayJobId=4240 ArrayTaskId=2 JobName=pytc-decode UserId=pytc(1000) "
    "GroupId=pytc(1000) MCS_label=N/A Priority=1 Nice=0 Account=(null) QOS=normal "
    "JobState=RUNNING Reason=None Dependency=(null) Requeue=1 Restarts=1 BatchFlag=1 "
    "Reboot=0 ExitCode=0:0 RunTime=00:00:07 TimeLimit=00:02:00 NodeList=node2\n")
SCONTROL_COMPLETED = SCONTROL_RUNNING.replace("JobState=RUNNING", "JobState=COMPLETED")
SCONTROL_PENDING = SCONTROL_RUNNING.replace("JobState=RUNNING Reason=None",
                                            "JobState=PENDING Reason=BeginTime")
SCONTROL_INVALID = "slurm_load_jobs error: Invalid job id specified\n"


@pytest.fixture
def slurm_commands(monkeypatch):
    """Pretend ``scontrol`` (or only ``squeue``) exists; the answers come from ``run``."""
    def use(*names: str):
        monkeypatch.setattr(lease_module.shutil, "which",
                            lambda name: f"/usr/bin/{name}" if name in names else None)
    return use


def test_scontrol_output_is_parsed(slurm_commands):
    slurm_commands("scontrol")
    fields = parse_scontrol_job(SCONTROL_RUNNING)
    assert (fields["JobState"], fields["Restarts"], fields["ArrayTaskId"]) == ("RUNNING", "1", "2")
    calls = []

    def answer(text: str, rc: int):
        def run(argv):
            calls.append(argv)
            return rc, text
        return run

    assert slurm_job_state("4242", answer(SCONTROL_INVALID, 1)) == {"JobState": "UNKNOWN_TO_SLURM"}
    assert calls[-1] == ["scontrol", "show", "job", "-o", "4242"]
    running = slurm_job_state("4242", answer(SCONTROL_RUNNING, 0))
    assert not slurm_job_gone(running, "1")  # the same attempt still runs
    assert slurm_job_gone(running, "0")  # requeued since: the holder was restart 0
    assert slurm_job_gone(slurm_job_state("4242", answer(SCONTROL_COMPLETED, 0)), "1")
    assert slurm_job_gone(slurm_job_state("4242", answer(SCONTROL_PENDING, 0)), "1")
    assert slurm_job_gone(slurm_job_state("4242", answer(SCONTROL_INVALID, 1)), "")
    assert slurm_job_state("4242", answer("scontrol: error: cannot reach slurmctld\n", 1)) is None
    assert not slurm_job_gone(None, "")  # cannot tell: never taken over on a guess


def test_squeue_is_asked_without_scontrol(slurm_commands):
    slurm_commands("squeue")
    assert slurm_job_state("9", lambda argv: (0, "RUNNING\n")) == {"JobState": "RUNNING"}
    assert slurm_job_state("9", lambda argv: (0, "")) == {"JobState": "UNKNOWN_TO_SLURM"}
    assert slurm_job_state("9", lambda argv: (1, "slurm_load_jobs error: Invalid job id "
                                                  "specified")) == {"JobState": "UNKNOWN_TO_SLURM"}
    slurm_commands()  # no Slurm here: nothing to ask
    assert slurm_job_state("9", lambda argv: (0, "RUNNING")) is None


def _elsewhere(tmp_path: Path, key: str, **slurm: str) -> Path:
    """A lease held by pid 4321 on another host (as a Slurm array task would write it)."""
    path = tmp_path / "seg" / "pytc_lease"
    path.parent.mkdir(parents=True, exist_ok=True)
    holder = LeaseHolder(host="node7", pid=4321, key=key, command="pytc-decode aff -o seg",
                         **slurm)
    path.write_text(json.dumps(holder.__dict__))
    return path


def test_the_lease_records_the_slurm_job(tmp_path, monkeypatch):
    for var, value in (("SLURM_JOB_ID", "4242"), ("SLURM_ARRAY_JOB_ID", "4240"),
                       ("SLURM_ARRAY_TASK_ID", "2"), ("SLURM_RESTART_COUNT", "1")):
        monkeypatch.setenv(var, value)
    lease = acquire_lease(tmp_path / "pytc_lease", "k", what="seg")
    holder = read_lease(tmp_path / "pytc_lease")
    assert holder is not None
    assert (holder.slurm_job, holder.slurm_array_job, holder.slurm_array_task,
            holder.slurm_restart) == ("4242", "4240", "2", "1")
    lease.release()
    assert not (tmp_path / "pytc_lease").exists() and not members_dir(tmp_path / "pytc_lease").exists()


def test_a_requeue_of_the_same_job_on_another_host_takes_the_lease_over(tmp_path, monkeypatch,
                                                                        slurm_commands):
    slurm_commands()  # no scontrol needed: the job is this very job
    path = _elsewhere(tmp_path, "old", slurm_job="4242", slurm_restart="0")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")  # the same attempt (a multi-node job): live
    with pytest.raises(UserError, match="being written by another run"):
        acquire_lease(path, "new", what="seg")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # requeued: the holder is the old attempt
    lease = acquire_lease(path, "new", what="seg")
    assert lease.owner and read_lease(path).key == "new"
    lease.release()


def test_a_lease_of_a_job_slurm_no_longer_knows_is_stale(tmp_path, monkeypatch, slurm_commands):
    slurm_commands("scontrol")
    path = _elsewhere(tmp_path, "old", slurm_job="777", slurm_restart="0")
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.setattr(lease_module, "_run", lambda argv: (0, SCONTROL_RUNNING.replace(
        "Restarts=1", "Restarts=0")))
    with pytest.raises(UserError, match="if it is known to be dead, delete"):
        acquire_lease(path, "new", what="seg")
    monkeypatch.setattr(lease_module, "_run", lambda argv: (1, SCONTROL_INVALID))
    lease = acquire_lease(path, "new", what="seg")
    assert lease.owner
    lease.release()
    # without Slurm information a lease from another host is never taken over
    path = _elsewhere(tmp_path, "old")
    with pytest.raises(UserError, match="if it is known to be dead, delete"):
        acquire_lease(path, "new", what="seg")


def test_the_lease_lasts_until_the_last_share_leaves(tmp_path):
    path = tmp_path / "pytc_lease"
    first = acquire_lease(path, "k", what="seg")
    second = acquire_lease(path, "k", what="seg")
    assert first.owner and not second.owner
    first.release()  # the share that created it ends first: another share still writes
    assert read_lease(path) is not None
    with pytest.raises(UserError, match="being written by another run"):
        acquire_lease(path, "other", what="seg")
    second.release()
    assert not path.exists() and not members_dir(path).exists()


def test_a_share_of_dead_processes_is_stale_even_with_members(tmp_path):
    path = tmp_path / "pytc_lease"
    lease = acquire_lease(path, "k", what="seg")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    pid = int(dead.stdout)
    data = json.loads(path.read_text())
    for target in (path, *members_dir(path).iterdir()):
        target.write_text(json.dumps({**data, "pid": pid, "pid_start": None}))
    lease.member = None  # forget ours: the process "died"
    taken = acquire_lease(path, "other", what="seg")
    assert taken.owner and read_lease(path).key == "other"
    taken.release()


def test_a_joining_share_waits_for_the_record_and_keeps_the_scratch(tmp_path):
    out = str(tmp_path / "seg")
    scratch = tmp_path / "seg" / "pytc_decode"
    owner = acquire_lease(tmp_path / "seg" / "pytc_lease", "k", what=out)  # the first share
    scratch.mkdir()
    (scratch / "block_0_0_0.npz").write_bytes(b"finished")  # the owner's first block

    def owner_writes_its_record():
        time.sleep(0.3)
        _write_record(out, RunRecord(state="running", key="k", stage="decode", command="c",
                                     host="h", pid=os.getpid(), started="now"))

    writer = threading.Thread(target=owner_writes_its_record)
    writer.start()
    with claim_output(out, stage="decode", key="k", join=True, scratch=[scratch]) as run:
        assert run.mode == "resume"  # not "fresh": it must not clean what the owner made
    writer.join()
    assert (scratch / "block_0_0_0.npz").read_bytes() == b"finished"
    assert read_run_record(out).state == "running"
    owner.release()


def test_a_fresh_run_empties_its_scratch_before_writing_its_record(tmp_path):
    out = str(tmp_path / "seg")
    scratch = tmp_path / "seg" / "pytc_decode"
    scratch.mkdir(parents=True)
    (scratch / "old").write_bytes(b"")
    with claim_output(out, stage="decode", key="k", join=True, scratch=[scratch]) as run:
        assert run.mode == "fresh" and not scratch.exists()


APP = """
import os, signal, sys, time
from pathlib import Path
from pytc_core.cli import run_entry_point
from pytc_core.output_run import claim_output

def main():
    with claim_output(sys.argv[1], stage="t", key="k") as run:
        run.made_progress()
        Path(sys.argv[2]).write_text("in")
        time.sleep(60)

sys.exit(run_entry_point("pytc-test", lambda argv, **kw: main(), []))
"""


@pytest.mark.parametrize("signum", [signal.SIGUSR1, signal.SIGTERM])
def test_sigusr1_in_a_claimed_run_exits_75_and_leaves_the_lease(tmp_path, signum):
    out, ready = tmp_path / "seg", tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-c", APP, str(out), str(ready)],
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert (out / "pytc_lease").exists()
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 75, err
    assert f"stopped by {signal.Signals(signum).name}" in err
    assert not (out / "pytc_lease").exists() and not (out / "pytc_lease.members").exists()
    assert read_run_record(str(out)).state == "running"  # kept, for the requeued job to resume


def test_the_entry_point_maps_terminated_to_75(capsys):
    from pytc_core.output_run import Terminated

    def app(argv, **kw):
        raise Terminated(signal.SIGUSR1)

    assert run_entry_point("pytc-x", app, []) == 75
    assert "pytc-x: stopped by SIGUSR1" in capsys.readouterr().err


BEFORE_THE_CLAIM = """
import sys, time
from pathlib import Path
from pytc_core.cli import run_entry_point

def main():
    Path(sys.argv[1]).write_text("in")
    time.sleep(60)  # imports, planning: no output claimed yet

sys.exit(run_entry_point("pytc-test", lambda argv, **kw: main(), []))
"""


def test_sigusr1_before_a_claim_exits_75_too(tmp_path):
    ready = tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-c", BEFORE_THE_CLAIM, str(ready)],
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGUSR1)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 75, err  # not -10 (138 under a shell): the wrapper requeues it
    assert "pytc-test: stopped by SIGUSR1" in err


def test_a_joining_share_takes_the_lease_when_its_creator_leaves_without_a_record(tmp_path):
    out = str(tmp_path / "seg")
    first = acquire_lease(tmp_path / "seg" / "pytc_lease", "k", what=out)
    leaver = threading.Timer(0.3, first.release)  # refused before it wrote its record
    leaver.start()
    with claim_output(out, stage="decode", key="k", join=True) as run:
        assert run.lease is not None and run.lease.owner and run.mode == "fresh"
        assert read_run_record(out).state == "running"  # this share wrote it
    leaver.join()


def test_the_owner_opens_the_volume_a_joined_share_created_first(tmp_path):
    """A share joins once the owner's record exists and may create the volume before the
    owner gets to it (seen with four pytc-infer shares on a loaded machine: the owner exited
    2 with 'already exists' and its cleanup removed the others' output)."""
    import numpy as np

    out = str(tmp_path / "aff")
    with claim_output(out, stage="infer", key="k", join=True) as owner:
        assert owner.lease is not None and owner.lease.owner and owner.mode == "fresh"
        with claim_output(out, stage="infer", key="k", join=True) as share:
            assert not share.lease.owner and share.mode == "resume"
            share.create((8, 8, 8), np.uint8, chunk_size=(8, 8, 8)).write(
                np.full((8, 8, 8), 7, np.uint8))
        vol = owner.create((8, 8, 8), np.uint8, chunk_size=(8, 8, 8))
        assert (vol.read() == 7).all()  # the share's block is kept, not refused or replaced
        with pytest.raises(UserError, match="exists with shape"):
            owner.create((8, 8, 9), np.uint8, chunk_size=(8, 8, 8))
        owner.complete()
    assert read_run_record(out).complete
