"""Every console script exists, answers --help and --version, and keeps stdout clean."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

COMMANDS = ["pytc-train", "pytc-infer", "pytc-decode", "pytc-eval", "pytc-launch"]
BIN = Path(sys.executable).parent


def run(*argv: str) -> subprocess.CompletedProcess:
    exe = BIN / argv[0]
    assert exe.exists() or shutil.which(argv[0]), f"console script {argv[0]} is not installed"
    return subprocess.run([str(exe), *argv[1:]], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_and_version(command):
    helped = run(command, "--help")
    assert helped.returncode == 0, helped.stderr
    assert f"Usage: {command}" in helped.stdout
    assert "--empty-" not in helped.stdout  # cyclopts' generated flags stay hidden
    version = run(command, "--version")
    assert version.returncode == 0 and version.stdout.strip() == "0.1.0"
