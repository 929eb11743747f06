"""A run's claim on its output: checks before compute, one writer, completion, clean aborts.

Every stage that writes a volume does it inside :func:`claim_output`::

    with claim_output(out_uri, stage="decode", key=key, inputs=[aff_uri],
                      overwrite=overwrite) as run:      # checks + lease, before reading input
        out = run.create(shape, dtype, ...)              # or reopened when resuming
        ... write blocks (call run.made_progress() after the first finished one) ...
        run.complete()                                   # after the last chunk

The run record ``pytc_run.json`` (inside a directory output, beside a file output, named like
``pytc_config.toml``) says which command writes the output and whether it finished: ``state``
is ``running`` until :meth:`OutputRun.complete`, then ``complete``. :func:`open_input` (what
stages open their inputs with; ``pytc_core.open_volume``) refuses a volume whose record is not
complete, naming the command that resumes it.

Rules (the README's conventions section states them for users):

- nothing there → a fresh run; something pytc does not recognise → refused, always;
- an unfinished output of the **same key** (same command and config) → resumed (a stage that
  cannot resume calls ``create(..., restart=True)`` and starts it again);
- a complete output, one of another key, or a volume pytc did not record → refused unless
  ``overwrite``, which replaces only the recognised volume;
- the lease (:mod:`pytc_core.lease`) keeps other runs out; ``join=True`` lets runs of the
  same key work side by side (the shares of a blockwise run);
- an abort of a fresh run (bad input such as NaN, Ctrl-C, SIGTERM, SIGUSR1) removes
  everything it created, unless the run is interrupted after :meth:`OutputRun.made_progress`:
  then the partial output stays, marked unfinished, for the same command to resume;
- SIGTERM and SIGUSR1 (Slurm's time-limit warning, forwarded by pytc-launch's requeue
  wrapper) raise :class:`Terminated` in the main thread: the block in progress is abandoned
  (a block is marked done only after its write), finished blocks stay, the lease is left,
  and the command exits with :data:`EXIT_REQUEUE` (75) for the requeued job to resume;
- only the share that creates the lease starts a fresh run (and empties its ``scratch``
  folders, before it writes the run record); a share that joins waits for that record and
  resumes, so no share ever removes another's finished blocks.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shlex
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pytc_core.config import config_to_dict
from pytc_core.errors import UserError
from pytc_core.files import write_atomic
from pytc_core.lease import Lease, acquire_lease, read_lease
from pytc_core.output import (
    LEASE_NAME,
    RECORD_NAME,
    check_creatable,
    check_not_an_input,
    inspect_output,
    remove_output,
)
from pytc_core.version import __version__
from pytc_core.volume import Volume, create_volume, open_volume, parse_uri, sidecar_path
from pytc_core.volume.precomputed import local_layer_path, to_cloudpath

__all__ = [
    "EXIT_REQUEUE",
    "OutputRun",
    "RunRecord",
    "Terminated",
    "claim_output",
    "open_input",
    "read_run_record",
    "require_complete",
    "run_key",
]

log = logging.getLogger("pytc")


#: exit code of a command stopped by SIGTERM/SIGUSR1 with its finished work kept (EX_TEMPFAIL:
#: retry), as pytc-train's; pytc-launch's requeue wrapper requeues a signalled job that exits != 0
EXIT_REQUEUE = 75

#: how long a share that joins a run waits for the run record of the share that created it (s)
JOIN_WAIT_S = 120.0


class Terminated(KeyboardInterrupt):
    """SIGTERM (``scancel``, preemption) or SIGUSR1 (a Slurm time limit near) inside a claimed
    run: handled like Ctrl-C (finished blocks kept, lease left), exit :data:`EXIT_REQUEUE`."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@dataclass(frozen=True)
