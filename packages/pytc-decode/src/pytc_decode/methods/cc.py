"""``--method cc``: connected components of the above-threshold edges (the default).

Whole volume: :func:`pytc_decode.cc.affinity_cc`. Blockwise: each block labelled on its own
(:func:`pytc_decode.blockwise.label_block`), one union-find across the faces
(:func:`pytc_decode.blockwise.reduce_blocks_streaming`), relabel: the result is identical to the
whole-volume decode for every block size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from pytc_core.bbox import BBox
from pytc_core.errors import UserError
from pytc_decode.blockwise import (
    BlockSummary,
    BlockTables,
    label_block,
    reduce_blocks_streaming,
)
from pytc_decode.cc import affinity_cc
from pytc_decode.methods.base import DecodeMethod
from pytc_decode.scratch import BlockFiles

if TYPE_CHECKING:
    from pytc_core.volume import Volume
    from pytc_decode.config import DecodeConfig

__all__ = ["CC", "CcMethod", "CcOptions", "check_threshold"]


@dataclass(frozen=True)
class CcOptions:
    """``[decode.cc]``: options of connected components."""

    #: edges with affinity strictly above this join their voxels, in [0, 1]
    threshold: float = 0.5


def check_threshold(threshold: float) -> None:
    """UserError for an edge threshold outside [0, 1] (or NaN)."""
    if not 0.0 <= threshold <= 1.0:
        raise UserError(f"threshold {threshold} is outside [0, 1]", "use e.g. --threshold 0.5")


class CcMethod(DecodeMethod):
    """Connected components of the nearest-neighbour edges above ``threshold``."""

    name = "cc"
    options_type = CcOptions
    blockwise = True

    def check(self, cfg: DecodeConfig, aff_vol: Volume) -> None:
        check_threshold(cfg.cc.threshold)

    def segment(self, affinities: np.ndarray, mask: np.ndarray | None, cfg: DecodeConfig,
                voxel_size: Sequence[float]) -> list[np.ndarray]:
        return [affinity_cc(affinities, cfg.cc.threshold, cfg.min_size, mask=mask,
                            small=cfg.small)]

    def label_block(self, affinities: np.ndarray, mask: np.ndarray | None, block: BBox,
                    context: BBox, volume_box: BBox, cfg: DecodeConfig,
                    voxel_size: Sequence[float]) -> tuple[np.ndarray, bytes]:
        labels, summary = label_block(affinities, cfg.cc.threshold, block, volume_box, mask)
        return labels, summary.to_bytes()

    def reduce(self, summaries: Sequence[bytes], volume_box: BBox, cfg: DecodeConfig,
               dtype: np.dtype) -> BlockTables:
        # one summary in memory at a time: ``summaries`` may read its files lazily
        blocks = [BlockSummary.from_bytes(summaries[i]).bbox for i in range(len(summaries))] \
            if not isinstance(summaries, BlockFiles) else summaries.blocks
        return reduce_blocks_streaming(blocks, lambda i: BlockSummary.from_bytes(summaries[i]),
                                       volume_box, cfg.min_size, dtype)


#: the method object (one per process; it holds no state)
CC = CcMethod()
