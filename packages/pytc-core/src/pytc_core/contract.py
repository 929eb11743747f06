"""The data contract of a checkpoint: what the training data looked like.

pytc-train stores a :class:`DataContract` in every checkpoint (``hyper_parameters.config
["data_contract"]``, beside the resolved config): the training raw's voxel size (nm, z y x),
dtype and intensity statistics, the raw normalisation (:mod:`pytc_core.normalize`, the one
function train and infer share), the affinity offsets and the patch. pytc-infer checks its
input against it with the functions here:

- :func:`voxel_size_mismatch`: a voxel size differing by more than ``tolerance`` (relative,
  per axis) from the training one; :func:`matching_level` picks the scale of a multiscale
  input that matches;
- :func:`intensity_mismatch`: input intensities whose normalised range does not fit the
  training data's (e.g. uint16 input holding 0-255 values when training saw uint8: ``auto``
  normalisation divides by 65535 instead of 255, so the model sees values 257x too small).

Pure numpy; the sampling of a volume (:func:`sample_intensities`) reads through
:class:`pytc_core.volume.Volume`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pytc_core.bbox import BBox
from pytc_core.normalize import RawNormalization, normalize_raw
from pytc_core.volume import Volume

__all__ = ["DataContract", "IntensityStats", "intensity_mismatch", "matching_level",
           "sample_intensities", "voxel_size_mismatch", "VOXEL_TOLERANCE"]

#: relative difference per axis beyond which two voxel sizes differ (5 %)
VOXEL_TOLERANCE = 0.05
#: normalised intensity spreads differing by more than this factor do not fit
SPREAD_FACTOR = 4.0

Vec3f = tuple[float, float, float]


@dataclass(frozen=True)
class IntensityStats:
    """Intensity statistics of sampled raw values (raw units): min, max, 1st and 99th
    percentiles, mean, standard deviation, and how many values were sampled."""

    min: float
    max: float
    p1: float
    p99: float
    mean: float
    std: float
    count: int

    @classmethod
    def of(cls, values: np.ndarray) -> IntensityStats:
        """The statistics of ``values`` (any shape; float64 arithmetic)."""
        data = np.asarray(values, dtype=np.float64).ravel()
        if data.size == 0:
            raise ValueError("no values to compute intensity statistics of")
        p1, p99 = np.percentile(data, (1.0, 99.0))
        return cls(float(data.min()), float(data.max()), float(p1), float(p99),
                   float(data.mean()), float(data.std()), int(data.size))

    def to_dict(self) -> dict[str, Any]:
        return {"min": self.min, "max": self.max, "p1": self.p1, "p99": self.p99,
                "mean": self.mean, "std": self.std, "count": self.count}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> IntensityStats:
        return cls(float(data["min"]), float(data["max"]), float(data["p1"]), float(data["p99"]),
                   float(data["mean"]), float(data["std"]), int(data.get("count", 0)))

    def line(self) -> str:
        """``values 0-255 (p1-p99 3-250, mean 127.5)``."""
        return (f"values {self.min:g}-{self.max:g} (p1-p99 {self.p1:g}-{self.p99:g}, "
                f"mean {self.mean:.4g})")


@dataclass(frozen=True)
class DataContract:
    """What a model was trained on: ``voxel_size`` (nm, z y x), raw ``dtype``, sampled
    ``intensity`` statistics, the raw ``normalization``, the affinity ``offsets`` (voxels,
    z y x) and the training ``patch`` (voxels, z y x)."""

    voxel_size: Vec3f
    dtype: str
    intensity: IntensityStats
    normalization: RawNormalization
    offsets: tuple[tuple[int, int, int], ...]
    patch: tuple[int, int, int]

    def to_dict(self) -> dict[str, Any]:
        """Plain values (TOML/JSON-safe) for a checkpoint."""
        return {"voxel_size": list(self.voxel_size), "dtype": self.dtype,
                "intensity": self.intensity.to_dict(),
                "normalization": self.normalization.to_dict(),
                "offsets": [list(o) for o in self.offsets], "patch": list(self.patch)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DataContract:
        """The inverse of :meth:`to_dict` (KeyError / ValueError for a damaged one)."""
        vz, vy, vx = (float(v) for v in data["voxel_size"])
        pz, py, px = (int(v) for v in data["patch"])
        return cls((vz, vy, vx), str(np.dtype(data["dtype"]).name),
                   IntensityStats.from_dict(data["intensity"]),
                   RawNormalization.from_dict(data["normalization"]),
                   tuple((int(o[0]), int(o[1]), int(o[2])) for o in data["offsets"]),
                   (pz, py, px))


def sample_intensities(volume: Volume, box: BBox | None = None, *, samples: int = 8,
                       size: Sequence[int] = (32, 64, 64), seed: int = 0) -> np.ndarray:
    """Raw values of ``samples`` random boxes of ``size`` voxels (z, y, x; capped by the
    region) inside ``box`` (default: the whole volume), all channels, as one flat array.
    The same seed reads the same boxes."""
    box = volume.bbox if box is None else box
    shape = tuple(min(int(s), int(n)) for s, n in zip(size, box.shape, strict=True))
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(max(1, samples)):
        start = tuple(int(rng.integers(a, b - s + 1))
                      for a, b, s in zip(box.start, box.stop, shape, strict=True))
        values.append(np.asarray(volume.read(BBox.from_shape(shape, start))).ravel())
    return np.concatenate(values)


def voxel_size_mismatch(trained: Sequence[float], given: Sequence[float],
                        tolerance: float = VOXEL_TOLERANCE) -> bool:
    """Whether ``given`` differs from ``trained`` (nm, z y x) by more than ``tolerance``
    (relative to the trained size) along any axis."""
    return any(abs(float(g) - float(t)) > tolerance * float(t)
               for t, g in zip(trained, given, strict=True))


def matching_level(trained: Sequence[float], levels: Sequence[tuple[str, Sequence[float]]],
                   tolerance: float = VOXEL_TOLERANCE) -> int | None:
    """The index of the first of ``levels`` ((URI, voxel size nm z y x), finest first)
    whose voxel size matches ``trained`` within ``tolerance``, or None."""
    for i, (_, voxel) in enumerate(levels):
        if not voxel_size_mismatch(trained, voxel, tolerance):
            return i
    return None


def _normalised_range(stats: IntensityStats, dtype: str,
                      normalization: RawNormalization) -> tuple[float, float]:
    """The p1 and p99 of raw values of ``dtype`` after ``normalization``."""
    raw = np.asarray([stats.p1, stats.p99]).astype(np.dtype(dtype))
    lo, hi = normalize_raw(raw, normalization)
    return float(lo), float(hi)


def intensity_mismatch(contract: DataContract, dtype: str, stats: IntensityStats) -> str | None:
    """A sentence with the numbers when input values of ``dtype`` with statistics ``stats``
    do not fit the training data once normalised as the model was trained (their p1-p99
    ranges do not overlap, or their spreads differ by more than 4x); None when they fit."""
    norm = contract.normalization
    t_lo, t_hi = _normalised_range(contract.intensity, contract.dtype, norm)
    i_lo, i_hi = _normalised_range(stats, dtype, norm)
    t_spread, i_spread = max(t_hi - t_lo, 1e-12), max(i_hi - i_lo, 1e-12)
    ratio = i_spread / t_spread
    overlap = i_lo <= t_hi and t_lo <= i_hi
    if overlap and 1 / SPREAD_FACTOR <= ratio <= SPREAD_FACTOR:
        return None
    if 1 / SPREAD_FACTOR <= ratio <= SPREAD_FACTOR:
        how = "outside the range of"
    else:
        how = (f"{1 / ratio:.3g}x narrower than" if ratio < 1 else f"{ratio:.3g}x wider than")
    return (f"the input ({np.dtype(dtype).name}, {stats.line()}) normalised ({norm.mode}) spans "
            f"{i_lo:.4g}-{i_hi:.4g} (p1-p99), {how} the training data ({contract.dtype}, "
            f"{contract.intensity.line()}) at {t_lo:.4g}-{t_hi:.4g}")
