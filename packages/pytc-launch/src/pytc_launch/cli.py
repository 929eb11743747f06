"""The `pytc-launch` command. NOT IMPLEMENTED YET: it arrives with the Slurm launch issue.

Until then the command exists (so `--help`/`--version` and the workspace layout are real)
but refuses to run, with exit code 2, rather than pretend to work.
"""

from __future__ import annotations

import sys

import cyclopts

from pytc_core.cli import run_entry_point
from pytc_core.errors import UserError
from pytc_launch import __version__

app = cyclopts.App(
    name="pytc-launch",
    help="Launch training, inference and decoding runs on Slurm: job arrays, sweeps, auto-requeue.\n\nNOT IMPLEMENTED YET: this command arrives with the Slurm launch issue.",
    version=__version__,
)


@app.default
def launch(*args: str) -> None:
    """Launch training, inference and decoding runs on Slurm: job arrays, sweeps, auto-requeue.

    Not implemented yet; it arrives with the Slurm launch issue.

    Example (once implemented)::

        pytc-launch sweep sweep.toml
    """
    raise UserError("pytc-launch is not implemented yet", "it arrives with the Slurm launch issue")


def main() -> None:
    sys.exit(run_entry_point("pytc-launch", app))
