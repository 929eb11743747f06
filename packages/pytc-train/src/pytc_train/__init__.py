"""pytc-train: train affinity models (MedNeXt and the MONAI zoo of ``pytc_core.models``).

Only ``pytc-train --list-archs`` works so far; training itself arrives with the training issue.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pytc-train")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = ["__version__"]
