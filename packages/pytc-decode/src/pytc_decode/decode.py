"""The names ``pytc_decode.decode`` held before the stage was split into modules, re-exported
(import them from their modules: :mod:`pytc_decode.config`, :mod:`pytc_decode.stage`,
:mod:`pytc_decode.steps`, :mod:`pytc_decode.stats`, :mod:`pytc_decode.volumes`)."""

from __future__ import annotations

from pytc_decode.config import DecodeConfig
from pytc_decode.stage import DecodeResult, check_config, run_decode
from pytc_decode.stats import DecodeStats, segment_stats, size_histogram
from pytc_decode.steps import STEPS, BlockwiseRun, label_step, plan_run, reduce_step, relabel_step
from pytc_decode.volumes import default_output_uri, suffixed_uri

__all__ = [
    "STEPS",
    "BlockwiseRun",
    "DecodeConfig",
    "DecodeResult",
    "DecodeStats",
    "check_config",
    "default_output_uri",
    "label_step",
    "plan_run",
    "reduce_step",
    "relabel_step",
    "run_decode",
    "segment_stats",
    "size_histogram",
    "suffixed_uri",
]
