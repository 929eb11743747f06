"""A threshold sweep scored from fragments: every threshold's report from one pass.

The pass (:func:`pytc_eval.sample.sample_blocks` over the fragments) gives the fragment ×
ground-truth contingency table and the fragment under each skeleton node. A threshold's
segmentation maps each fragment to a segment (:meth:`MergeHistory.segment_table`), so its
table is the fragment table with rows relabelled and equal pairs summed, and its node labels
are the fragment labels looked up in the same table. Merges below a threshold are merges
below every higher one, so each threshold's segments are unions of the lowest threshold's:
the pass counts the fragments as those segments (a few times fewer runs and pairs than the
fragments have), and each threshold's table relabels them, which it may, since a segment's
id is one of its fragments. Segments under the decode's
``min_size`` with ``small = "remove"`` become background, as the written segmentation has
them (their sizes are the table's sums per segment). Segment ids are the representative
fragments' ids, not the written segmentation's ids (only the ids in ``merge_stats`` /
``split_stats`` differ).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pytc_core.bbox import BBox
from pytc_core.errors import UserError
from pytc_core.merge_history import MergeHistory
from pytc_eval.kernels import group_pairs
from pytc_eval.sample import Samples
from pytc_eval.score import Evaluation, evaluation_from_samples
from pytc_eval.skeletons import Skeletons

__all__ = ["check_thresholds", "removed_below", "sweep_evaluations", "sweep_labels",
           "sweep_thresholds"]


def sweep_thresholds(history: MergeHistory, thresholds: Sequence[float] | None) -> list[float]:
    """The thresholds to score: ``thresholds``, or the history's own (UserError outside
    [0, 1], or when neither gives one)."""
    chosen = list(thresholds) if thresholds else list(history.thresholds)
    if not chosen:
        raise UserError("the merge history names no thresholds and none were given",
                        "pass --thresholds, e.g. --thresholds 0.1,0.3,0.5")
    check_thresholds(chosen)
    return [float(t) for t in chosen]


def check_thresholds(thresholds: Sequence[float]) -> None:
    """UserError unless every threshold lies in [0, 1] (waterz's scores: 1 - mean affinity)."""
    for t in thresholds:
        if not 0.0 <= float(t) <= 1.0:
            raise UserError(f"threshold {t} is outside [0, 1] (merge scores are 1 - mean "
                            "affinity)", "give thresholds between 0 and 1, e.g. 0.1,0.3,0.5")


def removed_below(history: MergeHistory) -> int:
    """Segments under this many voxels are background in the written segmentation (0: none
    removed); UserError when the decode merged small segments instead (not reproducible from
    the contingency table: it depends on the affinities)."""
    config: dict[str, Any] = history.config
    min_size = int(config.get("min_size", 0) or 0)
    if min_size <= 1:
        return 0
    small = str(config.get("small", "remove"))
    if small != "remove":
        raise UserError(f"the fragments were decoded with min_size {min_size} and small = "
                        f"'{small}', which a sweep cannot reproduce from the fragments (it "
                        "depends on the affinities)",
                        "decode the fragments with --small remove (or --min-size 0), or "
                        "score the written segmentations one by one")
    return min_size


def sweep_labels(pairs: tuple[np.ndarray, np.ndarray, np.ndarray], node_fragment: np.ndarray,
                 table: np.ndarray, min_size: int = 0
                 ) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    """One threshold's contingency pairs and node labels from the fragments'.

    ``pairs`` = (truth, fragment, count) over every voxel of the box (truth 0 included);
    ``table`` the fragment → segment table; segments with fewer than ``min_size`` voxels in
    the box become 0. Returns (truth, segment, count) with unique pairs (in order of first
    appearance), and the segment under each node.
    """
    truth, frag, count = pairs
    seg = table[frag]
    node_seg = table[node_fragment]
    if min_size > 1:
        sizes = np.bincount(seg.astype(np.intp), weights=count, minlength=table.shape[0])
        small = sizes < min_size
        small[0] = False
        if small.any():
            seg = np.where(small[seg.astype(np.intp)], np.uint64(0), seg)
            node_seg = np.where(small[node_seg.astype(np.intp)], np.uint64(0), node_seg)
    # equal (truth, segment) pairs summed: hash grouping, O(pairs)
    group, first = group_pairs(np.ascontiguousarray(truth, np.uint64),
                               np.ascontiguousarray(seg, np.uint64))
    summed = np.bincount(group, weights=count, minlength=first.shape[0])
    return ((truth[first], seg[first], np.rint(summed).astype(np.int64)),
            node_seg.astype(np.uint64))

def sweep_evaluations(seg_uri: str, gt_uri: str, samples: Samples, history: MergeHistory,
                      thresholds: Sequence[float], skeletons: Skeletons | None,
                      node_vox: np.ndarray | None, *, voxel_size: Sequence[float], box: BBox,
                      min_size: int = 0, counted_at: float | None = None,
                      **kwargs: Any) -> list[Evaluation]:
    """One :class:`Evaluation` per threshold from the samples of a pass over the fragments
    ``seg_uri`` (``kwargs``: :func:`pytc_eval.score.evaluation_from_samples`'s options).
    ``counted_at``: the threshold whose segments the pass's table counts (None: fragments);
    every threshold must be at least that. UserError when the fragments hold ids the merge
    history does not know."""
    if counted_at is not None and min(thresholds) < counted_at:
        raise ValueError(f"threshold {min(thresholds)} is below the table's {counted_at}")
    pairs = samples.table.pairs(include_background=True)
    top = int(pairs[1].max()) if pairs[1].size else 0
    if top > history.num_fragments:
        raise UserError(f"the fragments {seg_uri} hold id {top} but their merge history knows "
                        f"fragments 1..{history.num_fragments} only: the table does not match "
                        "its fragments", "decode the fragments again (pytc-decode --method ws "
                        "--fragments-only --overwrite)")
    node_frag = samples.node_labels(skeletons.num_nodes if skeletons is not None else 0)
    out: list[Evaluation | None] = [None] * len(thresholds)
    for i, table in history.iter_segment_tables(thresholds):  # one table held at a time
        seg_pairs, node_seg = sweep_labels(pairs, node_frag, table, min_size)
        out[i] = evaluation_from_samples(
            seg_uri, gt_uri, seg_pairs, skeletons, node_seg if skeletons is not None else None,
            node_vox, voxel_size=voxel_size, box=box, threshold=float(thresholds[i]), **kwargs)
    return [ev for ev in out if ev is not None]
