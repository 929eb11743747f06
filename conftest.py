"""Fixtures shared by every package's tests (importlib mode cannot import a conftest, so
helpers are handed out as fixtures)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

# N processes import once, then run each phase together: a file gate opens every phase at the
# same moment in all of them (``null``: this process sits the phase out)
_GATED = """
import json, sys, time
from pathlib import Path
from pytc_core.cli import run_entry_point
from importlib import import_module
prog, module, gate, name, phases = sys.argv[1], sys.argv[2], Path(sys.argv[3]), sys.argv[4], json.loads(sys.argv[5])
app = import_module(module).app
for k, argv in enumerate(phases):
    (gate / f"ready_{k}_{name}").touch()
    while not (gate / f"go_{k}").exists():
        time.sleep(0.002)
    print(f"--- phase {k}", file=sys.stderr, flush=True)
    code = 0 if argv is None else run_entry_point(prog, app, argv)
    sys.stderr.flush()
    (gate / f".rc_{k}_{name}").write_text(str(code))
    (gate / f".rc_{k}_{name}").rename(gate / f"rc_{k}_{name}")  # complete when it appears
"""


@dataclass
class GatedRun:
    #: exit codes, [phase][process]
    codes: list[list[int]]
    #: each process's stderr (phases separated by ``--- phase K`` lines)
    stderr: list[str]

    def report(self) -> str:
        """The stderr of every process that exited non-zero in some phase."""
        bad = sorted({i for phase in self.codes for i, c in enumerate(phase) if c != 0})
        return "\n".join(f"process {i}:\n{self.stderr[i]}" for i in bad)


def _run_gated(tmp_path: Path, prog: str, module: str,
               phases_per_process: list[list[list[str] | None]]) -> GatedRun:
    """Run each process's phases in lockstep with the others' (command lines of ``prog``, whose
    cyclopts app is ``module.app``)."""
    gate = tmp_path / f"gate{time.monotonic_ns()}"
    gate.mkdir()
    logs = [gate / f"stderr_{i}.txt" for i in range(len(phases_per_process))]
    procs = []
    for i, phases in enumerate(phases_per_process):
        with open(logs[i], "w") as err:  # a file, not a pipe: a full pipe would block the run
            procs.append(subprocess.Popen(
                [sys.executable, "-c", _GATED, prog, module, str(gate), str(i), json.dumps(phases)],
                stdout=subprocess.DEVNULL, stderr=err))
    n, codes = len(procs), []
    try:
        for k in range(len(phases_per_process[0])):
            deadline = time.monotonic() + 300
            for what in ("ready", "rc"):
                while len(list(gate.glob(f"{what}_{k}_*"))) < n:
                    died = [i for i, p in enumerate(procs)
                            if p.poll() is not None and not (gate / f"rc_{k}_{i}").exists()]
                    assert not died, f"phase {k}: {logs[died[0]].read_text()}"
                    assert time.monotonic() < deadline, f"phase {k} hangs"
                    time.sleep(0.005)
                if what == "ready":
                    (gate / f"go_{k}").touch()  # every process starts the phase now
            codes.append([int((gate / f"rc_{k}_{i}").read_text()) for i in range(n)])
    finally:
        for i, p in enumerate(procs):
            p.wait(timeout=120)
            assert p.returncode == 0, logs[i].read_text()
    return GatedRun(codes, [log.read_text() for log in logs])


@pytest.fixture(scope="session")
def run_gated():
    """``run_gated(tmp_path, prog, module, phases_per_process) -> GatedRun``: processes that
    each run a list of command lines, phase k starting in all of them at the same moment."""
    return _run_gated
