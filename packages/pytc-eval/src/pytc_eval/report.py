"""The typed report of one segmentation (flat JSON on stdout) and the ranked table of several."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from pytc_core.bbox import BBox

__all__ = ["SegmentationReport", "SkeletonScores", "format_table", "rank_key", "rank_reports",
           "ranked_table", "report_json"]

VOXEL_KEYS = ("voi_split", "voi_merge", "nvi_split", "nvi_merge", "nid", "rand_split",
              "rand_merge", "adapted_rand_error")


@dataclass(frozen=True)
class SkeletonScores:
    """ERL/NERL (lengths in nm) and merge/split statistics on ground-truth skeletons."""

    erl: float
    gt_erl: float
    nerl: float
    merge_threshold: int
    adapted_erl: float
    adapted_nerl: float
    adapted_merge_threshold: int
    #: {segment id: [skeleton ids]} of merging segments
    merge_stats: dict[int, list[int]]
    #: {skeleton id: [(segment u, segment v), ...]}, one pair per split edge
    split_stats: dict[int, list[tuple[int, int]]]
    n_skeletons: int
    n_skeleton_nodes: int
    n_edges: int
    n_edges_omitted: int
    n_edges_split: int
    n_edges_merged: int
    n_edges_correct: int
    n_merging_segments: int
    total_length_nm: float


@dataclass(frozen=True)
class SegmentationReport:
    """Scores of one segmentation against the ground truth on box ``bbox`` (global voxels).

    Voxel metrics count only voxels where the ground truth is non-zero (funlib).
    ``n_segments`` / ``n_gt_segments`` are the distinct non-zero ids in the box (background 0
    is not a segment; pytc-decode counts the same way).
    """

    segmentation: str
    ground_truth: str
    voi_split: float
    voi_merge: float
    nvi_split: float
    nvi_merge: float
    nid: float
    rand_split: float
    rand_merge: float
    adapted_rand_error: float
    n_voxels: int
    n_segments: int
    n_gt_segments: int
    #: voxel size in nm (z, y, x)
    voxel_size: tuple[float, float, float]
    #: the box scored, in global voxels (z, y, x), half-open
    bbox: BBox
    #: where the skeletons came from (a path, ``kimimaro``), None without skeletons
    skeletons: str | None = None
    skeleton_scores: SkeletonScores | None = None
    warnings: tuple[str, ...] = ()
    #: the merge threshold of a sweep scored from fragments (absent from the JSON otherwise)
    threshold: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The flat JSON object: every field, ``bbox`` as [z0, y0, x0, z1, y1, x1], the
        skeleton scores at top level (absent without skeletons)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "skeleton_scores":
                if value is not None:
                    for g in fields(value):
                        out[g.name] = getattr(value, g.name)
                continue
            if f.name == "threshold" and value is None:
                continue
            if isinstance(value, BBox):
                value = [*value.start, *value.stop]
            out[f.name] = value
        out["voxel_size"] = list(self.voxel_size)
        out["warnings"] = list(self.warnings)
        if self.skeleton_scores is not None:
            s = self.skeleton_scores
            out["merge_stats"] = {str(k): list(v) for k, v in s.merge_stats.items()}
            out["split_stats"] = {str(k): [list(p) for p in v] for k, v in s.split_stats.items()}
        return out

    def to_json(self) -> str:
        """One line of strict JSON (NaN and inf written as null)."""
        return report_json(self.to_dict())


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def report_json(report: dict) -> str:
    """A report dict as one line of strict JSON (NaN and inf written as null)."""
    return json.dumps(_clean(report), separators=(", ", ": "), allow_nan=False)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def rank_key(report: Mapping[str, Any], by_nerl: bool) -> tuple[float, float]:
    """Sort key of one flat report (``SegmentationReport.to_dict()`` or its JSON line), best
    first: by NERL (higher first) when ``by_nerl``, then by total VOI (lower first); NaN or
    missing values rank last."""
    def number(key: str) -> float:
        v = report.get(key)
        return math.nan if v is None else float(v)

    voi = number("voi_split") + number("voi_merge")
    voi = voi if not math.isnan(voi) else math.inf
    if not by_nerl:
        return (voi, 0.0)
    nerl = number("nerl")
    return (-nerl if not math.isnan(nerl) else math.inf, voi)


def rank_reports(reports: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Flat reports (dicts or parsed JSON lines of pytc-eval) best first: by NERL when every
    report has skeleton scores, else by total VOI (ties: lower VOI first)."""
    by_nerl = all("nerl" in r for r in reports)
    return sorted(reports, key=lambda r: rank_key(r, by_nerl))


def ranked_table(reports: Sequence[SegmentationReport]) -> tuple[list[str], list[list[str]]]:
    """Header and rows (segmentations by the last part of their URI) ranking several
    reports with :func:`rank_reports`: by NERL (higher first) when skeletons were evaluated,
    else by total VOI (lower first); NaN ranks last."""
    with_skel = all(r.skeleton_scores is not None for r in reports)
    cols = {"voi_split": "VOI split", "voi_merge": "VOI merge", "voi": "VOI",
            "adapted_rand_error": "ARAND", "n_segments": "segments"}
    if with_skel:
        cols.update({"erl": "ERL nm", "nerl": "NERL", "adapted_nerl": "NERL adapt",
                     "n_edges_split": "split edges", "n_edges_merged": "merged edges"})
    header = ["rank", "segmentation", *cols.values()]
    rows = []
    for i, flat in enumerate(rank_reports([r.to_dict() for r in reports])):
        flat = {**flat, "voi": flat["voi_split"] + flat["voi_merge"]}  # total: what ranks
        name = str(flat["segmentation"]).rstrip("/").rsplit("/", 1)[-1]
        if flat.get("threshold") is not None:
            name += f" @ {flat['threshold']:g}"
        rows.append([str(i + 1), name,
                     *(_fmt(flat.get(c)) for c in cols)])
    return header, rows


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain aligned text table (any terminal width; numbers right-aligned)."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(str(c).ljust(w) if i == 1 else str(c).rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in rows)])
