"""``--method ws``: seeded watershed fragments + mean-affinity agglomeration.

Whole volume: :func:`pytc_decode.ws.affinity_watershed`, one segmentation per agglomeration
threshold from one pass. Blockwise (:mod:`pytc_decode.ws_blockwise`): fragments per cell of
the fragment grid (``ws.fragment_block``, default 128 voxels per axis), each cell grown with
``halo`` voxels of context (default 16), one agglomeration over every block's region graph,
relabel. The whole-volume run computes its fragments on the same grid, so a blockwise run
(block sizes multiples of the grid, else a one-line error) gives **the same partition** (VOI
0.0) by construction. With ``ws.fragment_block = 0`` the whole volume grows its fragments
unbounded and a blockwise run takes its blocks as the cells (it then equals the
whole-volume run with ``fragment_block`` = its block size).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from pytc_core.bbox import BBox, vec3
from pytc_core.errors import UserError
from pytc_decode.blockwise import BlockTables
from pytc_decode.cc import check_value_range
from pytc_decode.methods.base import DecodeMethod
from pytc_decode.ws_blockwise import (
    DEFAULT_FRAGMENT_BLOCK,
    DEFAULT_HALO,
    WsBlockSummary,
    agglomerate_blocks,
    agglomerate_blocks_at,
    check_block_grid,
    fragment_grid,
    fragments_blocks,
    joins_seeds,
    ws_fragment_block,
)
from pytc_decode.ws_hierarchy import morton_order

if TYPE_CHECKING:
    from pytc_core.merge_history import MergeHistory
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
    #: voxels of context around each grid cell (or block) for its seeds and flooding
    halo: int = DEFAULT_HALO
    #: the fixed fragment grid (voxels per cell, z y x, or one for all): fragments are grown
    #: per cell plus ``halo``, whole volume and blockwise alike, so the two are equal; block
    #: sizes must be multiples of it. 0: whole volume unbounded, blockwise the block size
    fragment_block: tuple[int, int, int] | int = DEFAULT_FRAGMENT_BLOCK
    #: with a fragment grid: the pieces of one watershed basin that a cell face cuts (both
    #: cells' contexts found its seed) are joined before any other merge. Measured on FlyEM
    #: with synthetic defects: better with 64-voxel cells, worse with 16-32 (bench_ws_grid)
    join_seeds: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.agglomeration_threshold, int | float):
            object.__setattr__(self, "agglomeration_threshold",
                               (float(self.agglomeration_threshold),))

    @property
    def grid(self) -> tuple[int, int, int] | None:
        """``fragment_block`` as (z, y, x) voxels, or None when 0 (no fixed grid)."""
        g = self.fragment_block
        if not isinstance(g, int) and len(tuple(g)) != 3:
            raise UserError(f"ws fragment_block {g} needs one or three values",
                            "use e.g. --set ws.fragment_block=64")
        return fragment_grid(g)

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
        grid = ws.grid
        if grid is not None and any(g <= 0 for g in grid):
            raise UserError(f"ws fragment_block {ws.fragment_block} is not positive",
                            "use e.g. --set ws.fragment_block=64 (voxels), or 0 for none")
        if grid is not None and cfg.block_size is not None:
            check_block_grid(vec3(cfg.block_size, "block_size"), grid,
                             aff_vol.spatial_shape)
        if grid is not None and ws.merge_function != "mean":
            raise UserError(f"merge_function {ws.merge_function} does not work with a fragment "
                            "grid", "use merge_function = 'mean', or (whole volume only) no "
                            "grid: --set ws.fragment_block=0")
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
            small=cfg.small, fragment_block=ws.grid, halo=ws.halo, join_seeds=ws.join_seeds)
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
                            voxel_size=voxel_size, mask=mask, fragment_block=ws.grid,
                            halo=ws.halo, join_seeds=ws.join_seeds)

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
            seed_radius=ws.seed_radius, seeds_2d=ws.seeds_2d, voxel_size=voxel_size, mask=mask,
            fragment_block=ws.grid or vec3(cfg.block_size or block.shape, "block_size"),
            halo=ws.halo, max_threshold=max(ws.thresholds),  # the block's own merges, here
            join_seeds=joins_seeds(ws.join_seeds, ws.grid))
        return labels, summary.to_bytes()

    def reduce(self, summaries: Sequence[bytes], volume_box: BBox, cfg: DecodeConfig,
               dtype: np.dtype) -> BlockTables:
        return agglomerate_blocks(_octree_order(summaries, volume_box, cfg), volume_box,
                                  cfg.ws.thresholds[0], cfg.min_size, dtype, _block_shape(cfg))

    def reduce_outputs(self, summaries: Sequence[bytes], volume_box: BBox, cfg: DecodeConfig,
                       dtype: np.dtype) -> list[BlockTables]:
        # one agglomeration up to the largest threshold, one table set per threshold
        return agglomerate_blocks_at(_octree_order(summaries, volume_box, cfg), volume_box,
                                     cfg.ws.thresholds, cfg.min_size, dtype, _block_shape(cfg))

    def reduce_fragments(self, summaries: Sequence[bytes], volume_box: BBox, cfg: DecodeConfig,
                         dtype: np.dtype, **history_fields: Any
                         ) -> tuple[BlockTables, MergeHistory]:
        return fragments_blocks(_octree_order(summaries, volume_box, cfg), volume_box,
                                max(cfg.ws.thresholds), dtype, _block_shape(cfg),
                                **history_fields)


def _octree_order(summaries: Sequence[bytes], volume_box: BBox, cfg: DecodeConfig
                  ) -> Iterator[WsBlockSummary]:
    """The summaries decoded one at a time, in octree (Morton) order of their blocks when
    known (``BlockFiles``): the reduce then holds few groups open at once."""
    blocks = getattr(summaries, "blocks", None)
    shape = _block_shape(cfg)
    order: Sequence[int] = range(len(summaries))
    if blocks is not None and shape is not None:
        order = morton_order([[(s - o) // b for s, o, b in
                               zip(blk.start, volume_box.start, shape, strict=True)]
                              for blk in blocks])
    return (WsBlockSummary.from_bytes(summaries[i]) for i in order)


def _block_shape(cfg: DecodeConfig) -> tuple[int, int, int] | None:
    return None if cfg.block_size is None else vec3(cfg.block_size, "block_size")


WS = WsMethod()
