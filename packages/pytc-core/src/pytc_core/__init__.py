"""pytc-core: the shared library of pytc.

Volume I/O by URI (:func:`open_volume`, :func:`create_volume`), bounding boxes and block plans,
typed TOML config, CLI conventions, training targets (affinities), synthetic EM volumes, and
the model zoo (:mod:`pytc_core.models`, imported on demand because it pulls in torch).
Axis order everywhere: spatial (z, y, x), channels first; voxel sizes in nm.

:func:`open_volume` here is the one every stage opens its inputs with: it refuses the output
of a pytc run that did not finish (:func:`pytc_core.output_run.open_input`);
:func:`pytc_core.volume.open_volume` is the same I/O without that check. The layers of this
package are described in its README.md.
"""

from pytc_core.bbox import BBox
from pytc_core.blocks import BlockProgress, parse_share, plan_blocks, select_share
from pytc_core.config import save_config_next_to
from pytc_core.errors import UserError
from pytc_core.output_run import open_input
from pytc_core.version import __version__
from pytc_core.volume import (
    Volume,
    create_volume,
    require_channels,
    require_finite,
    require_integer_labels,
    volume_exists,
)

#: open a volume, refusing an unfinished pytc output (see the module docstring)
open_volume = open_input


__all__ = [
    "BBox",
    "BlockProgress",
    "UserError",
    "Volume",
    "__version__",
    "create_volume",
    "open_volume",
    "parse_share",
    "plan_blocks",
    "require_channels",
    "require_finite",
    "require_integer_labels",
    "save_config_next_to",
    "select_share",
    "volume_exists",
]
