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
- The holder removes the lease when it ends (also on an error or Ctrl-C); joined runs leave it.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pytc_core.errors import UserError

__all__ = ["Lease", "LeaseHolder", "acquire_lease", "process_alive", "process_start_time", "read_lease"]


@dataclass(frozen=True)
class LeaseHolder:
    """Who holds a lease: host name, process id (and start time), run key and command line."""

    host: str
    pid: int
    key: str
    command: str = ""
    created: str = ""
    pid_start: int | None = None

    def alive(self) -> bool | None:
        """True/False for a process on this host; None when it runs elsewhere (unknowable)."""
        if self.host != socket.gethostname():
            return None
        return process_alive(self.pid, self.pid_start)

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


def read_lease(path: Path) -> LeaseHolder | None:
    """The holder recorded in the lease file at ``path``, or None when there is none."""
    try:
        data = json.loads(path.read_text())
        return LeaseHolder(host=str(data["host"]), pid=int(data["pid"]), key=str(data["key"]),
                           command=str(data.get("command", "")), created=str(data.get("created", "")),
                           pid_start=data.get("pid_start"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        # unreadable: treat as held by an unknown run elsewhere (never silently taken over)
        return LeaseHolder(host="an unknown host", pid=-1, key="?")


def _me(key: str, command: str) -> LeaseHolder:
    pid = os.getpid()
    return LeaseHolder(host=socket.gethostname(), pid=pid, key=key, command=command,
                       created=datetime.now(UTC).isoformat(timespec="seconds"),
                       pid_start=process_start_time(pid))


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


class Lease:
    """A lease on one output; ``owner`` when this process created it, else joined."""

    def __init__(self, path: Path, holder: LeaseHolder, owner: bool) -> None:
        self.path, self.holder, self.owner = path, holder, owner

    def release(self) -> None:
        """Remove the lease file if this process holds it (joined runs leave it)."""
        if not self.owner:
            return
        current = read_lease(self.path)
        if current is not None and (current.host, current.pid) == (self.holder.host, self.holder.pid):
            self.path.unlink(missing_ok=True)
        self.owner = False

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def acquire_lease(path: str | os.PathLike[str], key: str, *, what: str, command: str = "") -> Lease:
    """Take the lease at ``path`` for a run with config ``key`` writing ``what`` (an output URI).

    Returns a :class:`Lease` (``owner`` False when a live run with the same key holds it).
    Raises UserError when a live run with a different key holds it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    me = _me(key, command)
    for _ in range(20):
        if _create_exclusive(path, me):
            return Lease(path, me, owner=True)
        holder = read_lease(path)
        if holder is None:
            continue  # released meanwhile: try again
        alive = holder.alive()
        if alive is False:  # stale: its process died without releasing it
            path.unlink(missing_ok=True)
            continue
        if holder.key == key:
            return Lease(path, holder, owner=False)
        if alive is None:
            fix = (f"wait for that run to finish; if it is known to be dead, delete {path}")
        else:
            fix = "wait for that run to finish, stop it, or choose another output"
        by = f" (`{holder.command}`)" if holder.command else ""
        raise UserError(f"output {what} is being written by another run{by}, {holder.describe()}", fix)
    raise UserError(f"cannot take the lease {path} on {what}: other runs keep taking it",
                    "run one command at a time on this output")
