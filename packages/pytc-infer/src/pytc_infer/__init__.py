"""pytc-infer: tiled, blended, resumable prediction of affinity volumes from raw EM volumes.

Arrays are channels first, spatial axes (z, y, x); sizes in voxels. Names are imported on
first use (PEP 562), so ``pytc-infer --help`` does not load torch.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from pytc_core.lazy import lazy_exports

try:
    __version__ = version("pytc-infer")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

_EXPORTS = {
    "InferConfig": "infer",
    "InferResult": "infer",
    "predict": "infer",
    "predict_volume": "infer",
    "run_infer": "infer",
    "WindowGrid": "tiling",
    "blend_windows": "tiling",
    "importance_map": "tiling",
    "window_grid": "tiling",
    "flip_sets": "tta",
    "tta_forward": "tta",
    "unflip": "tta",
    "MemoryPlan": "memory",
    "plan_memory": "memory",
}

__all__ = [
    "__version__",
    "InferConfig",
    "InferResult",
    "MemoryPlan",
    "WindowGrid",
    "blend_windows",
    "flip_sets",
    "importance_map",
    "plan_memory",
    "predict",
    "predict_volume",
    "run_infer",
    "tta_forward",
    "unflip",
    "window_grid",
]

if TYPE_CHECKING:
    from pytc_infer.infer import InferConfig, InferResult, predict, predict_volume, run_infer
    from pytc_infer.memory import MemoryPlan, plan_memory
    from pytc_infer.tiling import WindowGrid, blend_windows, importance_map, window_grid
    from pytc_infer.tta import flip_sets, tta_forward, unflip

__getattr__, __dir__ = lazy_exports("pytc_infer", _EXPORTS)
