"""Fixtures shared by pytc-decode's tests."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest


def _finished(markers: Path) -> int:
    """Blocks marked finished: a kill during a marker's atomic write leaves only its hidden
    temporary file, which does not count."""
    return len([p for p in markers.iterdir() if not p.name.startswith(".")])


def kill_after(argv: list[str], markers: Path, total: int, *, at_least: int = 5,
               deadline_s: float = 120) -> int:
    """Run the real command ``argv``, SIGKILL it once ``at_least`` blocks are marked finished
    in ``markers`` (before it ends: asserted), and return how many were (asserted below
    ``total``)."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline and proc.poll() is None:
        if markers.exists() and _finished(markers) >= at_least:
            break
        time.sleep(0.002)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = _finished(markers)
    assert at_least <= done < total
    return done


def resume(argv: list[str], step: str, total: int, done: int, *,
           timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` (with ``-v``) again after :func:`kill_after`: it succeeds and its
    ``step`` processes exactly the blocks not finished before (at least ``done`` of them
    were)."""
    again = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    assert again.returncode == 0, again.stderr
    m = re.search(rf"{step}: (\d+) of {total} blocks processed, (\d+) done before",
                  again.stderr)
    assert m is not None, again.stderr
    assert int(m.group(2)) >= done and int(m.group(1)) == total - int(m.group(2))
    return again


@pytest.fixture
def killed_run() -> SimpleNamespace:
    """``kill(argv, markers, total)`` and ``resume(argv, step, total, done)``: a real run
    killed mid-way, then resumed (see :func:`kill_after`, :func:`resume`)."""
    return SimpleNamespace(kill=kill_after, resume=resume)
