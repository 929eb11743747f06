"""The `pytc-infer` command. NOT IMPLEMENTED YET: it arrives with the inference issue.

Until then the command exists (so `--help`/`--version` and the workspace layout are real)
but refuses to run, with exit code 2, rather than pretend to work.
"""

from __future__ import annotations

import sys

import cyclopts

from pytc_core.cli import run_entry_point
from pytc_core.errors import UserError
from pytc_infer import __version__

app = cyclopts.App(
    name="pytc-infer",
    help="Predict an affinity volume from a raw EM volume with a trained checkpoint (tiled, blended).\n\nNOT IMPLEMENTED YET: this command arrives with the inference issue.",
    version=__version__,
)


@app.default
def infer(*args: str) -> None:
    """Predict an affinity volume from a raw EM volume with a trained checkpoint (tiled, blended).

    Not implemented yet; it arrives with the inference issue.

    Example (once implemented)::

        pytc-infer --checkpoint run.ckpt --input raw.h5:raw | pytc-decode - | pytc-eval - --gt labels.h5:labels
    """
    raise UserError("pytc-infer is not implemented yet", "it arrives with the inference issue")


def main() -> None:
    sys.exit(run_entry_point("pytc-infer", app))
