"""Scoring one segmentation volume against ground truth: one blockwise pass over both volumes
(VOI/Rand from the contingency table, the segment under every skeleton node), then ERL."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pytc_core.bbox import BBox, vec3
from pytc_core.blocks import plan_blocks
from pytc_core.cli import progress_counter
from pytc_core.volume import Volume, require_integer_labels
from pytc_eval.align import evaluation_box
from pytc_eval.erl import expected_run_length
from pytc_eval.report import VOXEL_KEYS, SegmentationReport, SkeletonScores
from pytc_eval.sample import NodeBlocks, sample_blocks
from pytc_eval.skeletons import Skeletons, crop_skeletons, node_voxels
from pytc_eval.voi import rand_voi_from_table

__all__ = ["Evaluation", "evaluate_volumes", "evaluation_from_samples", "prepare_nodes"]


@dataclass(frozen=True)
class Evaluation:
    """The report of one segmentation plus what the errors file needs: the skeletons scored
    (cropped to the box) and per-node / per-edge details."""

    report: SegmentationReport
    skeletons: Skeletons | None = None
    details: dict[str, Any] = field(default_factory=dict)


def evaluate_volumes(seg: Volume, gt: Volume, skeletons: Skeletons | None = None, *,
                     box: BBox | None = None, voxel_size: Sequence[float] | None = None,
                     merge_threshold: int = 1, adapted_merge_threshold: int = 5,
                     block_size: Sequence[int] | int = 256, skeleton_source: str | None = None,
                     show_progress: bool = False) -> Evaluation:
    """VOI/Rand over both volumes block by block, and ERL/NERL when ``skeletons`` are given.

    The volumes are aligned by global voxel coordinates (their offsets) and scored on
    ``box`` (default: the intersection of their boxes). Skeleton positions are global voxel
    coordinates; nodes outside the box are left out, with the edges that touch them.
    ``voxel_size`` (z, y, x nm, default the ground truth's) gives edge lengths in nm.
    Memory: one block of each volume plus the contingency table.
    """
    require_integer_labels(seg)
    require_integer_labels(gt)
    box = evaluation_box(seg, gt) if box is None else box
    vs = tuple(float(v) for v in (voxel_size if voxel_size is not None else gt.voxel_size))
    blocks = plan_blocks(box, block_size, grid_origin=gt.offset)
    skeletons, node_vox, node_blocks = prepare_nodes(skeletons, box, gt.offset, block_size)
    samples = sample_blocks(seg, gt, blocks, node_vox, node_blocks=node_blocks,
                            progress=progress_counter if show_progress else None,
                            description=f"evaluating {os.path.basename(seg.uri.rstrip('/'))}")
    node_seg = samples.node_labels(skeletons.num_nodes) if skeletons is not None else None
    return evaluation_from_samples(
        seg.uri, gt.uri, samples.table.pairs(include_background=True), skeletons, node_seg,
        node_vox, voxel_size=vs, box=box, merge_threshold=merge_threshold,
        adapted_merge_threshold=adapted_merge_threshold, skeleton_source=skeleton_source)


def prepare_nodes(skeletons: Skeletons | None, box: BBox, grid_origin: Sequence[int],
                  block_size: Sequence[int] | int
                  ) -> tuple[Skeletons | None, np.ndarray | None, NodeBlocks | None]:
    """The skeletons cropped to ``box``, their nodes' voxels (global) and their grouping by
    the blocks of ``plan_blocks(box, block_size, grid_origin)``."""
    if skeletons is None:
        return None, None, None
    skeletons = crop_skeletons(skeletons, box.start, box.stop)
    node_vox = node_voxels(skeletons, box.shape, box.start)
    return skeletons, node_vox, NodeBlocks(node_vox, grid_origin, vec3(block_size, "block"))


def evaluation_from_samples(
        seg_uri: str, gt_uri: str, pairs: tuple[np.ndarray, np.ndarray, np.ndarray],
        skeletons: Skeletons | None, node_seg: np.ndarray | None,
        node_vox: np.ndarray | None, *, voxel_size: Sequence[float], box: BBox,
        merge_threshold: int = 1, adapted_merge_threshold: int = 5,
        skeleton_source: str | None = None, threshold: float | None = None) -> Evaluation:
    """The report from a pass's samples: contingency ``pairs`` (truth, label, count; truth 0
    rows included, unique pairs) and the label under each node of ``skeletons``."""
    vs = tuple(float(v) for v in voxel_size)
    voxel = rand_voi_from_table(*pairs)
    warnings = []
    if voxel["n_voxels"] == 0:
        warnings.append("the ground truth is all zero, so no voxel counts: rand_*, nvi_*, nid "
                        "and adapted_rand_error are NaN (null) and VOI is 0, as in funlib")
    details: dict[str, Any] = {}
    scores = None
    if skeletons is not None:
        assert node_seg is not None
        erl = expected_run_length(skeletons, node_seg, vs, merge_threshold=merge_threshold,
                                  return_details=True)
        adapted = expected_run_length(skeletons, node_seg, vs,
                                      merge_threshold=adapted_merge_threshold, stats=False)
        details = {"edge_outcome": erl["edge_outcome"], "node_segment": erl["node_segment"],
                   "node_voxel": node_vox, "merge_stats": erl["merge_stats"]}
        scores = SkeletonScores(
            adapted_erl=adapted["erl"], adapted_nerl=adapted["nerl"],
            adapted_merge_threshold=adapted["merge_threshold"],
            **{k: erl[k] for k in ("erl", "gt_erl", "nerl", "merge_threshold", "merge_stats",
                                   "split_stats", "n_skeletons", "n_skeleton_nodes", "n_edges",
                                   "n_edges_omitted", "n_edges_split", "n_edges_merged",
                                   "n_edges_correct", "n_merging_segments",
                                   "total_length_nm")})
        if erl["n_edges"] == 0:
            warnings.append("the skeletons have no edges: erl and gt_erl are 0, nerl is NaN")
    report = SegmentationReport(
        segmentation=seg_uri, ground_truth=gt_uri, **{k: voxel[k] for k in VOXEL_KEYS},
        n_voxels=voxel["n_voxels"], n_segments=voxel["n_segments"],
        n_gt_segments=voxel["n_gt_segments"], voxel_size=vs, bbox=box,  # type: ignore[arg-type]
        skeletons=skeleton_source, skeleton_scores=scores, warnings=tuple(warnings),
        threshold=threshold)
    return Evaluation(report, skeletons, details)
