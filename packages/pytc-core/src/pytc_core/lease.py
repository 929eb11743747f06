"""One writer per output: a lease file that names the run writing it.

A run takes the lease before it touches its output: a small JSON file holding the host, the
process id (and its start time, so a reused pid is not mistaken for the holder) and the run's
config key. It is created atomically (written to a temporary file, then hard-linked to its
name, which fails when the name exists), so two runs can never both create it.

- Another run with the **same key** (the shares of one blockwise run, e.g. Slurm array tasks)
  *joins* the lease and works beside the holder.
- A run with a **different key** is refused while the holder lives. A lease whose holder is a
  dead process on this host is stale and is taken over; a holder on another host cannot be
  checked, so the error names the lease file to delete once that run is known to be dead.
- Every run under the lease (the holder and the runs that joined it) registers in the members
  folder beside it (``<lease>.members``, one file per process); the lease is removed by the
  last member to leave (also on an error, Ctrl-C, SIGTERM or SIGUSR1), so it lasts until the
  last share of a run is done.
- Under Slurm the lease records the job (``SLURM_JOB_ID``, ``SLURM_ARRAY_JOB_ID``,
  ``SLURM_ARRAY_TASK_ID``, ``SLURM_RESTART_COUNT``). A lease held from another host is stale
  when its job is the current job in a later restart (a requeue of the same job, which may land
  on another host) or when Slurm no longer runs that job (``scontrol show job`` / ``squeue``
  say it is unknown, finished or pending again); only where those commands exist.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pytc_core.errors import UserError

__all__ = ["Lease", "LeaseHolder", "acquire_lease", "process_alive", "process_start_time", "read_lease",
           "slurm_job_gone", "slurm_job_state"]

#: the Slurm variables a lease records (empty strings outside Slurm)
SLURM_VARIABLES = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT")


@dataclass(frozen=True)
class LeaseHolder:
    """Who holds a lease: host name, process id (and start time), run key and command line."""

    host: str
    pid: int
    key: str
    command: str = ""
    created: str = ""
    pid_start: int | None = None
    slurm_job: str = ""
    slurm_array_job: str = ""
    slurm_array_task: str = ""
    slurm_restart: str = ""

    def alive(self) -> bool | None:
        """True/False for a process on this host; for one elsewhere, False when its Slurm job is
        known to be over (:meth:`slurm_stale`), else None (unknowable)."""
        if self.host != socket.gethostname():
            return False if self.slurm_stale() else None
        return process_alive(self.pid, self.pid_start)

    def slurm_stale(self, state: Callable[[str], dict[str, str] | None] | None = None) -> bool:
        """Whether this holder's Slurm job is over: the current job in a later restart (a
        requeue of it), or a job Slurm no longer runs. ``state`` is :func:`slurm_job_state`."""
        if not self.slurm_job:
            return False
        here = os.environ.get("SLURM_JOB_ID", "")
        if here == self.slurm_job:  # this very job: the holder is an earlier restart of it
            return os.environ.get("SLURM_RESTART_COUNT", "0") != (self.slurm_restart or "0")
        info = (state or slurm_job_state)(self.slurm_job)
        return slurm_job_gone(info, self.slurm_restart)

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}" + (f", started {self.created}" if self.created else "")


def process_start_time(pid: int) -> int | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux), else None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    try:  # the command name (field 2) may hold spaces and parentheses: split after the last ')'
        return int(stat[stat.rindex(")") + 2:].split()[19])
    except (ValueError, IndexError):
        return None


def process_alive(pid: int, start_time: int | None = None) -> bool:
    """Whether process ``pid`` on this host lives (and, given ``start_time``, is the same one)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    if start_time is not None:
        now = process_start_time(pid)
        if now is not None and now != start_time:
            return False  # the pid was reused by a new process
    try:  # a zombie (exited, not yet reaped by its parent) is dead for our purposes
        state = Path(f"/proc/{pid}/stat").read_text()
        if state[state.rindex(")") + 2] == "Z":
            return False
    except (OSError, ValueError, IndexError):
        pass
    return True


#: Slurm job states in which the job's processes may still run
_LIVE_STATES = {"RUNNING", "COMPLETING", "SUSPENDED", "CONFIGURING", "STOPPED", "SIGNALING",
                "RESIZING", "STAGE_OUT"}


