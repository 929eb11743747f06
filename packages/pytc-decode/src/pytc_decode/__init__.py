"""pytc-decode: affinities to a segmentation (Numba connected components, blockwise decoding).

Arrays are channels first, spatial axes (z, y, x); sizes in voxels.
"""

from importlib.metadata import PackageNotFoundError, version

from pytc_decode.blockwise import (
    BlockSummary,
    BlockTables,
    affinity_cc_blockwise,
    label_block,
    reduce_blocks,
    relabel_block,
)
from pytc_decode.cc import affinity_cc, label_dtype, merge_small, relabel_consecutive

try:
    __version__ = version("pytc-decode")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "BlockSummary",
    "BlockTables",
    "__version__",
    "affinity_cc",
    "affinity_cc_blockwise",
    "label_block",
    "label_dtype",
    "merge_small",
    "reduce_blocks",
    "relabel_block",
    "relabel_consecutive",
]
