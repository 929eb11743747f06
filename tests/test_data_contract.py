"""A checkpoint carries the contract with its data: pytc-train stores what it trained on
(voxel size, dtype, intensities, normalisation, offsets, patch) and pytc-infer refuses an
input at another voxel size, through the real commands."""

from __future__ import annotations

import h5py
import pytest

from pytc_core.cli import run_entry_point
from pytc_core.config import resolve_config
from pytc_core.contract import DataContract, IntensityStats, sample_intensities
from pytc_core.synthetic import synthetic_em_volume
from pytc_core.volume import open_volume, volume_exists

TINY_MEDNEXT = {"architecture": "mednext_custom", "mednext_base_channels": 4, "mednext_exp_r": 1,
                "mednext_block_counts": [1] * 9}


@pytest.fixture(scope="module")
def trained_at_8nm(tmp_path_factory):
    """A real pytc-train run (2 steps, 16x32x32 patches) on uint8 raw whose voxel size is 8 nm."""
    from pytc_train.config import TrainConfig
    from pytc_train.train import run_train

    tmp = tmp_path_factory.mktemp("contract")
    raw, labels = synthetic_em_volume((32, 48, 48), seed=3)
    path = tmp / "em.h5"
    with h5py.File(path, "w") as f:
        f["raw"] = raw
        f["labels"] = labels
        f["raw"].attrs["voxel_size"] = [8.0, 8.0, 8.0]
        f["labels"].attrs["voxel_size"] = [8.0, 8.0, 8.0]
    config = resolve_config(TrainConfig, None, overrides={
        "model": dict(TINY_MEDNEXT),
        "data": {"raw": f"{path}:raw", "labels": f"{path}:labels", "bbox": [0, 0, 0, 16, 48, 48],
                 "val_bbox": [16, 0, 0, 32, 48, 48], "patch_size": [16, 32, 32],
                 "batch_size": 2, "num_workers": 0, "val_max_patches": 2},
        "train": {"max_steps": 2, "val_every": 2, "checkpoint_every": 2, "log_every": 1,
                  "run_dir": str(tmp / "run"), "accelerator": "cpu", "precision": "32",
                  "seed": 4}})
    return f"{path}:raw", raw, run_train(config)


def test_the_checkpoint_stores_the_training_data_contract(trained_at_8nm):
    from pytc_core.models import load_model_from_checkpoint

    raw_uri, raw, result = trained_at_8nm
    _, config = load_model_from_checkpoint(result.last_checkpoint)
    contract = DataContract.from_dict(config["data_contract"])
    assert contract.voxel_size == (8.0, 8.0, 8.0) and contract.dtype == "uint8"
    assert contract.patch == (16, 32, 32)
    assert contract.offsets == ((-1, 0, 0), (0, -1, 0), (0, 0, -1))
    assert contract.normalization.to_dict() == {"mode": "auto", "dtype": "uint8"}
    # the statistics of the same 8 patches of the training region, computed again
    vol = open_volume(raw_uri)
    from pytc_core.bbox import BBox

    values = sample_intensities(vol, BBox((0, 0, 0), (16, 48, 48)), size=(16, 32, 32), seed=4)
    assert contract.intensity == IntensityStats.of(values)
    assert 0 <= contract.intensity.min <= contract.intensity.p1 < contract.intensity.p99
    assert contract.intensity.max <= raw[:16].max() and contract.intensity.count == 8 * 16 * 32 * 32


def test_pytc_infer_refuses_the_trained_model_on_a_4nm_input(trained_at_8nm, tmp_path, capsys):
    from pytc_core.volume import create_volume
    from pytc_infer.cli import app

    _, raw, result = trained_at_8nm
    uri = str(tmp_path / "raw4")
    create_volume(uri, raw.shape, raw.dtype, voxel_size=(4, 4, 4)).write(raw)
    code = run_entry_point("pytc-infer", app, ["-c", str(result.last_checkpoint), "-i", uri,
                                               "-o", str(tmp_path / "aff")])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and err.count("\n") == 1
    assert f"{uri} has voxel size 4x4x4 nm but the model was trained at 8x8x8 nm" in err
    assert not volume_exists(str(tmp_path / "aff"))
    code = run_entry_point("pytc-infer", app, ["-c", str(result.last_checkpoint), "-i", uri,
                                               "-o", str(tmp_path / "aff"),
                                               "--allow-resolution-mismatch"])
    out, err = capsys.readouterr()
    assert code == 0 and out.strip() == str(tmp_path / "aff"), err
    assert open_volume(out.strip()).voxel_size == (4.0, 4.0, 4.0)
