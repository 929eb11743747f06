"""Checkpoint settings and raw normalisation as pytc-train writes and applies them."""

from __future__ import annotations

import numpy as np
import pytest

from pytc_core.errors import UserError
from pytc_core.normalize import RawNormalization
from pytc_infer.memory import parse_bytes
from pytc_infer.predictor import checkpoint_settings, normalize_raw


def test_normalisation_matches_the_training_conventions():
    raw = np.array([0, 51, 255], np.uint8)
    np.testing.assert_allclose(normalize_raw(raw), [0.0, 0.2, 1.0])
    np.testing.assert_allclose(normalize_raw(raw, RawNormalization("meanstd", 10, 2)), [-5.0, 20.5, 122.5])
    np.testing.assert_allclose(normalize_raw(raw, RawNormalization("percentile", 0, 100)), [0.0, 0.51, 1.0])
    np.testing.assert_allclose(normalize_raw(raw.astype(np.float32)), [0.0, 51.0, 255.0])
    assert normalize_raw(raw).dtype == np.float32


def test_checkpoint_settings():
    offsets = [[-1, 0, 0], [0, -1, 0], [0, 0, -1], [-3, 0, 0], [0, -3, 0], [0, 0, -3]]
    s = checkpoint_settings({"model": {"in_channels": 1, "out_channels": 6},
                             "data": {"patch_size": [32, 64, 64], "offsets": offsets,
                                      "normalize": "meanstd", "mean": 120.0, "std": 30.0}})
    assert s.patch == (32, 64, 64) and s.offsets[3] == (-3, 0, 0) and s.activation == "sigmoid"
    assert (s.normalize, s.mean, s.std) == ("meanstd", 120.0, 30.0)
    assert s.normalization == RawNormalization("meanstd", 120.0, 30.0)
    plain = checkpoint_settings({"model": {"out_channels": 3}})
    assert plain.offsets == ((-1, 0, 0), (0, -1, 0), (0, 0, -1)) and plain.patch is None
    with pytest.raises(UserError, match="activation"):
        checkpoint_settings({"model": {}, "targets": {"activation": "softmax"}})
    # training divided by a zero std (inf / NaN input); such a checkpoint is refused
    with pytest.raises(UserError, match="std must be a positive number, got 0.0"):
        checkpoint_settings({"model": {}, "data": {"normalize": "meanstd", "mean": 5.0,
                                                   "std": 0.0}})


def test_parse_bytes():
    assert parse_bytes("8GiB") == 8 * 2**30 and parse_bytes("512MB") == 512 * 10**6
    assert parse_bytes("1e9") == 10**9
    with pytest.raises(UserError, match="bad memory size"):
        parse_bytes("lots")


def test_lsd_channels_of_a_checkpoint_are_not_written():
    config = {"model": {"out_channels": 13}, "data": {"offsets": [[-1, 0, 0], [0, -1, 0],
                                                                  [0, 0, -1]]},
              "loss": {"lsd_weight": 1.0}}
    assert checkpoint_settings(config).out_channels == 3  # 3 affinities; the 10 LSDs stay unwritten
    config["loss"]["lsd_weight"] = 0.0  # without LSDs every channel is written
    assert checkpoint_settings(config).out_channels == 13
