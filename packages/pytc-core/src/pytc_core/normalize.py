"""Raw normalisation: the contract between a checkpoint and every prediction made with it.

pytc-train normalises every patch with :func:`normalize_raw` and records the parameters in
the run's resolved config (``[data] normalize / mean / std / percentiles``); pytc-infer reads
them back from the checkpoint and calls the same function, so a model sees the same numbers
in training and in inference. :class:`RawNormalization` holds the mode and its parameters
(``to_dict`` / ``from_dict`` for storing it). Pure numpy, no torch.

Modes:

- ``auto``: integer raw divided by its dtype's maximum (uint8: 255, so [0, 1]); float (and
  bool) raw kept as it is;
- ``none``: only cast to float32;
- ``meanstd``: ``(x - mean) / std`` on the raw values;
- ``percentile``: the same with ``mean`` = the low percentile and ``std`` = high - low,
  clipped to [0, 1] (``percentiles`` records which ones they were).

Every step is float32 arithmetic (the parameters are rounded to float32 first).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

__all__ = ["NORMALIZE_MODES", "NormalizeMode", "RawNormalization", "fit_normalization",
           "normalize_raw"]

NormalizeMode = Literal["auto", "none", "meanstd", "percentile"]
NORMALIZE_MODES: tuple[str, ...] = ("auto", "none", "meanstd", "percentile")
#: the smallest std (and percentile spread) fitted from data: a constant volume gives this
MIN_STD = 1e-6


@dataclass(frozen=True)
class RawNormalization:
    """How raw voxels become model input: ``mode`` and its parameters.

    ``mean`` / ``std`` (raw intensity units) are required by ``meanstd`` and ``percentile``
    and absent for ``auto`` / ``none``; ``percentiles`` (low, high, in %) records what a
    ``percentile`` normalisation was fitted with; ``dtype`` names the raw dtype the model was
    trained on (e.g. ``"uint8"``, whose range ``auto`` maps to [0, 1]) where it is known.
    ``normalize_raw`` scales integer data by its own dtype's maximum, as it always did.
    Invalid parameters raise ValueError.
    """

    mode: NormalizeMode = "auto"
    mean: float | None = None
    std: float | None = None
    percentiles: tuple[float, float] | None = None
    dtype: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in NORMALIZE_MODES:
            raise ValueError(f"unknown raw normalisation '{self.mode}' (valid: "
                             f"{', '.join(NORMALIZE_MODES)})")
        if self.mode in ("meanstd", "percentile"):
            if self.mean is None or self.std is None:
                raise ValueError(f"raw normalisation '{self.mode}' needs mean and std (fit them "
                                 "with fit_normalization)")
            if not math.isfinite(self.mean):
                raise ValueError(f"raw normalisation mean must be finite, got {self.mean}")
            if not (math.isfinite(self.std) and self.std > 0):
                raise ValueError(f"raw normalisation std must be a positive number, got {self.std}")
            object.__setattr__(self, "mean", float(self.mean))
            object.__setattr__(self, "std", float(self.std))
        elif self.mean is not None or self.std is not None:
            raise ValueError(f"raw normalisation '{self.mode}' takes no mean / std")
        if self.percentiles is not None:
            lo, hi = (float(p) for p in self.percentiles)
            if not 0.0 <= lo < hi <= 100.0:
                raise ValueError(f"percentiles {tuple(self.percentiles)} must be low < high in "
                                 "[0, 100]")
            object.__setattr__(self, "percentiles", (lo, hi))
        if self.dtype is not None:
            try:
                object.__setattr__(self, "dtype", np.dtype(self.dtype).name)
            except TypeError:
                raise ValueError(f"raw dtype '{self.dtype}' is not a numpy dtype") from None

    def to_dict(self) -> dict[str, Any]:
        """The fields that are set, as plain values (TOML/JSON-safe: no None)."""
        out: dict[str, Any] = {"mode": self.mode}
        if self.mean is not None:
            out["mean"], out["std"] = self.mean, self.std
        if self.percentiles is not None:
            out["percentiles"] = list(self.percentiles)
        if self.dtype is not None:
            out["dtype"] = self.dtype
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RawNormalization:
        """The inverse of :meth:`to_dict`; unknown keys raise ValueError."""
        unknown = sorted(set(data) - {"mode", "mean", "std", "percentiles", "dtype"})
        if unknown:
            raise ValueError(f"unknown raw normalisation keys {unknown}")
        percentiles = data.get("percentiles")
        return cls(mode=data.get("mode", "auto"), mean=data.get("mean"), std=data.get("std"),
                   percentiles=None if percentiles is None else tuple(percentiles),
                   dtype=data.get("dtype"))


AUTO = RawNormalization()


def normalize_raw(raw: np.ndarray, normalization: RawNormalization = AUTO) -> np.ndarray:
    """Raw voxels as a new float32 array of the same shape, normalised as ``normalization``
    says (see the module docstring; default ``auto``). Any axis order; nothing is read from
    the shape."""
    raw = np.asarray(raw)
    out = raw.astype(np.float32)
    mode = normalization.mode
    if mode == "auto":
        if np.issubdtype(raw.dtype, np.integer):
            out /= np.float32(np.iinfo(raw.dtype).max)
    elif mode in ("meanstd", "percentile"):
        out -= np.float32(normalization.mean)
        out /= np.float32(normalization.std)
        if mode == "percentile":
            np.clip(out, 0.0, 1.0, out=out)
    return out


def fit_normalization(values: np.ndarray, mode: NormalizeMode,
                      percentiles: Sequence[float] = (1.0, 99.0)) -> RawNormalization:
    """The ``mode`` normalisation fitted to sampled raw ``values`` (any shape, computed in
    float64): ``meanstd`` their mean and standard deviation, ``percentile`` the low
    percentile and the spread to the high one (both at least 1e-6); ``auto`` / ``none``
    need no fit and are returned as they are."""
    if mode in ("auto", "none"):
        return RawNormalization(mode)
    data = np.asarray(values, dtype=np.float64).ravel()
    if mode == "percentile":
        lo, hi = np.percentile(data, percentiles)
        return RawNormalization(mode, float(lo), float(max(hi - lo, MIN_STD)),
                                percentiles=(float(percentiles[0]), float(percentiles[1])))
    if mode == "meanstd":
        return RawNormalization(mode, float(data.mean()), float(max(data.std(), MIN_STD)))
    raise ValueError(f"unknown raw normalisation '{mode}' (valid: {', '.join(NORMALIZE_MODES)})")
