"""Conventions every pytc command follows (the stages build their CLIs with cyclopts on top).

- A :class:`~pytc_core.errors.UserError` becomes one stderr line ``pytc-x: error: ...`` and exit 2.
- ``-`` as an input URI means "read the URI from the first line of stdin" (commands that
  take several inputs read every line: :func:`read_uris_from_stdin`).
- stdout carries only the result (an output URI or a JSON report), one line; logs and
  progress bars go to stderr.
- Every command's app comes from :func:`make_app` (no generated ``--empty-*``/``--no-*``
  flags) and runs through :func:`run_entry_point`, which names an unknown option or a stray
  argument together with the command's valid flags and the closest match.
"""

from __future__ import annotations

import difflib
import logging
import os
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar, cast

import cyclopts
from cyclopts import Parameter

from pytc_core.config import parse_set_options
from pytc_core.errors import UserError

__all__ = [
    "CommonFlags",
    "current_command",
    "emit",
    "parse_block_size",
    "make_app",
    "format_eta",
    "format_rate",
    "progress",
    "progress_counter",
    "read_uri_from_stdin",
    "read_uris_from_stdin",
    "resolve_input_uri",
    "resolve_input_uris",
    "run_entry_point",
    "setup_logging",
    "stderr_console",
]

T = TypeVar("T")
log = logging.getLogger("pytc")
#: exit code of a run stopped by SIGTERM/SIGUSR1, its finished work kept (as pytc-train's;
#: the same value as ``pytc_core.output_run.EXIT_REQUEUE``)
EXIT_REQUEUE = 75
_current_command: str | None = None  # set by run_entry_point; read by current_command()


def current_command() -> str:
    """The command line being run, as its user typed it (``pytc-decode aff -o seg``): what a
    stage passes to :func:`pytc_core.output_run.claim_output` as the command that resumes its
    output. Set by :func:`run_entry_point` (also in-process); else this process's argv."""
    if _current_command:
        return _current_command
    return shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])


def stderr_console():
    """A rich Console writing to stderr (imported lazily so ``--help`` stays fast)."""
    from rich.console import Console  # keeps --help fast: rich loads only to draw

    return Console(stderr=True, highlight=False)


