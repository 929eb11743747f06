"""PhaseTimer: seconds per phase, on a fake clock."""

from __future__ import annotations

import logging

import pytest

from pytc_core import timing
from pytc_core.timing import PhaseTimer


def test_phases_add_up_in_order(monkeypatch, caplog):
    ticks = iter([0.0, 1.5, 2.0, 2.25, 10.0, 13.0])
    monkeypatch.setattr(timing.time, "perf_counter", lambda: next(ticks))
    shared: dict[str, float] = {"before": 4.0}
    timer = PhaseTimer(shared, log=logging.getLogger("pytc.test"))
    with caplog.at_level(logging.DEBUG, logger="pytc.test"):
        with timer.phase("read"):
            pass
        with timer.phase("segment"):
            pass
        with pytest.raises(RuntimeError), timer.phase("read"):  # a phase that raises counts
            raise RuntimeError("boom")
    assert timer.timings is shared
    assert shared == {"before": 4.0, "read": 4.5, "segment": 0.25}
    assert timer.line() == "before 4.00 s, read 4.50 s, segment 0.25 s"
    assert [r.getMessage() for r in caplog.records] == [
        "phase read: 1.50 s", "phase segment: 0.25 s", "phase read: 4.50 s"]
