"""Talking to Slurm: sbatch, squeue, sacct, the job completion log, scancel.

Only this module runs Slurm's commands. Failures the user can fix (sbatch missing, a
submission Slurm rejects) are UserErrors carrying Slurm's own message.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pytc_core.errors import UserError

__all__ = ["JobState", "cancel_jobs", "check_gpu_partition", "default_partition_gpus",
           "job_states", "require_sbatch", "submit"]

log = logging.getLogger("pytc.launch")

# states after which a job will not run again by itself
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
                "PREEMPTED", "BOOT_FAIL", "DEADLINE"}
# states `resubmit --failed` reruns
FAILED_STATES = FINAL_STATES - {"COMPLETED"}


@dataclass(frozen=True)
class JobState:
    """One job's (or array task's) state as Slurm reports it; ``source`` says where from."""

    state: str
    restarts: int | None = None
    exit_code: str | None = None
    source: str = "squeue"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise UserError(f"{name} not found: Slurm's commands are not on PATH",
                        "run on a Slurm login node, or use --dry-run to write the scripts "
                        "without submitting")
    return path


def require_sbatch() -> str:
    """The path of ``sbatch``; a UserError saying how to use ``--dry-run`` when it is missing."""
    return _tool("sbatch")


def _run(argv: Sequence[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                          check=False)


def submit(script: str | os.PathLike[str], *, array: str | None = None,
           dependency: str | None = None, workdir: str | os.PathLike[str] | None = None) -> str:
    """``sbatch --parsable [--array A] [--dependency D] script`` → the job id (``"123"``).

    A rejected submission is a UserError with sbatch's own message.
    """
    argv = [_tool("sbatch"), "--parsable"]
    if array is not None:
        argv.append(f"--array={array}")
    if dependency is not None:
        argv.append(f"--dependency={dependency}")
    argv.append(str(script))
    proc = subprocess.run(argv, capture_output=True, text=True, check=False,
                          cwd=str(workdir) if workdir else None, timeout=120)
    if proc.returncode != 0:
        msg = " ".join((proc.stderr or proc.stdout).split()) or f"exit code {proc.returncode}"
        raise UserError(f"Slurm rejected the job: {msg}",
                        f"fix the [launch] options or the script {script}")
    job_id = proc.stdout.strip().splitlines()[-1].split(";")[0] if proc.stdout.strip() else ""
    if not job_id.isdigit():
        raise UserError(f"sbatch printed no job id (got {proc.stdout.strip()!r})",
                        "check the Slurm installation")
    log.debug("submitted %s: job %s", script, job_id)
    return job_id


def cancel_jobs(job_ids: Iterable[str]) -> None:
    """``scancel`` the given jobs / array tasks (``"123"`` or ``"123_4"``)."""
    ids = list(job_ids)
    if not ids:
        return
    proc = _run([_tool("scancel"), *ids])
    if proc.returncode != 0:
        raise UserError(f"scancel failed: {' '.join(proc.stderr.split())}",
                        "check the job ids with pytc-launch status")


def _squeue(job_ids: Sequence[str]) -> dict[str, JobState]:
    """States of jobs Slurm still knows (pending, running, and finished within MinJobAge)."""
    squeue = shutil.which("squeue")
    if squeue is None or not job_ids:
        return {}
    proc = _run([squeue, "--states=all", "-h", "-r", "-j", ",".join(job_ids),
                 "-O", "JobID:|,ArrayJobID:|,ArrayTaskID:|,State:|,RestartCnt:|"])
    out: dict[str, JobState] = {}
    if proc.returncode != 0:  # e.g. every id unknown ("Invalid job id specified")
        return out
    for line in proc.stdout.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) < 5:
            continue
        job, array_job, task, state, restarts = parts[:5]
        restart_count = int(restarts) if restarts.isdigit() else None
        entry = JobState(state, restart_count, None, "squeue")
        out[job] = entry
        if task.isdigit():
            out[f"{array_job}_{task}"] = entry
        elif array_job == job:  # an array's tasks that never got a job of their own
            out[f"{job}_rest"] = entry
    return out


def _sacct(job_ids: Sequence[str]) -> dict[str, JobState]:
    """States from Slurm's accounting (needs slurmdbd; empty when accounting is off)."""
    sacct = shutil.which("sacct")
    if sacct is None or not job_ids:
        return {}
    proc = _run([sacct, "-n", "-P", "-X", "-j", ",".join(job_ids),
                 "-o", "JobID,State,ExitCode"])
    out: dict[str, JobState] = {}
    if proc.returncode != 0:
        return out
    for line in proc.stdout.splitlines():
        parts = line.split("|")
        if len(parts) < 3:
            continue
        out[parts[0]] = JobState(parts[1].split()[0], None, parts[2], "sacct")
    return out


_FIELD = re.compile(r"(\w+)=(\S*)")