def _run(argv: list[str]) -> tuple[int, str]:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return -1, ""
    return proc.returncode, proc.stdout + proc.stderr


def parse_scontrol_job(text: str) -> dict[str, str]:
    """``KEY=VALUE`` fields of ``scontrol show job -o ID`` output (one job)."""
    fields: dict[str, str] = {}
    for word in text.split():
        key, sep, value = word.partition("=")
        if sep and key not in fields:
            fields[key] = value
    return fields


def slurm_job_state(job_id: str, run: Callable[[list[str]], tuple[int, str]] | None = None
                    ) -> dict[str, str] | None:
    """What Slurm says of job ``job_id``: ``{"JobState": ..., "Restarts": ...}``,
    ``{"JobState": "UNKNOWN_TO_SLURM"}`` when it says the id is invalid, or None when it
    cannot be asked (no ``scontrol``/``squeue``, or an unclear answer). ``run(argv)`` returns
    (exit code, stdout + stderr) of a command (default: runs it, 20 s at most)."""
    run = run or _run
    if shutil.which("scontrol") is not None:
        rc, text = run(["scontrol", "show", "job", "-o", job_id])
        if "invalid job id" in text.lower():
            return {"JobState": "UNKNOWN_TO_SLURM"}
        fields = parse_scontrol_job(text) if rc == 0 else {}
        if "JobState" in fields:
            return fields
        return None
    if shutil.which("squeue") is not None:
        rc, text = run(["squeue", "-h", "-j", job_id, "-o", "%T"])
        if "invalid job id" in text.lower() or (rc == 0 and not text.strip()):
            return {"JobState": "UNKNOWN_TO_SLURM"}  # not (or no longer) in the queue
        if rc == 0:
            return {"JobState": text.split()[0].upper()}
    return None


def slurm_job_gone(info: dict[str, str] | None, restart: str = "") -> bool:
    """Whether a process of the job described by ``info`` (:func:`slurm_job_state`) in restart
    ``restart`` can no longer be running: unknown to Slurm, not running, or requeued since."""
    if info is None:
        return False  # cannot tell: never take a lease over on a guess
    if info.get("JobState", "") not in _LIVE_STATES:
        return True
    return "Restarts" in info and info["Restarts"] != (restart or "0")


def read_lease(path: Path) -> LeaseHolder | None:
    """The holder recorded in the lease file at ``path``, or None when there is none."""
    try:
        data = json.loads(path.read_text())
        return LeaseHolder(host=str(data["host"]), pid=int(data["pid"]), key=str(data["key"]),
                           command=str(data.get("command", "")), created=str(data.get("created", "")),
                           pid_start=data.get("pid_start"),
                           slurm_job=str(data.get("slurm_job", "")),
                           slurm_array_job=str(data.get("slurm_array_job", "")),
                           slurm_array_task=str(data.get("slurm_array_task", "")),
                           slurm_restart=str(data.get("slurm_restart", "")))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        # unreadable: treat as held by an unknown run elsewhere (never silently taken over)
        return LeaseHolder(host="an unknown host", pid=-1, key="?")


def _me(key: str, command: str) -> LeaseHolder:
    pid = os.getpid()
    return LeaseHolder(host=socket.gethostname(), pid=pid, key=key, command=command,
                       created=datetime.now(UTC).isoformat(timespec="seconds"),
                       pid_start=process_start_time(pid),
                       **{field: os.environ.get(var, "") for field, var in zip(
                           ("slurm_job", "slurm_array_job", "slurm_array_task", "slurm_restart"),
                           SLURM_VARIABLES, strict=True)})


def _create_exclusive(path: Path, holder: LeaseHolder) -> bool:
    """Create ``path`` holding ``holder`` atomically; False when it already exists."""
    data = json.dumps(holder.__dict__, indent=1).encode()
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.{threading.get_ident()}")
    tmp.write_bytes(data)
    try:
        os.link(tmp, path)  # atomic, fails if the name exists, and the file is complete
        return True
    except FileExistsError:
        return False
    except OSError:  # no hard links on this filesystem: O_EXCL (complete a moment later)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        return True
    finally:
        tmp.unlink(missing_ok=True)


def members_dir(path: Path) -> Path:
    """The folder beside lease ``path`` where each run under the lease registers."""
    return path.with_name(path.name + ".members")


