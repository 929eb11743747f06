"""Intensity transforms of the image only (labels and masks untouched): contrast, brightness,
gamma, Gaussian noise. Values in the units of the normalised image ([0, 1] for uint8 raw)."""

from __future__ import annotations

from typing import Any

import numpy as np

from pytc_train.augment.base import IMAGE_KEY, Patch, PatchTransform

__all__ = ["RandBrightnessd", "RandContrastd", "RandGammad", "RandGaussianNoised"]


def _per_section(R: np.random.RandomState, lo: float, hi: float, z: int, per_section: bool
                 ) -> np.ndarray:
    """Factors of shape (Z, 1, 1): one per section, or one for the patch."""
    values = R.uniform(lo, hi, size=z if per_section else 1)
    return np.broadcast_to(values, (z,)).reshape(z, 1, 1).astype(np.float32)


class RandContrastd(PatchTransform):
    """``x' = (x - mean) · c + mean`` with c in [1 - max_delta, 1 + max_delta]; the mean (and c)
    per section with ``per_section``. ``params["factor"]``: (Z, 1, 1)."""

    def __init__(self, prob: float, max_delta: float, per_section: bool) -> None:
        super().__init__(prob)
        self.max_delta, self.per_section = max_delta, per_section

    def draw(self, d: Patch) -> dict[str, Any] | None:
        z = d[IMAGE_KEY].shape[-3]
        return {"factor": _per_section(self.R, 1 - self.max_delta, 1 + self.max_delta, z,
                                       self.per_section)}

    def apply(self, d: Patch, params: dict[str, Any]) -> Patch:
        image = d[IMAGE_KEY]
        axes = (-2, -1) if self.per_section else (-3, -2, -1)
        mean = image.mean(axis=axes, keepdims=True)
        d[IMAGE_KEY] = ((image - mean) * params["factor"] + mean).astype(image.dtype, copy=False)
        return d


class RandBrightnessd(PatchTransform):
    """``x' = x + b`` with b in [-max_delta, max_delta] (per section with ``per_section``)."""

    def __init__(self, prob: float, max_delta: float, per_section: bool) -> None:
        super().__init__(prob)
        self.max_delta, self.per_section = max_delta, per_section

    def draw(self, d: Patch) -> dict[str, Any] | None:
        z = d[IMAGE_KEY].shape[-3]
        return {"offset": _per_section(self.R, -self.max_delta, self.max_delta, z,
                                       self.per_section)}

    def apply(self, d: Patch, params: dict[str, Any]) -> Patch:
        image = d[IMAGE_KEY]
        d[IMAGE_KEY] = (image + params["offset"]).astype(image.dtype, copy=False)
        return d


class RandGammad(PatchTransform):
    """Gamma correction on the patch's min-max range: ``t = (x - lo) / (hi - lo)``,
    ``x' = lo + (hi - lo) · t**g`` with log g in [-max_log_gamma, max_log_gamma]."""

    def __init__(self, prob: float, max_log_gamma: float) -> None:
        super().__init__(prob)
        self.max_log_gamma = max_log_gamma

    def draw(self, d: Patch) -> dict[str, Any] | None:
        return {"gamma": float(np.exp(self.R.uniform(-self.max_log_gamma, self.max_log_gamma)))}

    def apply(self, d: Patch, params: dict[str, Any]) -> Patch:
        image = d[IMAGE_KEY]
        lo, hi = float(image.min()), float(image.max())
        if hi > lo:
            t = (image - lo) / (hi - lo)
            d[IMAGE_KEY] = (lo + (hi - lo) * np.power(t, params["gamma"])).astype(image.dtype,
                                                                                   copy=False)
        return d


class RandGaussianNoised(PatchTransform):
    """Add Gaussian noise with std drawn in [0, max_std]."""

    def __init__(self, prob: float, max_std: float) -> None:
        super().__init__(prob)
        self.max_std = max_std

    def draw(self, d: Patch) -> dict[str, Any] | None:
        return {"std": float(self.R.uniform(0, self.max_std))}

    def apply(self, d: Patch, params: dict[str, Any]) -> Patch:
        image = d[IMAGE_KEY]
        noise = self.R.standard_normal(image.shape).astype(image.dtype)
        noise *= params["std"]
        d[IMAGE_KEY] = image + noise
        return d
