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
    assert _shows_an_example(helped.stdout, command), helped.stdout
    version = run(command, "--version")
    assert version.returncode == 0 and version.stdout.strip() == "0.1.0"


def _shows_an_example(text: str, command: str) -> bool:
    """An ``Example(s)::`` block with at least one line that runs ``command``."""
    _, found, rest = text.partition("Example")
    return bool(found) and any(line.strip().startswith(command + " ")
                               or f"| {command} " in line for line in rest.splitlines())


SUBCOMMANDS = [("pytc-eval", "serve"), ("pytc-eval", "view"), ("pytc-launch", "train"), ("pytc-launch", "sweep"),
               ("pytc-launch", "status"), ("pytc-launch", "cancel"), ("pytc-launch", "resubmit"),
               ("pytc-launch", "blocks"), ("pytc-launch", "blocks infer"),
               ("pytc-launch", "blocks decode"), ("pytc-launch", "blocks eval")]


def test_every_subcommand_is_listed_here():
    from pytc_eval.cli import app as eval_app
    from pytc_launch.cli import app as launch_app

    def names(app, prefix=""):
        out = []
        for name in app:
            if name.startswith("-"):
                continue
            out.append(prefix + name)
            out += names(app[name], prefix + name + " ")
        return out

    listed = {(c, s) for c, s in SUBCOMMANDS}
    assert {("pytc-eval", n) for n in names(eval_app)} | \
        {("pytc-launch", n) for n in names(launch_app)} == listed


@pytest.mark.parametrize(("command", "sub"), SUBCOMMANDS)
def test_subcommand_help_shows_an_example(command, sub, capsys):
    import importlib

    from pytc_core.cli import run_entry_point

    app = importlib.import_module(f"pytc_{command.removeprefix('pytc-')}.cli").app
    assert run_entry_point(command, app, [*sub.split(), "--help"]) == 0
    out = capsys.readouterr().out
    assert f"Usage: {command} {sub}" in out
    assert _shows_an_example(out, f"{command} {sub}"), out
