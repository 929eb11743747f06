"""pytc-eval: VOI, Rand and skeleton (ERL, NERL) metrics with funlib.evaluate's definitions.

Names are imported on first use (PEP 562), so ``pytc-eval --help`` does not load numba.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from pytc_core.lazy import lazy_exports

try:
    __version__ = version("pytc-eval")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

_EXPORTS = {
    "ContingencyTable": "voi",
    "adapted_rand_error": "voi",
    "rand_voi": "voi",
    "rand_voi_from_table": "voi",
    "edge_lengths": "erl",
    "expected_run_length": "erl",
    "KimimaroParams": "skeletons",
    "Skeletons": "skeletons",
    "load_skeletons": "skeletons",
    "node_segments": "skeletons",
    "node_voxels": "skeletons",
    "save_skeletons": "skeletons",
    "skeletons_from_labels": "skeletons",
    "crop_skeletons": "skeletons",
    "Evaluation": "score",
    "evaluate_volumes": "score",
    "SegmentationReport": "report",
    "SkeletonScores": "report",
    "report_json": "report",
    "rank_reports": "report",
    "EvalConfig": "eval",
    "EvalReport": "eval",
    "run_eval": "eval",
}

__all__ = [
    "__version__",
    "ContingencyTable",
    "EvalConfig",
    "EvalReport",
    "Evaluation",
    "KimimaroParams",
    "SegmentationReport",
    "SkeletonScores",
    "Skeletons",
    "adapted_rand_error",
    "crop_skeletons",
    "edge_lengths",
    "evaluate_volumes",
    "expected_run_length",
    "load_skeletons",
    "node_segments",
    "node_voxels",
    "rand_voi",
    "rand_voi_from_table",
    "rank_reports",
    "report_json",
    "run_eval",
    "save_skeletons",
    "skeletons_from_labels",
]

if TYPE_CHECKING:  # pragma: no cover
    from pytc_eval.erl import edge_lengths, expected_run_length
    from pytc_eval.eval import EvalConfig, EvalReport, run_eval
    from pytc_eval.report import (
        SegmentationReport,
        SkeletonScores,
        rank_reports,
        report_json,
    )
    from pytc_eval.score import Evaluation, evaluate_volumes
    from pytc_eval.skeletons import (
        KimimaroParams,
        Skeletons,
        crop_skeletons,
        load_skeletons,
        node_segments,
        node_voxels,
        save_skeletons,
        skeletons_from_labels,
    )
    from pytc_eval.voi import ContingencyTable, adapted_rand_error, rand_voi, rand_voi_from_table

__getattr__, __dir__ = lazy_exports("pytc_eval", _EXPORTS)
