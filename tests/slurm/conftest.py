"""A real Slurm on localhost for the `slurm` tests (tests/slurm/local-slurm.sh).

CI starts the cluster before `pytest -m slurm` and stops it after. Run alone, the session
fixture starts it itself (root only) and stops what it started. Without root and without
Slurm installed the tests skip, saying so.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

HERE = Path(__file__).parent
SCRIPT = HERE / "local-slurm.sh"
STANDINS = HERE / "standins"
BIN = Path(sys.executable).parent
CONF = Path(os.environ.get("PYTC_SLURM_DIR", "/tmp/pytc-local-slurm")) / "slurm.conf"


def _responds() -> bool:
    if shutil.which("sinfo") is None:
        return False
    proc = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True,
                          timeout=30, check=False)
    return proc.returncode == 0 and proc.stdout.strip() != ""


@pytest.fixture(scope="session")
def slurm_cluster():
    """A responding Slurm controller with an idle node; SLURM_CONF set for the clients."""
    if "SLURM_CONF" not in os.environ and CONF.is_file():
        os.environ["SLURM_CONF"] = str(CONF)
    if _responds():
        yield
        return
    if os.geteuid() != 0 and shutil.which("slurmctld") is None:
        pytest.skip("Slurm is not installed and installing it needs root: run "
                    "`sudo tests/slurm/local-slurm.sh start` first (or run as root)")
    subprocess.run(["bash", str(SCRIPT), "start"], check=True, timeout=600)
    os.environ["SLURM_CONF"] = str(CONF)
    try:
        yield
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop"], check=False, timeout=120)


def launch(*argv: str, env: dict | None = None, check: bool = True
           ) -> subprocess.CompletedProcess:
    """Run the real ``pytc-launch`` console script."""
    proc = subprocess.run([str(BIN / "pytc-launch"), *argv], capture_output=True, text=True,
                          env=env, timeout=300, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"pytc-launch {' '.join(argv)} failed ({proc.returncode}):\n"
                             f"{proc.stderr}")
    return proc


def wait_until_final(directory: Path, timeout: float, env: dict | None = None) -> list[dict]:
    """Poll the launch directory's status (in this process: one torch import, not one per
    poll) until every row is in a final state; the rows as ``status --json`` gives them."""
    from dataclasses import asdict

    from pytc_launch.status import wait_until_final as wait

    try:
        return [asdict(r) for r in wait(directory, timeout)]
    except TimeoutError as exc:
        rows = [asdict(r) for r in exc.args[1]]
    logs = "\n".join(Path(r["log"]).read_text() for r in rows
                     if r.get("log") and Path(r["log"]).is_file())
    raise AssertionError(f"jobs of {directory} not finished after {timeout} s: {rows}\n{logs}")


@pytest.fixture
def lt():
    """The helpers above for the tests (``lt.launch(...)``, ``lt.wait(...)``)."""
    return SimpleNamespace(launch=launch, wait=wait_until_final)


@pytest.fixture
def standin_env(tmp_path_factory) -> dict:
    """The environment with a stand-in ``pytc-train`` (fixed step time) first on PATH."""
    bin_dir = tmp_path_factory.mktemp("standin-bin")
    for name, module in (("pytc-train", "pytc_train_standin.py"),):
        exe = bin_dir / name
        exe.write_text(f"#!/bin/sh\nexec {sys.executable} {STANDINS / module} \"$@\"\n")
        exe.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{BIN}:{os.environ['PATH']}"}
