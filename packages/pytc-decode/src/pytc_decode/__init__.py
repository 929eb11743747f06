"""pytc-decode: affinities to a segmentation (Numba connected components, blockwise decoding).

Arrays are channels first, spatial axes (z, y, x); sizes in voxels. Names are imported on
first use (PEP 562), so ``pytc-decode --help`` does not load numba.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from pytc_core.lazy import lazy_exports

try:
    __version__ = version("pytc-decode")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

_EXPORTS = {
    "affinity_cc": "cc",
    "label_dtype": "cc",
    "merge_small": "cc",
    "relabel_consecutive": "cc",
    "BlockSummary": "blockwise",
    "BlockTables": "blockwise",
    "affinity_cc_blockwise": "blockwise",
    "label_block": "blockwise",
    "reduce_blocks": "blockwise",
    "relabel_block": "blockwise",
    "DecodeConfig": "config",
    "DecodeStats": "stats",
    "DecodeResult": "stage",
    "run_decode": "stage",
    "DecodeMethod": "methods",
    "mutex_watershed": "mws",
    "affinity_watershed": "ws",
}

__all__ = [
    "__version__",
    "BlockSummary",
    "BlockTables",
    "DecodeConfig",
    "DecodeMethod",
    "DecodeResult",
    "DecodeStats",
    "affinity_cc",
    "affinity_watershed",
    "affinity_cc_blockwise",
    "label_block",
    "label_dtype",
    "merge_small",
    "mutex_watershed",
    "reduce_blocks",
    "relabel_block",
    "relabel_consecutive",
    "run_decode",
]


if TYPE_CHECKING:
    from pytc_decode.blockwise import (
        BlockSummary,
        BlockTables,
        affinity_cc_blockwise,
        label_block,
        reduce_blocks,
        relabel_block,
    )
    from pytc_decode.cc import affinity_cc, label_dtype, merge_small, relabel_consecutive
    from pytc_decode.config import DecodeConfig
    from pytc_decode.methods import DecodeMethod
    from pytc_decode.mws import mutex_watershed
    from pytc_decode.stage import DecodeResult, run_decode
    from pytc_decode.stats import DecodeStats
    from pytc_decode.ws import affinity_watershed

__getattr__, __dir__ = lazy_exports("pytc_decode", _EXPORTS)