class _CurrentStderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at emit time (tests and notebooks swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it; always use sys.stderr
        pass


#: the logger (and its children, e.g. ``pytc.progress.train``) of a long run's periodic
#: progress lines: shown under --quiet too, so that a quiet run of minutes is not a silent one
PROGRESS_LOGGER = "pytc.progress"


def setup_logging(quiet: bool = False, verbose: bool = False) -> None:
    """Send the ``pytc`` loggers to stderr: WARNING with --quiet, DEBUG with --verbose, else
    INFO; the progress lines of :data:`PROGRESS_LOGGER` at INFO also with --quiet."""
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    root = logging.getLogger("pytc")
    root.setLevel(level)
    logging.getLogger(PROGRESS_LOGGER).setLevel(min(level, logging.INFO))
    if not any(isinstance(h, _CurrentStderrHandler) for h in root.handlers):
        handler = _CurrentStderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(handler)
    for existing in root.handlers:  # the loggers' levels filter; the handler passes progress
        existing.setLevel(min(level, logging.INFO))
    root.propagate = False


@Parameter(name="*")
@dataclass(frozen=True)
class CommonFlags:
    """The flags every pytc command shares, defined once (a stage takes them as
    ``common: CommonFlags = CommonFlags()``; cyclopts flattens them into its flags)."""

    config: Annotated[str | None, Parameter(name="--config")] = None
    """TOML file with the options (the stage's own table, e.g. ``[decode]``, or the whole file)."""
    set_: Annotated[list[str] | None,
                    Parameter(name="--set", consume_multiple=True, negative_iterable=())] = None
    """Override any config key: ``--set key=value [key=value ...]`` (repeatable; values are
    TOML literals). Keys as in the file, dotted for tables (``decode.threshold``), the
    command's own table optional (``threshold``), bare when one table has the key. Flags win
    over the file, ``--set`` over flags."""
    overwrite: Annotated[bool, Parameter(name="--overwrite", negative="")] = False
    """Replace an existing output (only a volume pytc recognises)."""
    quiet: Annotated[bool, Parameter(name=["--quiet", "-q"], negative="")] = False
    """Only warnings, errors and a long run's progress lines (pytc-train's steps) on stderr."""
    verbose: Annotated[bool, Parameter(name=["--verbose", "-v"], negative="")] = False
    """Debug logging on stderr: resolved config, block plan, timings."""

    def setup_logging(self) -> None:
        """Configure the ``pytc`` loggers; ``-q`` with ``-v`` is a usage error."""
        if self.quiet and self.verbose:
            raise UserError("--quiet and --verbose contradict each other", "pass one of them")
        setup_logging(self.quiet, self.verbose)

    def text_overrides(self) -> dict[str, str]:
        """The ``--set`` options as ``{dotted key: text value}`` for ``resolve_config``."""
        return parse_set_options(self.set_)


def read_uris_from_stdin(stream=None) -> list[str]:
    """Every non-empty line of stdin, stripped (URIs printed by previous stages), in order."""
    stream = stream if stream is not None else sys.stdin
    if stream is None or (hasattr(stream, "isatty") and stream.isatty()):
        raise UserError("input '-' means read the URI from stdin, but stdin is a terminal",
                        "pipe a URI in, e.g. `pytc-infer ... | pytc-decode -`")
    uris = [line.strip() for line in stream if line.strip()]
    if not uris:
        raise UserError("input '-' means read the URI from stdin, but stdin was empty",
                        "check that the previous stage succeeded")
    return uris


def read_uri_from_stdin(stream=None) -> str:
    """The one URI on stdin (a previous stage's printed line); several lines are an error."""
    uris = read_uris_from_stdin(stream)
    if len(uris) > 1:
        shown = ", ".join(uris[:3]) + (", ..." if len(uris) > 3 else "")
        raise UserError(f"input '-' reads one URI from stdin, but stdin has {len(uris)} lines "
                        f"({shown})", "pipe exactly one URI in, or run the command once per URI")
    return uris[0]


def resolve_input_uri(uri: str) -> str:
    """``-`` → the URI read from stdin; anything else unchanged."""
    return read_uri_from_stdin() if uri == "-" else uri


def parse_block_size(text: str | int | Sequence[int] | None,
                     flag: str = "--block-size") -> tuple[int, int, int] | None:
    """A block size in voxels: ``128`` (a cube) or ``64,128,128`` (z, y, x) → ``(z, y, x)``.

    The one parser behind every ``--block-size`` flag (decode, eval, infer). ``None`` stays
    ``None``; ints and 3-sequences are accepted too (config values). Bad sizes raise UserError.
    """
    if text is None:
        return None
    if isinstance(text, int) and not isinstance(text, bool):
        parts: list[int] = [text]
    elif isinstance(text, str):
        try:
            parts = [int(p) for p in text.replace("x", ",").split(",")]
        except ValueError:
            parts = []
    else:
        try:
            parts = [int(p) for p in cast(Sequence[int], text)]
        except (TypeError, ValueError):
            parts = []
    if len(parts) == 1:
        parts = parts * 3
    if len(parts) != 3 or any(p <= 0 for p in parts):
        raise UserError(f"bad block size '{text}'", f"give one or three positive voxel counts, "
                        f"e.g. {flag} 128 or {flag} 64,128,128 (z, y, x)")
    return (parts[0], parts[1], parts[2])


def resolve_input_uris(uris: Sequence[str], stream=None) -> list[str]:
    """The inputs with ``-`` replaced by every URI on stdin (one per line), order kept.

    ``-`` may appear once (stdin can be read only once).
    """
    if list(uris).count("-") > 1:
        raise UserError("'-' (read URIs from stdin) is given more than once",
                        "give '-' once; it reads every line of stdin")
    out: list[str] = []
    for uri in uris:
        out.extend(read_uris_from_stdin(stream) if uri == "-" else [uri])
    return out


def emit(text: str) -> None:
    """Print the command's one-line result on stdout and flush."""
    sys.stdout.write(text.rstrip("\n") + "\n")
    sys.stdout.flush()


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def progress(items: Iterable[T], description: str, total: int | None = None,
             enabled: bool = True) -> Iterator[T]:
    """Iterate ``items`` with a rich progress bar on stderr.

    The bar is shown only when ``enabled`` and stderr is a terminal (logs and pipes stay clean;
    a bar that ends in an error is cleared, so the error stays the one line).
    """
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with progress_counter(description, total, enabled=enabled) as advance:
        for item in items:
            yield item
            advance()


def format_rate(voxels: float, seconds: float) -> str:
    """``voxels`` done in ``seconds`` as a rate with an SI prefix, e.g. ``"2.10 Mvox/s"``."""
    if seconds <= 0 or voxels <= 0:
        return "- vox/s"
    rate = voxels / seconds
    for prefix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if rate >= scale:
            return f"{rate / scale:.2f} {prefix}vox/s"
    return f"{rate:.1f} vox/s"


def format_eta(remaining_voxels: float, voxels: float, seconds: float) -> str:
    """Time left (``H:MM:SS``) at the average rate so far (``voxels`` in ``seconds``);
    ``-:--:--`` before the first voxel is done."""
    if seconds <= 0 or voxels <= 0:
        return "-:--:--"
    left = round(max(remaining_voxels, 0) * seconds / voxels)
    return f"{left // 3600}:{left // 60 % 60:02d}:{left % 60:02d}"


@contextmanager
def progress_counter(description: str, total: int | None, *, enabled: bool = True,
                     total_voxels: int | None = None) -> Iterator[Callable[..., None]]:
    """A rich progress bar on stderr counting ``total`` items (blocks); yields
    ``advance(voxels=0)``, to call once per finished item (from any thread).

    With ``total_voxels`` the bar also shows the voxels per second so far and the time left
    at that rate (each ``advance`` passes its item's voxels). Shown only when ``enabled`` and
    stderr is a terminal; a bar that ends in an error is cleared.
    """
    if not enabled or not getattr(sys.stderr, "isatty", lambda: False)():
        yield lambda voxels=0: None
        return
    from rich.progress import (  # keeps --help fast: rich loads only to draw a bar
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        Task,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text  # as above

    class VoxelRate(ProgressColumn):
        def render(self, task: Task) -> Text:
            return Text(format_rate(task.fields.get("voxels", 0), task.elapsed or 0.0))

    class VoxelEta(ProgressColumn):
        def render(self, task: Task) -> Text:
            done = task.fields.get("voxels", 0)
            return Text("ETA " + format_eta((total_voxels or 0) - done, done,
                                            task.elapsed or 0.0))

    columns: list[str | ProgressColumn] = [TextColumn("{task.description}"), BarColumn(),
                                           MofNCompleteColumn(), TimeElapsedColumn()]
    columns += ([VoxelRate(), VoxelEta()] if total_voxels is not None
                else [TimeRemainingColumn()])
    with Progress(*columns, console=stderr_console(), transient=True) as bar:
        task = bar.add_task(description, total=total, voxels=0)
        voxels_done = 0
        lock = threading.Lock()

        def advance(voxels: int = 0) -> None:
            nonlocal voxels_done
            with lock:
                voxels_done += voxels
                bar.update(task, advance=1, voxels=voxels_done)

        yield advance


def _conventions() -> Parameter:
    return Parameter(negative=(), negative_iterable=())


def make_app(name: str, version: str, **kwargs: Any):
    """A cyclopts ``App`` with pytc's conventions: no generated ``--empty-X`` / ``--no-X``
    flags (a stage that wants a negative flag names it on the parameter)."""
    kwargs.setdefault("default_parameter", _conventions())
    return cyclopts.App(name=name, version=version, **kwargs)


def _is_cyclopts_error(exc: BaseException) -> bool:
    return any(c.__name__ == "CycloptsError" for c in type(exc).__mro__)


def _command_arguments(app: Any, exc: BaseException) -> tuple[list[str], list[str]]:
    """(positional names, option names) the command that failed accepts, as --help shows."""
    collection = getattr(exc, "argument_collection", None)
    if collection is None:
        target = getattr(exc, "app", None) or app
        try:
            collection = target.assemble_argument_collection()
        except Exception:  # pragma: no cover - an app without a default command
            return [], []
    positional: list[str] = []
    options: list[str] = []
    for argument in collection:
        if argument.parameter.show is False or not argument.names:
            continue
        if argument.field_info.kind in (argument.field_info.POSITIONAL_ONLY,
                                        argument.field_info.VAR_POSITIONAL):
            several = argument.token_count()[1]  # a list: any number of them
            positional.append(argument.names[0] + ("..." if several else ""))
            continue
        options.extend(n for n in argument.names if n.startswith("-")
                       and not n.startswith(("--empty-", "--no-")))
    return positional, options


def _usage_message(prog: str, app: Any, exc: BaseException) -> str | None:
    """A one-line message for an unknown option or a stray argument, else None."""
    kind = type(exc).__name__
    if kind == "UnknownOptionError":
        token = exc.token  # type: ignore[attr-defined]
        bad = (token.keyword or token.value or "").split("=", 1)[0]
        what = f"unknown option '{bad}'"
    elif kind == "UnusedCliTokensError":
        tokens = [str(t) for t in (exc.unused_tokens or [])]  # type: ignore[attr-defined]
        if not tokens:
            return None
        bad = tokens[0]
        what = (f"unknown option '{bad}'" if bad.startswith("-") else
                f"unexpected argument '{bad}'")
        if len(tokens) > 1:
            what += f" (and {len(tokens) - 1} more: {' '.join(tokens[1:])})"
    else:
        return None
    positional, options = _command_arguments(app, exc)
    bare = {o.lstrip("-"): o for o in options}
    guess = difflib.get_close_matches(bad.lstrip("-"), list(bare), n=1, cutoff=0.6)
    hint = f"did you mean '{bare[guess[0]]}'? " if guess else ""
    takes = " ".join(positional)
    hint += f"{prog} takes {takes + ' and ' if takes else ''}the options {', '.join(options)}"
    if not bad.startswith("-") and any(p.endswith("...") for p in positional):
        hint += f"; give every {positional[0].removesuffix('...')} before the first option"
    return f"{what} ({hint}; see `{prog} --help`)"


def _stopped_by_signal(prog: str, exc: BaseException | None) -> bool:
    """Whether ``exc`` is ``output_run.Terminated`` (SIGTERM/SIGUSR1 in a claimed run, whose
    finished work is kept for the requeued job to resume); then it says so on stderr."""
    signum = getattr(exc, "signum", None)
    if not isinstance(exc, KeyboardInterrupt) or signum is None:
        return False
    sys.stderr.write(f"{prog}: stopped by {signal.Signals(signum).name}; finished blocks are "
                     "kept: rerun the same command to resume\n")  # (none, before a claim)
    return True


def run_entry_point(prog: str, app: Callable[..., Any], argv: Sequence[str] | None = None) -> int:
    """Run a cyclopts ``app`` as console script ``prog`` with pytc's error conventions.

    Returns the exit code: 0 on success, 2 on a user error (bad flags, bad input),
    75 when SIGUSR1 (anywhere) or SIGTERM (in a claimed run) stopped it, its finished blocks
    kept for the requeued job to resume, 130 on Ctrl-C, 141 when stdout is closed before the
    result is written (a pipe whose reader exited). Internal bugs propagate (a traceback, exit 1). An unknown option or a
    stray argument is named with the command's valid flags and the closest match.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    global _current_command
    _current_command = shlex.join([prog, *argv])  # what run records name as the command to resume
    if getattr(app, "default_parameter", False) is None:  # an app not made by make_app
        app.default_parameter = _conventions()  # type: ignore[attr-defined]
    previous_usr1 = None
    if (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL):
        # Slurm's time-limit warning before a run claimed its output (imports, planning):
        # stop like Ctrl-C with the requeue code instead of dying with 138 (pytc-train
        # installs its own handler first, which is kept)
        previous_usr1 = signal.signal(signal.SIGUSR1, _stop_on_usr1)
    try:
        return _run_app(prog, app, argv)
    finally:
        if previous_usr1 is not None:
            signal.signal(signal.SIGUSR1, previous_usr1)


class _StoppedBySignal(KeyboardInterrupt):
    """SIGUSR1 outside a claimed run (``output_run.Terminated`` inside one)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _stop_on_usr1(signum: int, frame: Any) -> None:
    raise _StoppedBySignal(signum)


def _run_app(prog: str, app: Callable[..., Any], argv: list[str]) -> int:
    try:
        result = app(argv, exit_on_error=False, print_error=False, help_on_error=False,
                     result_action="return_value")
    except UserError as exc:
        sys.stderr.write(f"{prog}: error: {exc}\n")
        return 2
    except KeyboardInterrupt as exc:
        if _stopped_by_signal(prog, exc):
            return EXIT_REQUEUE
        sys.stderr.write(f"{prog}: interrupted\n")
        return 130
    except BrokenPipeError:  # the next command of a pipe exited before reading the result
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes at exit
        sys.stderr.write(f"{prog}: error: stdout was closed before the result was written "
                         "(the next command in the pipe exited early: see its message)\n")
        return 141  # what a shell reports for a process ended by SIGPIPE
    except SystemExit as exc:  # cyclopts turns Ctrl-C into exit code 130
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if code == 130 and _stopped_by_signal(prog, exc.__context__):
            return EXIT_REQUEUE
        if code == 130:
            sys.stderr.write(f"{prog}: interrupted\n")
        return code
    except Exception as exc:
        if _is_cyclopts_error(exc):
            msg = _usage_message(prog, app, exc)
            if msg is None:
                msg = " ".join(str(exc).split()) + f" (see `{prog} --help`)"
            sys.stderr.write(f"{prog}: error: {msg}\n")
            return 2
        raise
    return result if isinstance(result, int) else 0
