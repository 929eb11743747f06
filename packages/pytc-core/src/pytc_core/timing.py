"""Seconds per phase of a run (``-v`` prints them; results carry them)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["PhaseTimer"]


class PhaseTimer:
    """Wall-clock seconds spent in each named phase, in the order the phases first ran; a
    phase entered again adds to its total.

    ``timings`` may be a dict to fill (shared with a caller); ``log`` gets one debug line per
    finished phase (``phase <name>: <s> s``).
    """

    def __init__(self, timings: dict[str, float] | None = None,
                 log: logging.Logger | None = None) -> None:
        self.timings: dict[str, float] = {} if timings is None else timings
        self._log = log

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the ``with`` block as phase ``name`` (also when it raises)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start
            if self._log is not None:
                self._log.debug("phase %s: %.2f s", name, self.timings[name])

    def line(self) -> str:
        """``"read 0.12 s, segment 3.40 s"``: every phase's total, in order."""
        return ", ".join(f"{name} {seconds:.2f} s" for name, seconds in self.timings.items())