def jobcomp_log_path() -> Path | None:
    """The job completion log of a ``jobcomp/filetxt`` cluster, or None."""
    scontrol = shutil.which("scontrol")
    if scontrol is None:
        return None
    proc = _run([scontrol, "show", "config"])
    conf = dict(_FIELD.findall(proc.stdout.replace(" = ", "=")))
    if conf.get("JobCompType") != "jobcomp/filetxt" or not conf.get("JobCompLoc"):
        return None
    return Path(conf["JobCompLoc"])


def _jobcomp(job_ids: Sequence[str]) -> dict[str, JobState]:
    """States from the job completion log (the last record of each plain job id)."""
    path = jobcomp_log_path()
    if path is None or not path.is_file():
        return {}
    wanted = set(job_ids)
    out: dict[str, JobState] = {}
    for line in path.read_text(errors="replace").splitlines():
        fields = dict(_FIELD.findall(line))
        job = fields.get("JobId")
        if job in wanted:
            out[job] = JobState(fields.get("JobState", "UNKNOWN"), None,
                                fields.get("ExitCode"), "jobcomp")
    return out


def _started(task_id: str, plain_ids: dict[str, str] | None) -> bool:
    return bool(plain_ids and task_id in plain_ids)


def job_states(job_ids: Sequence[str], plain_ids: dict[str, str] | None = None
               ) -> dict[str, JobState]:
    """The state of each job id (``"123"`` or array task ``"123_4"``).

    Asks squeue first (it knows pending, running and recently finished jobs), then sacct,
    then the job completion log. ``plain_ids`` maps an array task id to the plain job id
    Slurm gave it (recorded by the batch script), which is what sacct-less logs know.
    """
    ids = list(dict.fromkeys(job_ids))
    found = _squeue(sorted({i.split("_")[0] for i in ids}))
    states = {i: found[i] for i in ids if i in found}
    for i in ids:  # e.g. pending tasks of a cancelled array: one record for all of them
        rest = f"{i.split('_')[0]}_rest"
        if i not in states and "_" in i and rest in found and not _started(i, plain_ids):
            states[i] = found[rest]
    missing = [i for i in ids if i not in states]
    if missing:
        states.update({k: v for k, v in _sacct(missing).items() if k in missing})
    missing = [i for i in ids if i not in states]
    if missing:
        # a task that never started has no job id of its own: the array's record speaks for it
        plain: dict[str, list[str]] = {}
        for i in missing:
            plain.setdefault((plain_ids or {}).get(i, i.split("_")[0]), []).append(i)
        for job, state in _jobcomp(list(plain)).items():
            for i in plain[job]:
                states[i] = state
    return states


#: ``sinfo`` output format the partition check parses: partition (default marked ``*``), GRES
SINFO_FORMAT = "%P %G"


def default_partition_gpus(sinfo_output: str) -> tuple[str | None, bool, list[str]]:
    """From ``sinfo -h -o "%P %G"`` (one line per partition and GRES set): the default
    partition (``*``), whether any of its nodes has GPUs (a ``gpu`` GRES), and the partitions
    that have GPUs."""
    default = None
    gpus: dict[str, bool] = {}
    for line in sinfo_output.splitlines():
        fields = line.split()
        if not fields:
            continue
        name = fields[0]
        if name.endswith("*"):
            name = name[:-1]
            default = name
        gres = " ".join(fields[1:])
        has = any(part.split(":")[0] == "gpu" for part in re.split(r"[,\s]+", gres))
        gpus[name] = gpus.get(name, False) or has
    with_gpus = [name for name, has in gpus.items() if has]
    return default, bool(default is not None and gpus.get(default)), with_gpus


def check_gpu_partition(gpus: int, partition: str | None,
                        sinfo_output: str | None = None) -> None:
    """UserError when GPUs are asked for without a partition and the cluster's default
    partition has none (the job would wait forever or be rejected late). ``sinfo_output``:
    ``sinfo -h -o "%P %G"`` (run here when None); silently nothing when sinfo is absent or
    fails, or when it cannot tell."""
    if gpus <= 0 or partition is not None:
        return
    if sinfo_output is None:
        path = shutil.which("sinfo")
        if path is None:
            return
        try:
            done = _run([path, "-h", "-o", SINFO_FORMAT], timeout=20)
        except (OSError, subprocess.SubprocessError):
            return
        if done.returncode != 0:
            return
        sinfo_output = done.stdout
    default, has_gpus, with_gpus = default_partition_gpus(sinfo_output)
    if default is None or has_gpus:
        return
    raise UserError(f"{gpus} GPU(s) per node asked for, but no partition is given and the "
                    f"cluster's default partition '{default}' has no GPUs",
                    "pass --partition " + (" or --partition ".join(with_gpus) if with_gpus
                                           else "<a partition with GPUs> (see `sinfo`)")
                    + " (or partition = ... in [launch])")
