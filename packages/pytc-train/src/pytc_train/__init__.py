"""pytc-train: train affinity models (MedNeXt and the MONAI zoo of ``pytc_core.models``).

``pytc_train.train.run_train(TrainConfig)`` is the whole stage in Python; ``pytc-train`` is
its command (``pytc_train.cli``).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pytc-train")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = ["__version__"]
