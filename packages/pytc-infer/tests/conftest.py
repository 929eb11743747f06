"""Fixtures: a tiny saved checkpoint and real raw volumes in tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

#: a two-level MONAI U-Net with 2 and 4 channels: real zoo architecture, milliseconds a window
TINY_MODEL = {"architecture": "monai_unet", "in_channels": 1, "out_channels": 3,
              "filters": [2, 4], "num_res_units": 0}


def save_tiny_checkpoint(path: Path, seed: int = 0, model: dict | None = None,
                         patch=(16, 16, 16)) -> Path:
    import torch

    from pytc_core.models import build_model, save_checkpoint

    torch.manual_seed(seed)
    table = dict(model or TINY_MODEL)
    net = build_model(table)
    with torch.no_grad():  # make the output depend visibly on the input
        for p in net.parameters():
            p.mul_(3.0)
    return save_checkpoint(path, net, {"model": table, "data": {"patch_size": list(patch)}})


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.ckpt")


def make_raw(shape=(40, 36, 44), seed: int = 1) -> np.ndarray:
    """uint8 raw with structure (smoothed noise), (Z, Y, X)."""
    rng = np.random.default_rng(seed)
    noise = rng.random(shape)
    for axis in range(3):
        noise = (noise + np.roll(noise, 1, axis) + np.roll(noise, -1, axis)) / 3
    lo, hi = noise.min(), noise.max()
    return ((noise - lo) / (hi - lo) * 255).astype(np.uint8)


def write_layer(uri: str, array: np.ndarray, offset=(0, 0, 0), voxel=(40.0, 8.0, 8.0),
                chunk=(16, 16, 16)) -> str:
    from pytc_core.volume import create_volume

    vol = create_volume(uri, array.shape, array.dtype, voxel_size=voxel, offset=offset,
                        chunk_size=chunk)
    vol.write(array)
    return uri


@pytest.fixture(scope="session")
def helpers():
    """The helpers above, for test modules (importlib mode cannot import conftest)."""
    from types import SimpleNamespace

    return SimpleNamespace(make_raw=make_raw, write_layer=write_layer,
                           save_tiny_checkpoint=save_tiny_checkpoint)
