"""The ``pytc-train`` command. Only ``--list-archs`` works so far: training itself (and its
``--init-from run.ckpt``, ``--init-from dkfz.pth``, ``--upkern`` flags) arrives with the
training issue; every other invocation says so and exits 2 instead of pretending to train.
"""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import cyclopts
from cyclopts import Parameter

from pytc_core.cli import emit, run_entry_point, setup_logging
from pytc_core.errors import UserError
from pytc_train import __version__

log = logging.getLogger("pytc.train")

app = cyclopts.App(name="pytc-train", version=__version__)


def _channels_from_config(config: str | None) -> tuple[int, int]:
    if config is None:
        return 1, 3
    from pytc_core.config import load_toml

    data = load_toml(config)
    model = data.get("model", {}) if isinstance(data.get("model", {}), dict) else {}
    channels = []
    for key, default in (("in_channels", 1), ("out_channels", 3)):
        value = model.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"{config}: model.{key} must be a positive integer, got {value!r}",
                            "fix the [model] table")
        channels.append(value)
    return channels[0], channels[1]


@app.default
def train(
    *tokens: Annotated[str, Parameter(allow_leading_hyphen=True, show=False)],
    list_archs: Annotated[bool, Parameter(name="--list-archs", negative="")] = False,
    config: Annotated[str | None, Parameter(name="--config")] = None,
    quiet: Annotated[bool, Parameter(name=["--quiet", "-q"], negative="")] = False,
    verbose: Annotated[bool, Parameter(name=["--verbose", "-v"], negative="")] = False,
) -> int:
    """Train an affinity model. NOT IMPLEMENTED YET: only ``--list-archs`` works.

    Training (and ``--init-from run.ckpt``, ``--init-from dkfz.pth``, ``--upkern``) arrives
    with the training issue; until then any other invocation exits with code 2 and says so.
    ``--list-archs`` prints every architecture of the model zoo (``pytc_core.models``) with
    its parameter count for the default ``[model]`` config (1 input channel, 3 affinity
    outputs), one per line on stdout: name, parameters, summary; each MedNeXt size and
    kernel is listed as ``mednext/<size>/k<kernel>``.

    Examples::

        pytc-train --list-archs
        pytc-train --list-archs --config run.toml   # channels of its [model]

    Parameters
    ----------
    list_archs
        Print the architectures with parameter counts and exit.
    config
        TOML file; with ``--list-archs`` its ``[model]`` ``in_channels`` / ``out_channels``
        are used for the counts.
    quiet
        Warnings only on stderr.
    verbose
        Debug logging on stderr.
    """
    setup_logging(quiet, verbose)
    if not list_archs or tokens:
        raise UserError("training is not implemented yet", "see the training issue")
    in_channels, out_channels = _channels_from_config(config)
    from pytc_core.models import describe_architectures

    rows = describe_architectures(in_channels, out_channels)
    width = max(len(name) for name, _, _ in rows)
    emit("\n".join(f"{name:<{width}}  {params:>11,}  {summary}" for name, params, summary in rows))
    log.debug("counted %d architectures for %d -> %d channels", len(rows), in_channels,
              out_channels)
    return 0


def main() -> None:
    sys.exit(run_entry_point("pytc-train", app))


if __name__ == "__main__":
    main()
