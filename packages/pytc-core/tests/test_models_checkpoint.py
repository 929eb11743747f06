"""pytc checkpoints: Lightning-compatible layout, rebuild from the file alone, clear errors."""

import pytest
import torch

from pytc_core import __version__
from pytc_core.errors import UserError
from pytc_core.models import (
    build_model,
    load_checkpoint_config,
    load_model_from_checkpoint,
    save_checkpoint,
)

MODEL = {"architecture": "mednext_custom", "in_channels": 1, "out_channels": 3,
         "mednext_base_channels": 4, "mednext_exp_r": [2, 2, 3, 3, 3, 3, 3, 2, 2],
         "mednext_block_counts": [1] * 9, "mednext_norm": "layer"}
CONFIG = {"model": MODEL,
          "targets": {"affinity_offsets": [[-1, 0, 0], [0, -1, 0], [0, 0, -1]]},
          "data": {"patch_size": [16, 32, 32], "voxel_size": [40.0, 8.0, 8.0],
                   "normalize": {"mean": 0.5, "std": 0.5}}}


def _trained():
    torch.manual_seed(5)
    model = build_model(MODEL)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def test_save_writes_the_lightning_layout(tmp_path):
    model = _trained()
    path = save_checkpoint(tmp_path / "run" / "last.ckpt", model, CONFIG, epoch=3,
                           global_step=120)
    assert path == tmp_path / "run" / "last.ckpt"
    assert not list((tmp_path / "run").glob("*.tmp"))
    raw = torch.load(path, weights_only=True)
    assert raw["epoch"] == 3 and raw["global_step"] == 120
    assert isinstance(raw["pytorch-lightning_version"], str)
    assert raw["hyper_parameters"] == {"config": CONFIG, "pytc_version": __version__,
                                       "pytc_checkpoint_format": 1}
    assert sorted(raw["state_dict"]) == sorted("model." + k for k in model.state_dict())
    assert torch.equal(raw["state_dict"]["model.stem.weight"], model.stem.weight)


def test_load_rebuilds_the_model_from_the_file_alone(tmp_path):
    model = _trained().eval()
    path = save_checkpoint(tmp_path / "a.ckpt", model, CONFIG)
    loaded, config = load_model_from_checkpoint(path)
    assert config == CONFIG
    assert load_checkpoint_config(path) == CONFIG
    assert not loaded.training
    x = torch.rand(1, 1, 16, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_lightning_can_load_it(tmp_path):
    pl = pytest.importorskip("pytorch_lightning")

    class Module(pl.LightningModule):
        def __init__(self, config, pytc_version, pytc_checkpoint_format):
            super().__init__()
            self.model = build_model(config["model"])

    model = _trained()
    path = save_checkpoint(tmp_path / "a.ckpt", model, CONFIG)
    module = Module.load_from_checkpoint(path, map_location="cpu")
    assert torch.equal(module.model.stem.weight, model.stem.weight)


def test_errors(tmp_path):
    with pytest.raises(UserError, match="checkpoint not found"):
        load_model_from_checkpoint(tmp_path / "missing.ckpt")
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint\n")
    with pytest.raises(UserError, match="is not a PyTorch checkpoint"):
        load_model_from_checkpoint(text)
    plain = tmp_path / "plain.pth"
    torch.save(_trained().state_dict(), plain)
    with pytest.raises(UserError) as exc:
        load_model_from_checkpoint(plain)
    assert "is not a pytc checkpoint" in exc.value.what
    assert "load_nnunet_mednext_weights" in exc.value.fix
    newer = tmp_path / "newer.ckpt"
    save_checkpoint(newer, _trained(), CONFIG)
    raw = torch.load(newer, weights_only=True)
    raw["hyper_parameters"]["pytc_checkpoint_format"] = 2
    raw["hyper_parameters"]["pytc_version"] = "9.0.0"
    torch.save(raw, newer)
    with pytest.raises(UserError) as exc:
        load_model_from_checkpoint(newer)
    assert exc.value.what.endswith(f"has checkpoint format 2 (written by pytc 9.0.0); this pytc "
                                   f"{__version__} reads format 1")
    other = tmp_path / "other.ckpt"
    save_checkpoint(other, _trained(), {**CONFIG, "model": {**MODEL, "out_channels": 2}})
    with pytest.raises(UserError, match="weights do not fit the model"):
        raw = torch.load(other, weights_only=True)
        raw["state_dict"] = {"model.stem.weight": raw["state_dict"]["model.stem.weight"]}
        torch.save(raw, other)
        load_model_from_checkpoint(other)
    with pytest.raises(ValueError, match="with a 'model' table"):
        save_checkpoint(tmp_path / "x.ckpt", _trained(), MODEL)
