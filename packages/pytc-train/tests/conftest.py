"""Shared fixtures: a small synthetic EM volume on disk and a tiny model config."""

import h5py
import pytest

from pytc_core.synthetic import synthetic_em_volume

#: a MedNeXt small enough for 16^3 patches in well under a second per step
TINY_MODEL = {"architecture": "mednext_custom", "mednext_base_channels": 4, "mednext_exp_r": 1,
              "mednext_block_counts": [1] * 9}


@pytest.fixture(scope="session")
def em_h5(tmp_path_factory):
    """(raw uint8, labels uint64) 32x48x48 in one HDF5 file; returns (raw URI, labels URI, arrays)."""
    raw, labels = synthetic_em_volume((32, 48, 48), seed=3)
    path = tmp_path_factory.mktemp("em") / "em.h5"
    with h5py.File(path, "w") as f:
        f["raw"] = raw
        f["labels"] = labels
    return f"{path}:raw", f"{path}:labels", raw, labels


@pytest.fixture(scope="session")
def tiny_config():
    """``make(em_h5, tmp_path, **train_keys)``: a TrainConfig for the tiny model (train z < 16,
    validate z >= 16, 16^3 patches, batch 2, 4 steps, no workers)."""
    return make_tiny_config


def make_tiny_config(em, tmp_path, **train):
    from pytc_core.config import resolve_config
    from pytc_train.config import TrainConfig

    raw, labels = em[0], em[1]
    overrides = {"model": dict(TINY_MODEL),
                 "data": {"raw": raw, "labels": labels, "bbox": [0, 0, 0, 16, 48, 48],
                          "val_bbox": [16, 0, 0, 32, 48, 48], "patch_size": [16, 16, 16],
                          "batch_size": 2, "num_workers": 0, "val_max_patches": 4},
                 "train": {"max_steps": 4, "val_every": 2, "checkpoint_every": 2, "log_every": 1,
                           "run_dir": str(tmp_path / "run"), "accelerator": "cpu",
                           "precision": "32", **train}}
    return resolve_config(TrainConfig, None, overrides=overrides)
