"""One evaluation of a segmentation volume against ground truth: the blockwise pass over both
volumes, the flat JSON report, the errors table (merges and splits with voxel coordinates and
Neuroglancer links) and the ranked table of several segmentations.
"""

from __future__ import annotations

import csv
import json
import math
import os
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from pytc_core.bbox import BBox
from pytc_core.blocks import plan_blocks
from pytc_core.cli import progress
from pytc_core.errors import UserError
from pytc_core.volume import Volume, require_integer_labels
from pytc_eval.erl import SPLIT, expected_run_length
from pytc_eval.skeletons import Skeletons, node_voxels
from pytc_eval.voi import ContingencyTable, rand_voi_from_table

__all__ = ["Evaluation", "error_rows", "evaluate_volumes", "format_table", "ranked_table",
           "report_json", "write_errors_csv"]

VOXEL_KEYS = ("voi_split", "voi_merge", "nvi_split", "nvi_merge", "nid", "rand_split",
              "rand_merge", "adapted_rand_error")


@dataclass
class Evaluation:
    """The flat ``report`` dict plus what the errors file needs."""

    report: dict
    skeletons: Skeletons | None = None
    details: dict = field(default_factory=dict)


def check_pair(seg: Volume, gt: Volume) -> None:
    """UserError unless both are 3D integer label volumes of one spatial shape."""
    require_integer_labels(seg)
    require_integer_labels(gt)
    if seg.spatial_shape != gt.spatial_shape:
        raise UserError(f"segmentation {seg.uri} has shape {seg.spatial_shape} but ground truth "
                        f"{gt.uri} has shape {gt.spatial_shape}",
                        "evaluate a segmentation of the ground truth's region (crop one of them)")


def evaluate_volumes(seg: Volume, gt: Volume, skeletons: Skeletons | None = None, *,
                     voxel_size: Sequence[float] | None = None, merge_threshold: int = 1,
                     adapted_merge_threshold: int = 5, block_size: int = 256,
                     show_progress: bool = False) -> Evaluation:
    """VOI/Rand over both volumes block by block, and ERL/NERL when ``skeletons`` are given.

    The volumes are aligned voxel for voxel from their first voxel (equal shapes required);
    skeleton positions are global voxel coordinates of the ground truth. ``voxel_size``
    (z, y, x nm, default the ground truth's) gives edge lengths in nm. Memory: one block of
    each volume plus the contingency table.
    """
    check_pair(seg, gt)
    vs = tuple(float(v) for v in (voxel_size if voxel_size is not None else gt.voxel_size))
    shift = np.asarray(seg.offset) - np.asarray(gt.offset)
    table = ContingencyTable()
    node_vox = None
    node_seg = None
    if skeletons is not None:
        node_vox = node_voxels(skeletons, gt.spatial_shape, gt.offset)
        node_seg = np.zeros(skeletons.num_nodes, np.uint64)
    blocks = plan_blocks(gt.bbox, block_size, grid_origin=gt.offset)
    for block in progress(blocks, f"evaluating {os.path.basename(seg.uri.rstrip('/'))}",
                          enabled=show_progress):
        truth = gt.read(block)
        pred = seg.read(BBox(tuple(np.add(block.start, shift)), tuple(np.add(block.stop, shift))))
        table.add(truth, pred)
        if node_vox is not None:
            inside = np.all((node_vox >= block.start) & (node_vox < block.stop), axis=1)
            local = node_vox[inside] - np.asarray(block.start)
            values = pred[local[:, 0], local[:, 1], local[:, 2]]
            if np.issubdtype(values.dtype, np.signedinteger):
                values = values.astype(np.int64).view(np.uint64)
            node_seg[inside] = values.astype(np.uint64)
    voxel = rand_voi_from_table(*table.pairs())
    report: dict = {"segmentation": seg.uri, "ground_truth": gt.uri}
    report.update({k: voxel[k] for k in VOXEL_KEYS})
    report.update(n_voxels=voxel["n_voxels"], n_segments=voxel["n_segments"],
                  n_gt_segments=voxel["n_gt_segments"], voxel_size=list(vs))
    warnings = []
    if voxel["n_voxels"] == 0:
        warnings.append("the ground truth is all zero, so no voxel counts: rand_*, nvi_*, nid "
                        "and adapted_rand_error are NaN (null) and VOI is 0, as in funlib")
    details: dict = {}
    if skeletons is not None:
        erl = expected_run_length(skeletons, node_seg, vs, merge_threshold=merge_threshold,
                                  return_details=True)
        adapted = expected_run_length(skeletons, node_seg, vs,
                                      merge_threshold=adapted_merge_threshold)
        details = {"edge_outcome": erl.pop("edge_outcome"), "node_segment": erl.pop("node_segment"),
                   "node_voxel": node_vox, "merge_stats": erl["merge_stats"]}
        erl.pop("edge_length")
        report.update(erl=erl["erl"], gt_erl=erl["gt_erl"], nerl=erl["nerl"],
                      merge_threshold=erl["merge_threshold"], adapted_erl=adapted["erl"],
                      adapted_nerl=adapted["nerl"],
                      adapted_merge_threshold=adapted["merge_threshold"],
                      merge_stats={str(k): v for k, v in erl["merge_stats"].items()},
                      split_stats={str(k): [list(p) for p in v]
                                   for k, v in erl["split_stats"].items()})
        report.update({k: erl[k] for k in ("n_skeletons", "n_skeleton_nodes", "n_edges",
                                           "n_edges_omitted", "n_edges_split", "n_edges_merged",
                                           "n_edges_correct", "n_merging_segments",
                                           "total_length_nm")})
        if erl["n_edges"] == 0:
            warnings.append("the skeletons have no edges: erl and gt_erl are 0, nerl is NaN")
    report["warnings"] = warnings
    return Evaluation(report, skeletons, details)


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def report_json(report: dict) -> str:
    """The report as one line of strict JSON (NaN and inf written as null)."""
    return json.dumps(_clean(report), separators=(", ", ": "), allow_nan=False)


