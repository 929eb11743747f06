"""pytc-launch: Launch training, inference and decoding runs on Slurm: job arrays, sweeps, auto-requeue. (not implemented yet)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pytc-launch")
except PackageNotFoundError:  # pragma: no cover
    __version__ = "0.0.0"
