"""The one raw normalisation of pytc-train and pytc-infer (pytc_core.normalize)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pytc_core.normalize import RawNormalization, fit_normalization, normalize_raw

f32 = np.float32


def _exact(actual: np.ndarray, expected: list) -> None:
    assert actual.dtype == np.float32
    np.testing.assert_array_equal(actual, np.array(expected, dtype=np.float32), strict=True)


def test_auto_divides_integers_by_their_dtype_maximum_and_keeps_floats():
    _exact(normalize_raw(np.array([0, 51, 255], np.uint8)), [0.0, f32(0.2), 1.0])
    _exact(normalize_raw(np.array([0, 257, 65535], np.uint16)), [0.0, f32(1) / f32(255), 1.0])
    _exact(normalize_raw(np.array([-128, 127], np.int8)), [f32(-128) / f32(127), 1.0])
    _exact(normalize_raw(np.array([0.5, -1.25], np.float64)), [0.5, -1.25])
    _exact(normalize_raw(np.array([True, False])), [1.0, 0.0])
    _exact(normalize_raw(np.array([-3, 7], np.int16), RawNormalization("none")), [-3.0, 7.0])


def test_meanstd_and_percentile_in_float32():
    raw = np.array([10, 20, 30], np.uint8)
    _exact(normalize_raw(raw, RawNormalization("meanstd", 20, 4)), [-2.5, 0.0, 2.5])
    # percentile: the same arithmetic, clipped to [0, 1]
    _exact(normalize_raw(np.array([0, 50, 100, 250], np.uint8),
                         RawNormalization("percentile", 50.0, 100.0)), [0.0, 0.0, 0.5, 1.0])
    # the parameters are rounded to float32 before they are applied
    _exact(normalize_raw(np.zeros(1, np.uint8), RawNormalization("meanstd", 0.1, 1.0)),
           [-f32(0.1)])


def test_shape_kept_and_input_untouched():
    raw = np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2)
    before = raw.copy()
    out = normalize_raw(raw, RawNormalization("meanstd", 1.0, 2.0))
    assert out.shape == (2, 3, 2, 2) and out is not raw
    np.testing.assert_array_equal(raw, before)
    assert out[1, 2, 1, 1] == 11.0


def test_fit_from_samples():
    values = np.array([[1, 2], [3, 4]], np.uint8)
    fitted = fit_normalization(values, "meanstd")
    assert fitted == RawNormalization("meanstd", 2.5, math.sqrt(1.25))
    assert fit_normalization(values, "percentile", (0, 100)) == RawNormalization(
        "percentile", 1.0, 3.0, percentiles=(0.0, 100.0))
    # numpy's linear interpolation: 25th of 1..4 is 1.75, 75th is 3.25
    assert fit_normalization(values, "percentile", (25, 75)) == RawNormalization(
        "percentile", 1.75, 1.5, percentiles=(25.0, 75.0))
    assert fit_normalization(np.full(8, 7, np.uint8), "meanstd") == RawNormalization(
        "meanstd", 7.0, 1e-6)
    assert fit_normalization(values, "auto") == RawNormalization()


def test_dict_round_trip():
    norm = RawNormalization("percentile", 1.75, 1.5, percentiles=(25, 75), dtype="uint8")
    assert norm.to_dict() == {"mode": "percentile", "mean": 1.75, "std": 1.5,
                              "percentiles": [25.0, 75.0], "dtype": "uint8"}
    assert RawNormalization.from_dict(norm.to_dict()) == norm
    assert RawNormalization().to_dict() == {"mode": "auto"}
    assert RawNormalization.from_dict({}) == RawNormalization("auto")
    assert RawNormalization(dtype=np.uint16).dtype == "uint16"  # type: ignore[arg-type]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"mode": "zscore"}, "unknown raw normalisation 'zscore'"),
    ({"mode": "meanstd"}, "needs mean and std"),
    ({"mode": "meanstd", "mean": 1.0, "std": 0.0}, "std must be a positive number, got 0.0"),
    ({"mode": "percentile", "mean": 1.0, "std": -2.0}, "std must be a positive number"),
    ({"mode": "meanstd", "mean": float("nan"), "std": 1.0}, "mean must be finite"),
    ({"mode": "auto", "mean": 1.0}, "'auto' takes no mean / std"),
    ({"mode": "percentile", "mean": 0.0, "std": 1.0, "percentiles": (99, 1)}, "low < high"),
    ({"dtype": "voxels"}, "not a numpy dtype"),
])
def test_invalid_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RawNormalization(**kwargs)


def test_from_dict_refuses_unknown_keys():
    with pytest.raises(ValueError, match=r"unknown raw normalisation keys \['scale'\]"):
        RawNormalization.from_dict({"mode": "auto", "scale": 2})
