"""pytc-eval: VOI, Rand and skeleton (ERL, NERL) metrics with funlib.evaluate's definitions."""

from importlib.metadata import PackageNotFoundError, version

from pytc_eval.erl import edge_lengths, expected_run_length
from pytc_eval.skeletons import (
    KimimaroParams,
    Skeletons,
    load_skeletons,
    node_segments,
    save_skeletons,
    skeletons_from_labels,
)
from pytc_eval.voi import ContingencyTable, adapted_rand_error, rand_voi, rand_voi_from_table

try:
    __version__ = version("pytc-eval")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "__version__",
    "ContingencyTable",
    "KimimaroParams",
    "Skeletons",
    "adapted_rand_error",
    "edge_lengths",
    "expected_run_length",
    "load_skeletons",
    "node_segments",
    "rand_voi",
    "rand_voi_from_table",
    "save_skeletons",
    "skeletons_from_labels",
]
