"""Conventions every pytc command follows (the stages build their CLIs with cyclopts on top).

- A :class:`~pytc_core.errors.UserError` becomes one stderr line ``pytc-x: error: ...`` and exit 2.
- ``-`` as an input URI means "read the URI from the first line of stdin".
- stdout carries only the result (an output URI or a JSON report), one line; logs and
  progress bars go to stderr.
"""

from __future__ import annotations

import logging
import shlex
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from cyclopts import Parameter

from pytc_core.errors import UserError

__all__ = [
    "CommonFlags",
    "emit",
    "parse_block_size",
    "progress",
    "read_uri_from_stdin",
    "read_uris_from_stdin",
    "resolve_input_uri",
    "run_entry_point",
    "setup_logging",
    "stderr_console",
]

T = TypeVar("T")
log = logging.getLogger("pytc")
_current_command: str | None = None  # set by run_entry_point (see pytc_core.output_run)


def stderr_console():
    """A rich Console writing to stderr (imported lazily so ``--help`` stays fast)."""
    from rich.console import Console

    return Console(stderr=True, highlight=False)


class _CurrentStderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at emit time (tests and notebooks swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it; always use sys.stderr
        pass


def setup_logging(quiet: bool = False, verbose: bool = False) -> None:
    """Send the ``pytc`` loggers to stderr: WARNING with --quiet, DEBUG with --verbose, else INFO."""
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    root = logging.getLogger("pytc")
    root.setLevel(level)
    if not any(isinstance(h, _CurrentStderrHandler) for h in root.handlers):
        handler = _CurrentStderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(handler)
    for handler in root.handlers:
        handler.setLevel(level)
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
    """Override any config key: ``--set key=value [key=value ...]`` (repeatable; dotted keys
    for tables; values are TOML literals). Flags win over the file, ``--set`` over flags."""
    overwrite: Annotated[bool, Parameter(name="--overwrite", negative="")] = False
    """Replace an existing output (only a volume pytc recognises)."""
    quiet: Annotated[bool, Parameter(name=["--quiet", "-q"], negative="")] = False
    """Warnings and errors only on stderr."""
    verbose: Annotated[bool, Parameter(name=["--verbose", "-v"], negative="")] = False
    """Debug logging on stderr: resolved config, block plan, timings."""

    def setup_logging(self) -> None:
        """Configure the ``pytc`` loggers; ``-q`` with ``-v`` is a usage error."""
        if self.quiet and self.verbose:
            raise UserError("--quiet and --verbose contradict each other", "pass one of them")
        setup_logging(self.quiet, self.verbose)

    def text_overrides(self) -> dict[str, str]:
        """The ``--set`` options as ``{dotted key: text value}`` for ``resolve_config``."""
        from pytc_core.config import parse_set_options

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
            parts = [int(p) for p in text]
        except (TypeError, ValueError):
            parts = []
    if len(parts) == 1:
        parts = parts * 3
    if len(parts) != 3 or any(p <= 0 for p in parts):
        raise UserError(f"bad block size '{text}'", f"give one or three positive voxel counts, "
                        f"e.g. {flag} 128 or {flag} 64,128,128 (z, y, x)")
    return (parts[0], parts[1], parts[2])


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
    if not enabled or not getattr(sys.stderr, "isatty", lambda: False)():
        yield from items
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=stderr_console(),
                  transient=True) as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)


def _is_cyclopts_error(exc: BaseException) -> bool:
    return any(c.__name__ == "CycloptsError" for c in type(exc).__mro__)


def run_entry_point(prog: str, app: Callable[..., Any], argv: Sequence[str] | None = None) -> int:
    """Run a cyclopts ``app`` as console script ``prog`` with pytc's error conventions.

    Returns the exit code: 0 on success, 2 on a user error (bad flags, bad input),
    130 on Ctrl-C. Internal bugs propagate (a traceback, exit 1).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    global _current_command
    _current_command = shlex.join([prog, *argv])  # what run records name as the command to resume
    try:
        result = app(argv, exit_on_error=False, print_error=False, help_on_error=False,
                     result_action="return_value")
    except UserError as exc:
        sys.stderr.write(f"{prog}: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(f"{prog}: interrupted\n")
        return 130
    except SystemExit as exc:  # cyclopts turns Ctrl-C into exit code 130
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if code == 130:
            sys.stderr.write(f"{prog}: interrupted\n")
        return code
    except Exception as exc:
        if _is_cyclopts_error(exc):
            msg = " ".join(str(exc).split())
            sys.stderr.write(f"{prog}: error: {msg} (see `{prog} --help`)\n")
            return 2
        raise
    return result if isinstance(result, int) else 0
