"""``--method ws``: seeded watershed fragments + mean-affinity agglomeration.

Whole volume: :func:`pytc_decode.ws.affinity_watershed`, one segmentation per agglomeration
threshold from one pass. Blockwise (:mod:`pytc_decode.ws_blockwise`): fragments per block
grown with ``halo`` voxels of context, one agglomeration over every block's region graph,
relabel. Blockwise results are close to, **not identical with**, the whole-volume ``ws``:
fragments and their boundary scores differ near block faces (measured in the tests as a VOI
bound between the two).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

import numpy as np

from pytc_core.bbox import BBox
from pytc_core.errors import UserError
from pytc_decode.blockwise import BlockTables
from pytc_decode.cc import check_value_range
from pytc_decode.methods.base import DecodeMethod
from pytc_decode.ws_blockwise import WsBlockSummary, agglomerate_blocks, ws_fragment_block

if TYPE_CHECKING:
    from pytc_core.volume import Volume
    from pytc_decode.config import DecodeConfig

__all__ = ["WS", "WsMethod", "WsOptions"]


@dataclass(frozen=True)
class WsOptions:
    """``[decode.ws]``: options of the watershed + agglomeration."""

    #: merge fragments while ``1 - mean boundary affinity`` is below this, in [0, 1] (waterz's
    #: convention: higher merges more); several give one segmentation each from one pass
    agglomeration_threshold: tuple[float, ...] | float = (0.5,)
    #: seeds: maxima of the distance transform of the voxels none of whose edges is at or
    #: below ``seed_threshold``, one per ``seed_radius`` voxels; per z-section with
    #: ``seeds_2d`` (anisotropic data)
    seed_threshold: float = 0.5
    seed_radius: int = 2
    seeds_2d: bool = False
    #: initial edge scores: ``mean`` boundary affinity or its ``quantile``
    merge_function: Literal["mean", "quantile"] = "mean"
    quantile: float = 0.5
    #: blockwise: voxels of context around each block for its seeds and flooding
    halo: int = 8

    def __post_init__(self) -> None:
        if isinstance(self.agglomeration_threshold, int | float):
            object.__setattr__(self, "agglomeration_threshold",
                               (float(self.agglomeration_threshold),))

    @property
    def thresholds(self) -> tuple[float, ...]:
        """``agglomeration_threshold`` as a tuple (one or several thresholds)."""
        t = self.agglomeration_threshold
        return (float(t),) if isinstance(t, int | float) else tuple(t)


class WsMethod(DecodeMethod):
    """Seeded watershed + agglomeration; several thresholds give several outputs."""

    name = "ws"
    options_type = WsOptions
    blockwise = True

    def check(self, cfg: DecodeConfig, aff_vol: Volume) -> None:
        ws = cfg.ws
        thresholds = ws.thresholds
        if not thresholds:
            raise UserError("the list of agglomeration thresholds is empty",
                            "give one or more, e.g. --agglomeration-threshold 0.5 or 0.2,0.3,0.5")
        for t in thresholds:
            if not 0.0 <= t <= 1.0:  # also rejects NaN
                raise UserError(f"agglomeration threshold {t} is outside [0, 1]",
                                "use e.g. --agglomeration-threshold 0.5")
        if len(set(thresholds)) != len(thresholds):
            raise UserError(f"agglomeration thresholds {list(thresholds)} repeat a value",
                            "list each threshold once")
        if not 0.0 <= ws.seed_threshold <= 1.0:
            raise UserError(f"seed threshold {ws.seed_threshold} is outside [0, 1]",
                            "use e.g. --set ws.seed_threshold=0.5")
        if ws.seed_radius < 0:
            raise UserError(f"seed radius {ws.seed_radius} is negative", "use e.g. 2 (voxels)")
        if ws.halo < 0:
            raise UserError(f"ws halo {ws.halo} is negative", "use e.g. 8 (voxels)")
        if cfg.block_size is not None and len(thresholds) > 1:
            raise UserError("several agglomeration thresholds are whole-volume only",
                            "give one --agglomeration-threshold with --block-size (one run per "
                            "threshold)")
        if cfg.block_size is not None and ws.merge_function != "mean":
            raise UserError(f"merge_function {ws.merge_function} is whole-volume only",
                            "use merge_function = 'mean' with --block-size")
        if not 0.0 <= ws.quantile <= 1.0:
            raise UserError(f"quantile {ws.quantile} is outside [0, 1]", "use e.g. 0.5 (median)")

    def outputs(self, cfg: DecodeConfig) -> list[tuple[str, DecodeConfig]]:
        thresholds = cfg.ws.thresholds
        if len(thresholds) == 1:
            return [("", cfg)]
        # each output's config (and run key) holds its own threshold
        return [(f"_t{t:g}", replace(cfg, ws=replace(cfg.ws, agglomeration_threshold=(t,))))
                for t in thresholds]

    def segment(self, affinities: np.ndarray, mask: np.ndarray | None, cfg: DecodeConfig,
                voxel_size: Sequence[float]) -> list[np.ndarray]:
        from pytc_decode.ws import affinity_watershed

        ws = cfg.ws
        check_value_range(affinities[:3], "the first three channels")
        segs = affinity_watershed(
            affinities, list(ws.thresholds), seed_threshold=ws.seed_threshold,
            seed_radius=ws.seed_radius, seeds_2d=ws.seeds_2d, merge_function=ws.merge_function,
            quantile=ws.quantile, voxel_size=voxel_size, mask=mask, min_size=cfg.min_size,
            small=cfg.small)
        assert isinstance(segs, list)
        return segs

    fragments_output = True

    def fragments(self, affinities: np.ndarray, mask: np.ndarray | None, cfg: DecodeConfig,
                  voxel_size: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
        from pytc_decode.ws import ws_fragments

        ws = cfg.ws
        check_value_range(affinities[:3], "the first three channels")
        return ws_fragments(affinities, max(ws.thresholds), seed_threshold=ws.seed_threshold,
                            seed_radius=ws.seed_radius, seeds_2d=ws.seeds_2d,
                            merge_function=ws.merge_function, quantile=ws.quantile,
                            voxel_size=voxel_size, mask=mask)

    def segment_fragments(self, fragments: np.ndarray, history: np.ndarray,
                          affinities: np.ndarray | None, cfg: DecodeConfig) -> list[np.ndarray]:
        from pytc_decode.ws import segment_fragments

        return segment_fragments(fragments, history, list(cfg.ws.thresholds),
                                 affinities=affinities, min_size=cfg.min_size, small=cfg.small)

    def context(self, block: BBox, volume_box: BBox, cfg: DecodeConfig) -> BBox:
        return block.grow(cfg.ws.halo).intersect(volume_box)

    def label_block(self, affinities: np.ndarray, mask: np.ndarray | None, block: BBox,
                    context: BBox, volume_box: BBox, cfg: DecodeConfig,
                    voxel_size: Sequence[float]) -> tuple[np.ndarray, bytes]:
        ws = cfg.ws
        check_value_range(affinities[:3], "the first three channels")
        labels, summary = ws_fragment_block(
            affinities, context, block, volume_box, seed_threshold=ws.seed_threshold,
            seed_radius=ws.seed_radius, seeds_2d=ws.seeds_2d, voxel_size=voxel_size, mask=mask)
        return labels, summary.to_bytes()

    def reduce(self, summaries: Sequence[bytes], volume_box: BBox, cfg: DecodeConfig,
               dtype: np.dtype) -> BlockTables:
        return agglomerate_blocks([WsBlockSummary.from_bytes(s) for s in summaries],
                                  volume_box, cfg.ws.thresholds[0], cfg.min_size, dtype)


WS = WsMethod()
