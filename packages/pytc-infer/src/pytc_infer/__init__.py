"""pytc-infer: Predict an affinity volume from a raw EM volume with a trained checkpoint (tiled, blended). (not implemented yet)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pytc-infer")
except PackageNotFoundError:  # pragma: no cover
    __version__ = "0.0.0"