def _precomputed_source(uri: str) -> str:
    if uri.startswith("precomputed://"):
        return uri
    if "://" not in uri:
        uri = "file://" + os.path.abspath(uri)
    return "precomputed://" + uri


def neuroglancer_link(seg: Volume, gt: Volume, zyx: Sequence[int], seg_ids: Sequence[int],
                      gt_ids: Sequence[int]) -> str:
    """A Neuroglancer URL showing both layers at voxel ``zyx`` (global) with the ids selected."""
    vz, vy, vx = gt.voxel_size
    state = {
        "dimensions": {"x": [vx * 1e-9, "m"], "y": [vy * 1e-9, "m"], "z": [vz * 1e-9, "m"]},
        "position": [zyx[2] + 0.5, zyx[1] + 0.5, zyx[0] + 0.5],
        "layers": [
            {"type": "segmentation", "source": _precomputed_source(gt.uri),
             "name": "ground truth", "segments": [str(i) for i in gt_ids]},
            {"type": "segmentation", "source": _precomputed_source(seg.uri),
             "name": "segmentation", "segments": [str(i) for i in seg_ids]},
        ],
        "layout": "4panel",
    }
    return "https://neuroglancer-demo.appspot.com/#!" + urllib.parse.quote(
        json.dumps(state, separators=(",", ":")))


def error_rows(evaluation: Evaluation, seg: Volume | None = None,
               gt: Volume | None = None) -> list[dict]:
    """One row per merging segment and per split edge, each with a voxel (z, y, x, global).

    A merge row names the segment, the merged skeletons and a node of the first of them inside
    the segment; a split row names the skeleton, the two segments and the edge's first node.
    With precomputed inputs each row carries a Neuroglancer link.
    """
    skel, det = evaluation.skeletons, evaluation.details
    if skel is None or not det:
        return []
    link = seg is not None and gt is not None and seg.format == gt.format == "precomputed"
    rows = []
    node_seg, node_vox = det["node_segment"], det["node_voxel"]
    for segment, skel_ids in det["merge_stats"].items():
        first = np.flatnonzero((node_seg == np.uint64(segment))
                               & (skel.skeleton_ids == skel.skeleton_ids.dtype.type(skel_ids[0])))
        zyx = node_vox[first[0]].tolist()
        rows.append({"kind": "merge", "segments": str(segment),
                     "skeletons": ";".join(str(s) for s in skel_ids),
                     "z": zyx[0], "y": zyx[1], "x": zyx[2],
                     "neuroglancer": neuroglancer_link(seg, gt, zyx, [segment], skel_ids)
                     if link else ""})
    idx = skel.edge_index()
    for e in np.flatnonzero(det["edge_outcome"] == SPLIT):
        u, v = idx[e]
        zyx = node_vox[u].tolist()
        sid = int(skel.skeleton_ids[u])
        pair = [int(node_seg[u]), int(node_seg[v])]
        rows.append({"kind": "split", "segments": f"{pair[0]};{pair[1]}", "skeletons": str(sid),
                     "z": zyx[0], "y": zyx[1], "x": zyx[2],
                     "neuroglancer": neuroglancer_link(seg, gt, zyx, pair, [sid])
                     if link else ""})
    return rows


ERROR_COLUMNS = ("segmentation", "kind", "segments", "skeletons", "z", "y", "x", "neuroglancer")


def write_errors_csv(path: str | os.PathLike[str], rows_by_seg: dict[str, list[dict]]) -> None:
    """Write the errors of one or more segmentations as CSV (columns :data:`ERROR_COLUMNS`)."""
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=ERROR_COLUMNS)
        writer.writeheader()
        for seg_uri, rows in rows_by_seg.items():
            for row in rows:
                writer.writerow({"segmentation": seg_uri, **row})


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def ranked_table(reports: Sequence[dict]) -> tuple[list[str], list[list[str]]]:
    """Header and rows (segmentations by the last part of their URI) ranking several reports: by NERL (higher first) when skeletons were
    evaluated, else by total VOI (lower first); NaN ranks last."""
    with_skel = all("nerl" in r for r in reports)

    def key(r: dict) -> float:
        if with_skel:
            v = r["nerl"]
            return -v if not math.isnan(v) else math.inf
        v = r["voi_split"] + r["voi_merge"]
        return v if not math.isnan(v) else math.inf

    cols = {"voi_split": "VOI split", "voi_merge": "VOI merge",
            "adapted_rand_error": "ARAND", "n_segments": "segments"}
    if with_skel:
        cols.update({"erl": "ERL nm", "nerl": "NERL", "adapted_nerl": "NERL adapt",
                     "n_edges_split": "split edges", "n_edges_merged": "merged edges"})
    header = ["rank", "segmentation", *cols.values()]
    ordered = sorted(reports, key=key)
    rows = [[str(i + 1), r["segmentation"].rstrip("/").rsplit("/", 1)[-1],
             *(_fmt(r.get(c)) for c in cols)]
            for i, r in enumerate(ordered)]
    return header, rows


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain aligned text table (any terminal width; numbers right-aligned)."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(str(c).ljust(w) if i == 1 else str(c).rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in rows)])
