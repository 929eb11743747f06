"""pytc-core: the shared library of pytc.

Volume I/O by URI (:func:`open_volume`, :func:`create_volume`), bounding boxes and block plans,
typed TOML config, CLI conventions, training targets (affinities), synthetic EM volumes, and
the model zoo (:mod:`pytc_core.models`, imported on demand because it pulls in torch).
Axis order everywhere: spatial (z, y, x), channels first; voxel sizes in nm.
"""

from importlib.metadata import PackageNotFoundError, version

from pytc_core.bbox import BBox
from pytc_core.blocks import BlockProgress, parse_share, plan_blocks, select_share
from pytc_core.config import save_config_next_to
from pytc_core.errors import UserError
from pytc_core.volume import (
    Volume,
    create_volume,
    open_volume,
    require_channels,
    require_finite,
    require_integer_labels,
    volume_exists,
)

try:
    __version__ = version("pytc-core")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"


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
