"""The data contract: stored values round-trip, voxel sizes and intensities checked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from pytc_core.contract import (
    DataContract,
    IntensityStats,
    intensity_mismatch,
    matching_level,
    sample_intensities,
    voxel_size_mismatch,
)
from pytc_core.normalize import RawNormalization, fit_normalization
from pytc_core.volume import create_volume


def _contract(values: np.ndarray, normalization=RawNormalization("auto", dtype="uint8")):
    return DataContract((8.0, 8.0, 8.0), "uint8", IntensityStats.of(values), normalization,
                        ((-1, 0, 0), (0, -1, 0), (0, 0, -1)), (16, 16, 16))


def test_intensity_stats_by_hand_and_the_contract_round_trips():
    stats = IntensityStats.of(np.arange(101, dtype=np.uint8))  # 0..100
    assert (stats.min, stats.max, stats.p1, stats.p99, stats.mean, stats.count) == (
        0.0, 100.0, 1.0, 99.0, 50.0, 101)
    assert stats.std == pytest.approx(np.sqrt((101**2 - 1) / 12))
    c = _contract(np.arange(256, dtype=np.uint8))
    assert DataContract.from_dict(c.to_dict()) == c
    assert c.to_dict()["voxel_size"] == [8.0, 8.0, 8.0] and c.to_dict()["patch"] == [16, 16, 16]


def test_voxel_sizes_within_five_percent_per_axis_match():
    assert not voxel_size_mismatch((8, 8, 8), (8.39, 7.61, 8))   # 4.9 % off at most
    assert voxel_size_mismatch((8, 8, 8), (8, 8, 8.41))          # 5.1 % off on x
    assert voxel_size_mismatch((40, 8, 8), (8, 8, 40))
    levels = [("l", (4.0, 4.0, 4.0)), ("l@mip=1", (8.0, 8.0, 8.0)), ("l@mip=2", (16.0, 16.0, 16.0))]
    assert matching_level((8, 8, 8), levels) == 1
    assert matching_level((12, 12, 12), levels) is None


def test_uint16_holding_uint8_values_is_257_times_too_narrow_under_auto():
    values = np.arange(256, dtype=np.uint8)
    contract = _contract(values)
    assert intensity_mismatch(contract, "uint8", IntensityStats.of(values)) is None
    problem = intensity_mismatch(contract, "uint16", IntensityStats.of(values.astype(np.uint16)))
    assert problem is not None and "257x narrower" in problem
    assert "uint16, values 0-255" in problem and "uint8, values 0-255" in problem
    # a meanstd normalisation fitted on the raw values maps both dtypes to the same numbers
    fitted = fit_normalization(values, "meanstd")
    assert intensity_mismatch(_contract(values, fitted), "uint16",
                              IntensityStats.of(values.astype(np.uint16))) is None
    # a dark uint8 input (0-15) under auto: 16x narrower
    dark = intensity_mismatch(contract, "uint8", IntensityStats.of(np.arange(16, dtype=np.uint8)))
    assert dark is not None and "narrower" in dark


def test_sample_intensities_reads_the_same_boxes_for_the_same_seed(tmp_path):
    raw = np.arange(32 * 32 * 32, dtype=np.uint32).reshape(32, 32, 32)
    vol = create_volume(str(tmp_path / "v.npy"), raw.shape, raw.dtype)
    vol.write(raw)
    a = sample_intensities(vol, samples=3, size=(8, 8, 8), seed=5)
    assert a.size == 3 * 8**3 and np.array_equal(a, sample_intensities(vol, samples=3,
                                                                      size=(8, 8, 8), seed=5))
    assert set(a.tolist()) <= set(raw.ravel().tolist())
    whole = sample_intensities(vol, samples=1, size=(64, 64, 64))  # capped by the volume
    assert np.array_equal(np.sort(whole), raw.ravel())