def _member_file(path: Path, holder: LeaseHolder) -> Path:
    return members_dir(path) / f"{holder.host}_{holder.pid}_{os.urandom(4).hex()}"


def _register(path: Path, me: LeaseHolder) -> Path:
    folder = members_dir(path)
    folder.mkdir(parents=True, exist_ok=True)
    member = _member_file(path, me)
    member.write_text(json.dumps(me.__dict__))
    return member


def live_members(path: Path) -> list[LeaseHolder]:
    """The runs registered under lease ``path`` that may still run (dead ones are removed)."""
    folder = members_dir(path)
    try:
        names = sorted(os.listdir(folder))
    except FileNotFoundError:
        return []
    live = []
    for name in names:
        holder = read_lease(folder / name)
        if holder is None:
            continue
        if holder.pid != -1 and holder.alive() is False:
            (folder / name).unlink(missing_ok=True)
            continue
        live.append(holder)
    return live


def _lease_alive(path: Path, holder: LeaseHolder) -> bool | None:
    """Whether any run under the lease lives: True/False, None when unknowable (elsewhere)."""
    alive = holder.alive()
    if alive:
        return True
    members = live_members(path)
    if any(m.alive() for m in members):
        return True
    if alive is None or any(m.alive() is None for m in members):
        return None
    return False


class Lease:
    """A lease on one output; ``owner`` when this process created it, else joined.

    Every run under the lease is a member (a file in :func:`members_dir`); the last member to
    :meth:`release` removes the lease.
    """

    def __init__(self, path: Path, holder: LeaseHolder, owner: bool,
                 member: Path | None = None) -> None:
        self.path, self.holder, self.owner = path, holder, owner
        self.member = member

    def others(self) -> int:
        """How many other live runs are under this lease (shares that may still write)."""
        live = live_members(self.path)
        mine = None if self.member is None else read_lease(self.member)
        return len(live) - (mine is not None and any(
            (m.host, m.pid, m.created) == (mine.host, mine.pid, mine.created) for m in live))

    def release(self) -> None:
        """Leave the lease; the last run under it removes it (with its members folder)."""
        member, self.member = self.member, None
        was_owner, self.owner = self.owner, False
        if member is None:
            if was_owner:  # a lease taken without members (older layout)
                self.path.unlink(missing_ok=True)
            return
        member.unlink(missing_ok=True)
        if live_members(self.path):
            return  # other shares still write: the lease stays until the last one leaves
        current = read_lease(self.path)
        if current is not None and current.key == self.holder.key:
            self.path.unlink(missing_ok=True)
            if live_members(self.path):  # a share joined meanwhile: give it the lease back
                _create_exclusive(self.path, current)
                return
        try:
            members_dir(self.path).rmdir()
        except OSError:
            pass

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def acquire_lease(path: str | os.PathLike[str], key: str, *, what: str, command: str = "") -> Lease:
    """Take the lease at ``path`` for a run with config ``key`` writing ``what`` (an output URI).

    Returns a :class:`Lease` (``owner`` False when a live run with the same key holds it: this
    run joins it). Raises UserError when a live run with a different key holds it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    me = _me(key, command)
    for _ in range(20):
        holder = read_lease(path)
        if holder is not None and _lease_alive(path, holder) is False:
            # stale: its runs died (or their Slurm job is over) without releasing it
            path.unlink(missing_ok=True)
            shutil.rmtree(members_dir(path), ignore_errors=True)
            continue
        if holder is not None and holder.key != key:
            alive = _lease_alive(path, holder)
            if alive is None:
                fix = f"wait for that run to finish; if it is known to be dead, delete {path}"
            else:
                fix = "wait for that run to finish, stop it, or choose another output"
            by = f" (`{holder.command}`)" if holder.command else ""
            raise UserError(f"output {what} is being written by another run{by}, "
                            f"{holder.describe()}", fix)
        member = _register(path, me)  # before the lease exists: a fresh lease always has one
        if _create_exclusive(path, me):
            return Lease(path, me, owner=True, member=member)
        holder = read_lease(path)
        if holder is not None and holder.key == key:
            return Lease(path, holder, owner=False, member=member)  # a share of this run: join
        member.unlink(missing_ok=True)  # released meanwhile, or another run's: look again
    raise UserError(f"cannot take the lease {path} on {what}: other runs keep taking it",
                    "run one command at a time on this output")
