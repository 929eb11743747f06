"""Signals that arrive before training starts.

Slurm's ``--signal=B:USR1@grace`` may come up to a minute early, and pytc-train spends
seconds (imports, data setup) before its training loop installs the handlers that save
``last.ckpt``. The console script records SIGUSR1/SIGTERM from its first instruction on
(:func:`catch_early_signals`); the run takes the recorded signal over when its own handlers
start (:func:`take_early_signal`) and stops after its first step, saving ``last.ckpt`` and
exiting with the requeue code, instead of dying unsaved. Light: no torch import.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

__all__ = ["catch_early_signals", "take_early_signal"]

_pending: list[int] = []


def _record(signum: int, frame: Any) -> None:
    _pending.append(signum)


def catch_early_signals() -> None:
    """Record SIGUSR1 and SIGTERM until the training loop installs its own handlers."""
    if threading.current_thread() is threading.main_thread():
        for s in (signal.SIGUSR1, signal.SIGTERM):
            signal.signal(s, _record)


def take_early_signal() -> int | None:
    """The first signal recorded before training started (then forgotten), or None."""
    signum = _pending[0] if _pending else None
    _pending.clear()
    return signum