class RunRecord:
    """The run that writes (or wrote) an output: ``state`` is ``running`` or ``complete``."""

    state: str
    key: str
    stage: str
    command: str
    host: str
    pid: int
    started: str
    finished: str | None = None
    pytc_version: str = ""

    @property
    def complete(self) -> bool:
        return self.state == "complete"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _process_command() -> str:
    """This process's own command line (``pytc-decode aff -o seg``): the default for library
    callers; a command passes what its user typed (:func:`pytc_core.cli.current_command`)."""
    return shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])


def _normalised(uri: str) -> str:
    loc = parse_uri(uri)
    if loc.format == "precomputed":
        path = local_layer_path(uri)
        return uri.rstrip("/") if path is None else os.path.realpath(path)
    assert loc.path is not None
    return os.path.realpath(loc.path) + (":" + loc.inner.strip("/") if loc.inner else "")


def run_key(stage: str, inputs: Sequence[str | None], config: Any,
            exclude: Sequence[str] = ()) -> str:
    """A short hash of what determines an output: stage, input volumes, config values.

    ``config`` is a dataclass or mapping; ``exclude`` names top-level keys that do not change
    the output (e.g. a summary option). Two runs with the same key write the same output.
    """
    values = config_to_dict(config) if config is not None else {}
    values = {k: v for k, v in values.items() if k not in set(exclude)}
    text = json.dumps({"stage": stage, "inputs": [_normalised(u) if u else None for u in inputs],
                       "config": values}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _remote_files(uri: str):
    from cloudfiles import CloudFiles  # heavy: only for remote outputs

    return CloudFiles(to_cloudpath(uri))


def read_run_record(uri: str) -> RunRecord | None:
    """The run record of the output at ``uri``, or None (not written by a pytc run)."""
    path = sidecar_path(uri, RECORD_NAME)
    try:
        if path is None:
            if parse_uri(uri).format != "precomputed":
                return None
            raw = _remote_files(uri).get(RECORD_NAME)
            if raw is None:
                return None
            data = json.loads(raw)
        else:
            data = json.loads(path.read_text())
        return RunRecord(**{k: data.get(k) for k in RunRecord.__dataclass_fields__
                            if k in data})
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        raise UserError(f"the run record {path or RECORD_NAME} of {uri} is unreadable ({exc})",
                        "delete it if the output is known to be complete") from None


def _write_record(uri: str, record: RunRecord) -> None:
    data = json.dumps(asdict(record), indent=1).encode()
    path = sidecar_path(uri, RECORD_NAME)
    if path is None:
        _remote_files(uri).put(RECORD_NAME, data, content_type="application/json")
    else:
        write_atomic(path, data)


def require_complete(uri: str) -> None:
    """UserError when ``uri`` is the output of a pytc run that has not finished."""
    record = read_run_record(uri)
    if record is None or record.complete:
        return
    lease_path = sidecar_path(uri, LEASE_NAME)
    holder = read_lease(lease_path) if lease_path is not None else None
    if holder is not None and holder.alive() is not False:
        raise UserError(f"{uri} is not complete: `{holder.command or record.command}` is still "
                        f"writing it ({holder.describe()})", "wait for that run to finish")
    raise UserError(f"{uri} is not complete: the run `{record.command}` (started "
                    f"{record.started} on {record.host}) did not finish",
                    f"rerun `{record.command}` to resume it")


def open_input(uri: str, *, fill_missing: bool = False, allow_incomplete: bool = False) -> Volume:
    """Open a volume a stage reads (``pytc_core.open_volume``): the run policy, then the I/O.

    The output of a pytc run that did not finish (its run record is not complete) is a
    UserError naming the command that resumes it (``allow_incomplete`` is for the run writing
    it); everything else as :func:`pytc_core.volume.open_volume`.
    """
    if not allow_incomplete:
        require_complete(uri)
    return open_volume(uri, fill_missing=fill_missing)


def _is_interrupt(exc: BaseException | None) -> bool:
    return isinstance(exc, KeyboardInterrupt) or (isinstance(exc, SystemExit) and exc.code == 130)


class OutputRun:
    """One run's claim on ``uri``; use :func:`claim_output`. See the module docstring."""

    def __init__(self, uri: str, *, stage: str, key: str, inputs: Sequence[str | None] = (),
                 overwrite: bool = False, join: bool = False, command: str | None = None,
                 explain_mismatch: Callable[[RunRecord], None] | None = None,
                 allow_same_file: bool = False,
                 scratch: Sequence[str | os.PathLike[str]] = ()) -> None:
        self.uri, self.stage, self.key = uri, stage, key
        self.allow_same_file = allow_same_file
        self.scratch = [Path(p) for p in scratch]
        self.explain_mismatch = explain_mismatch
        self.inputs, self.overwrite, self.join = list(inputs), overwrite, join
        self.command = command or _process_command()
        #: ``fresh`` (this run creates the output) or ``resume`` (it goes on with one)
        self.mode = "fresh"
        self.lease: Lease | None = None
        self._progress = False
        #: whether :meth:`complete` was called
        self.completed = False
        self._created_dirs: list[Path] = []
        self._file_existed = True
        self._old_handlers: dict[int, Any] = {}

    # -- the claim ------------------------------------------------------------------------
    def _begin(self) -> None:
        uri = self.uri
        check_creatable(uri)
        check_not_an_input(uri, self.inputs, allow_same_file=self.allow_same_file)
        state = inspect_output(uri)
        if state.kind == "foreign":
            raise UserError(f"output {uri} is not a volume pytc can replace: {state.what}",
                            "choose another output; pytc never deletes files it did not write")
        loc = parse_uri(uri)
        lease_path = sidecar_path(uri, LEASE_NAME)
        if lease_path is not None:  # local outputs (a remote layer has no lease)
            self._file_existed = loc.format != "hdf5" or (loc.path is not None and loc.path.exists())
            self._note_created_dirs(lease_path.parent)
            for _ in range(5):
                lease = self.lease = acquire_lease(lease_path, self.key, what=uri,
                                                   command=self.command)
                if lease.owner or not self.join:
                    break
                record = self._wait_for_record(read_run_record(uri))
                if (record is not None and record.key == self.key) or lease.others():
                    break  # joined: the share holding the lease wrote its record (or still works)
                lease.release()  # it left without a record (refused?): take the lease anew
            if not lease.owner and not self.join:
                holder = lease.holder
                lease.release()
                self.lease = None
                raise UserError(f"output {uri} is being written by another run of the same "
                                f"command, {holder.describe()}", "wait for that run to finish")
            state = inspect_output(uri)  # again: another run may have changed it meanwhile
            if state.kind == "foreign":
                raise UserError(f"output {uri} is not a volume pytc can replace: {state.what}",
                                "choose another output")
        record = read_run_record(uri)
        owner = self.lease is None or self.lease.owner
        if not owner:
            record = self._wait_for_record(record)
            state = inspect_output(uri)
        if state.kind == "absent":
            self.mode = "fresh"
            if record is not None and record.key == self.key and not record.complete:
                self.mode = "resume"  # created by a share of this run, volume not yet there
            elif not owner:  # joined: the share that holds the lease created (or cleans) it
                self.mode = "resume"
            elif (state.pytc_only or record is not None) and owner:
                remove_output(uri)  # leftovers (scratch, an old record) of an earlier run
        elif record is None:
            self._replace_or_refuse(state.what, None)
        elif record.complete and record.key == self.key and self.join and not self.overwrite:
            self.mode = "resume"  # a step or share of this finished run again: its blocks are done
        elif record.complete:
            self._replace_or_refuse(state.what, record)
        elif record.key == self.key and (self.join or not self.overwrite):
            self.mode = "resume"
            log.info("resuming the unfinished run of `%s` on %s", record.command, uri)
        elif self.overwrite:
            self._replace(record)
        else:
            if self.explain_mismatch is not None:
                self.explain_mismatch(record)  # the stage may say what differs
            raise UserError(f"output {uri} holds the unfinished run `{record.command}` (started "
                            f"{record.started}), made with other options",
                            f"rerun `{record.command}` to finish it, or pass --overwrite to "
                            "replace it")
        if owner and self.mode == "fresh":
            for folder in self.scratch:  # files of an earlier run: before any share can join
                shutil.rmtree(folder, ignore_errors=True)
            self._write_running()
        elif owner and record is not None and not record.complete:
            self._write_running(started=record.started)  # resumed here, now

    def _wait_for_record(self, record: RunRecord | None) -> RunRecord | None:
        """A joined share waits until the share holding the lease has written the run record
        of this key (or has left the lease): it must never start the run afresh itself."""
        assert self.lease is not None
        deadline = time.monotonic() + JOIN_WAIT_S
        while record is None or record.key != self.key:
            holder = read_lease(self.lease.path)
            if (holder is None or holder.key != self.key or not self.lease.others()
                    or time.monotonic() > deadline):
                break  # the lease changed hands, or every other share left (without a record)
            time.sleep(0.05)
            record = read_run_record(self.uri)
        return record

    def _replace_or_refuse(self, what: str, record: RunRecord | None) -> None:
        if not self.overwrite:
            raise UserError(f"output {self.uri} already exists",
                            "pass --overwrite to replace it, or choose another output")
        self._replace(record)

    def _replace(self, record: RunRecord | None) -> None:
        if self.lease is not None and not self.lease.owner:
            raise UserError(f"cannot replace {self.uri} while another run writes it",
                            "wait for that run to finish")
        log.info("replacing %s (--overwrite)", self.uri)
        remove_output(self.uri)
        self.mode = "fresh"

    def _note_created_dirs(self, directory: Path) -> None:
        """Remember the directories this run creates (removed again by a fresh abort)."""
        directory = Path(os.path.abspath(directory))
        missing = []
        while not directory.exists() and directory.parent != directory:
            missing.append(directory)
            directory = directory.parent
        self._created_dirs = missing  # deepest first

    def _write_running(self, started: str | None = None) -> None:
        _write_record(self.uri, RunRecord(
            state="running", key=self.key, stage=self.stage, command=self.command,
            host=socket.gethostname(), pid=os.getpid(), started=started or _now(),
            pytc_version=__version__))

    # -- what the stage calls -------------------------------------------------------------
    @property
    def resuming(self) -> bool:
        return self.mode == "resume"

    def create(self, shape: Sequence[int], dtype: Any, *, restart: bool = False,
               **kwargs: Any) -> Volume:
        """Create the output volume (``create_volume`` arguments), or reopen it to resume.

        ``restart``: a stage that cannot resume starts an unfinished output of its own run
        again (the old volume is replaced).
        """
        if self.mode == "resume" and restart and (self.lease is None or self.lease.owner):
            state = inspect_output(self.uri)
            if state.kind == "volume":
                remove_output(self.uri)
                self._write_running()
            self.mode = "fresh"
        if self.mode == "resume" or self.lease is not None:
            # under a lease (local outputs), a share of this run that joined after the record
            # was written may create the volume first: the claim removed everything of other
            # runs, so a volume there now is this run's (the same shape and dtype, or refused)
            return create_volume(self.uri, shape, dtype, exist_ok=True, **kwargs)
        return create_volume(self.uri, shape, dtype, **kwargs)

    def open(self) -> Volume:
        """The output volume, open for writing (it is not complete yet)."""
        return open_volume(self.uri, fill_missing=True)

    def made_progress(self) -> None:
        """Finished work worth resuming exists: an interrupt keeps the partial output."""
        self._progress = True

    def complete(self) -> None:
        """Record that the output is complete (call after its last chunk is written)."""
        record = read_run_record(self.uri)
        if record is None or record.key != self.key:
            record = RunRecord(state="running", key=self.key, stage=self.stage,
                               command=self.command, host=socket.gethostname(),
                               pid=os.getpid(), started=_now())
        _write_record(self.uri, replace(record, state="complete", finished=_now()))
        self.completed = True

    # -- context manager ------------------------------------------------------------------
    def __enter__(self) -> OutputRun:
        if threading.current_thread() is threading.main_thread():
            stopping: list[int] = []

            def on_signal(signum, frame):
                if stopping:  # a second signal while the first one unwinds: finish that
                    return
                stopping.append(signum)
                raise Terminated(signum)

            for s in (signal.SIGTERM, signal.SIGUSR1):
                previous = signal.getsignal(s)
                if isinstance(previous, type(on_signal)) and previous.__qualname__ == \
                        on_signal.__qualname__:
                    continue  # an enclosing claim (several outputs of one run) handles it
                self._old_handlers[s] = signal.signal(s, on_signal)
        try:
            self._begin()
        except BaseException:
            self._finish(cleanup=False)
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        owner = self.lease is None or self.lease.owner
        cleanup = (exc is not None and self.mode == "fresh" and owner
                   and (isinstance(exc, UserError) or not self._progress))
        if exc is not None and not cleanup and self.mode == "fresh" and owner:
            log.info("%s is left unfinished; rerun `%s` to resume it", self.uri, self.command)
        self._finish(cleanup)

    def _finish(self, cleanup: bool) -> None:
        try:
            if cleanup:
                try:
                    remove_output(self.uri, keep_lease=True,
                                  remove_empty_file=not self._file_existed)
                except UserError as err:  # something else appeared there: leave it
                    log.warning("left %s as it is: %s", self.uri, err)
        finally:
            if self.lease is not None:
                self.lease.release()
            if cleanup:
                self._remove_created_dirs()
            for s, previous in self._old_handlers.items():
                signal.signal(s, previous)
            self._old_handlers = {}

    def _remove_created_dirs(self) -> None:
        for d in self._created_dirs:
            names = {e.name for e in os.scandir(d)} if d.is_dir() else set()
            if names and names <= {"zarr.json", ".zgroup", ".zattrs"}:  # groups made for a zarr output
                for name in names:
                    (d / name).unlink()
            try:
                d.rmdir()  # only when empty
            except OSError:
                pass


def claim_output(uri: str, *, stage: str, key: str, inputs: Sequence[str | None] = (),
                 overwrite: bool = False, join: bool = False, command: str | None = None,
                 explain_mismatch: Callable[[RunRecord], None] | None = None,
                 allow_same_file: bool = False,
                 scratch: Sequence[str | os.PathLike[str]] = ()) -> OutputRun:
    """Claim ``uri`` for one run (a context manager; see the module docstring).

    Runs the checks of :func:`pytc_core.output.check_output_target` (before any input data is
    read), takes the output's lease and decides whether this run starts afresh or resumes.
    ``stage`` names the stage (``decode``), ``key`` is the run's :func:`run_key`, ``inputs``
    the input URIs (an output that is an input is refused), ``join`` lets runs with the same
    key (shares of a blockwise run) work side by side, ``command`` is what the record and the
    error messages name as the command to resume (a stage passes
    :func:`pytc_core.cli.current_command`; default: this process's command line).
    ``explain_mismatch(record)`` is called before an unfinished output of another key is
    refused, so the stage can raise a UserError that says what differs.
    ``allow_same_file`` lets the output be another dataset of an input's HDF5 file
    (``--allow-same-file``). ``scratch``: folders of the run's intermediate files, emptied by a
    fresh start (only by the share that creates the lease, before it writes the run record;
    shares that join wait for that record).
    """
    return OutputRun(uri, stage=stage, key=key, inputs=inputs, overwrite=overwrite, join=join,
                     command=command, explain_mismatch=explain_mismatch,
                     allow_same_file=allow_same_file, scratch=scratch)
