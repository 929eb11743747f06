"""Train and infer normalise raw voxels with one function: what pytc-train writes into a
checkpoint, pytc-infer reads back and applies, bit for bit the same numbers."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pytc_core import BBox, create_volume
from pytc_core.config import config_to_dict
from pytc_core.normalize import normalize_raw
from pytc_train.config import DataConfig, TrainConfig
from pytc_train.data import VolumePair, norm_stats_for
from pytc_train.data import normalize_raw as train_normalize_raw

#: a two-level MONAI U-Net: a real zoo architecture for a real checkpoint file
TINY_MODEL = {"architecture": "monai_unet", "in_channels": 1, "out_channels": 3,
              "filters": [2, 4], "num_res_units": 0}


def _raw(dtype) -> np.ndarray:
    rng = np.random.default_rng(7)
    info = np.iinfo(dtype)
    raw = rng.integers(info.min, info.max, (8, 16, 16), dtype=dtype, endpoint=True)
    raw.flat[:2] = info.min, info.max
    return raw


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16])
@pytest.mark.parametrize(("normalize", "mean", "std"), [
    ("auto", None, None), ("none", None, None), ("meanstd", 120.25, 31.5),
    ("meanstd", None, None), ("percentile", None, None)])
def test_infer_normalises_what_train_saved_identically(tmp_path, dtype, normalize, mean, std):
    from pytc_core.models import build_model, load_checkpoint_config, save_checkpoint
    from pytc_infer.predictor import checkpoint_settings

    raw = _raw(dtype)
    uri = str(tmp_path / "raw.npy")
    create_volume(uri, raw.shape, dtype).write(raw)
    data = DataConfig(raw=uri, labels=uri, patch_size=(4, 8, 8), normalize=normalize,
                      mean=mean, std=std)
    # unset mean / std are fitted on the training source, as pytc-train's run does
    stats = norm_stats_for(data, VolumePair(uri, uri, BBox((0, 0, 0), raw.shape), 1.0, 1))
    if stats is not None:
        data = dataclasses.replace(data, mean=stats[0], std=stats[1])
    config = TrainConfig(data=data)
    ckpt = save_checkpoint(tmp_path / "run.ckpt", build_model(TINY_MODEL),
                           {**config_to_dict(config), "model": TINY_MODEL})

    trained = train_normalize_raw(raw, config.data)  # (1, Z, Y, X), as training patches
    settings = checkpoint_settings(load_checkpoint_config(ckpt))
    inferred = normalize_raw(raw[None], settings.normalization)  # as pytc-infer's blocks
    assert trained.dtype == inferred.dtype == np.float32
    np.testing.assert_array_equal(trained.view(np.uint32), inferred.view(np.uint32))
    if normalize == "auto":
        assert trained[0].flat[1] == 1.0  # the dtype's maximum
    if normalize == "percentile":  # 1st..99th percentile mapped to [0, 1]
        assert trained.min() == 0.0 and trained.max() == 1.0
        assert 0.01 < np.mean(trained == 0.0) < 0.03


def test_a_zero_std_is_refused_by_both_stages():
    from pytc_core.errors import UserError
    from pytc_infer.predictor import checkpoint_settings

    with pytest.raises(UserError, match="data.std must be a positive number, got 0.0"):
        DataConfig(normalize="meanstd", mean=3.0, std=0.0)
    with pytest.raises(UserError, match="std must be a positive number, got 0.0"):
        checkpoint_settings({"data": {"normalize": "meanstd", "mean": 3.0, "std": 0.0}})
