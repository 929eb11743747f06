"""run_train with the recipe options on a tiny model: the EMA a real run keeps (formula,
validation on it, checkpoint, resume), LSD channels, per-channel loss, erosion."""

import dataclasses

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from pytc_core.errors import UserError
from pytc_core.models import load_model_from_checkpoint
from pytc_train.ema import EMA_STATE_KEY, EMAWeightsCallback
from pytc_train.train import run_train

DECAY = 0.8


class Recorder(pl.Callback):
    """The weights at the start and after every optimiser step; whether validation saw the
    EMA weights; the EMA at the start of training (after a resume: the restored one)."""

    def __init__(self) -> None:
        self.weights: list[dict[str, torch.Tensor]] = []
        self.validated_on_ema: list[bool] = []
        self.ema_at_start: dict[str, torch.Tensor] | None = None
        self._step = -1

    @staticmethod
    def _ema(trainer) -> EMAWeightsCallback:
        return next(c for c in trainer.callbacks if isinstance(c, EMAWeightsCallback))

    def _snapshot(self, pl_module) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone().double() for k, v in pl_module.model.state_dict().items()}

    def on_train_start(self, trainer, pl_module) -> None:
        self.weights.append(self._snapshot(pl_module))
        self._step = trainer.global_step
        ema = self._ema(trainer).ema
        assert ema is not None
        self.ema_at_start = {k: v.clone() for k, v in ema.items()}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step != self._step:
            self._step = trainer.global_step
            self.weights.append(self._snapshot(pl_module))

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx,
                                  dataloader_idx=0) -> None:
        ema = self._ema(trainer).ema
        assert ema is not None
        self.validated_on_ema.append(all(
            torch.equal(v, ema[f"model.{k}"]) for k, v in pl_module.model.state_dict().items()))


def _ema_of(path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    return ckpt["callbacks"][EMA_STATE_KEY]["ema_state"]


@pytest.fixture(scope="module")
def ema_run(em_h5, tmp_path_factory, tiny_config):
    config = tiny_config(em_h5, tmp_path_factory.mktemp("ema"), resume="auto")
    config = dataclasses.replace(config, optim=dataclasses.replace(config.optim, ema=DECAY))
    recorder = Recorder()
    return config, run_train(config, callbacks=[recorder]), recorder


def test_the_checkpoint_keeps_the_ema_of_every_step(ema_run):
    config, result, recorder = ema_run
    history = recorder.weights
    assert len(history) == 1 + 4  # the start, then 4 optimiser steps
    ema = _ema_of(result.last_checkpoint)
    k = len(history) - 1
    for name, first in history[0].items():
        expected = DECAY ** k * first + sum((1 - DECAY) * DECAY ** (k - i) * history[i][name]
                                            for i in range(1, k + 1))
        np.testing.assert_allclose(ema[f"model.{name}"].double().numpy(), expected.numpy(),
                                   rtol=0, atol=1e-6)
    # the raw weights are saved as the state dict, unchanged by the validation swaps
    state = torch.load(result.last_checkpoint, map_location="cpu", weights_only=False)
    for name, value in history[-1].items():
        np.testing.assert_array_equal(state["state_dict"][f"model.{name}"].double().numpy(),
                                      value.numpy())


def test_validation_and_the_loaders_use_the_ema_weights(ema_run):
    config, result, recorder = ema_run
    assert recorder.validated_on_ema and all(recorder.validated_on_ema)
    model, stored = load_model_from_checkpoint(result.best_checkpoint)  # auto: EMA
    assert stored["source"] == {"layout": "pytc", "weights": "ema",
                                "path": str(result.best_checkpoint)}
    ema = _ema_of(result.best_checkpoint)
    for name, value in model.state_dict().items():
        assert torch.equal(value, ema[f"model.{name}"])
    raw, stored = load_model_from_checkpoint(result.best_checkpoint, weights="raw")
    assert stored["source"]["weights"] == "raw"
    assert any(not torch.equal(v, model.state_dict()[k]) for k, v in raw.state_dict().items())


def test_resume_keeps_the_ema_state(em_h5, tmp_path, tiny_config):
    config = tiny_config(em_h5, tmp_path, max_steps=2, resume="auto")
    config = dataclasses.replace(config, optim=dataclasses.replace(config.optim, ema=DECAY))
    first = run_train(config)
    saved = _ema_of(first.last_checkpoint)
    longer = dataclasses.replace(config, train=dataclasses.replace(
        config.train, max_steps=4, resume_changed=True))
    recorder = Recorder()
    resumed = run_train(longer, callbacks=[recorder])
    assert recorder.ema_at_start is not None
    assert recorder.ema_at_start.keys() == saved.keys()
    for name, value in saved.items():
        assert torch.equal(recorder.ema_at_start[name], value)
    ckpt = torch.load(resumed.last_checkpoint, map_location="cpu", weights_only=False)
    assert ckpt["callbacks"][EMA_STATE_KEY]["updates"] == 4
    # and it went on averaging: the EMA after 4 steps is not the saved one
    assert any(not torch.equal(v, saved[k]) for k, v in _ema_of(resumed.last_checkpoint).items())


def test_lsd_per_channel_and_erosion_train_and_check_the_channel_count(em_h5, tmp_path,
                                                                       tiny_config):
    config = tiny_config(em_h5, tmp_path, max_steps=2, val_every=2)
    config = dataclasses.replace(
        config, loss=dataclasses.replace(config.loss, lsd_weight=1.0, lsd_sigma=(2.0,),
                                         reduction="per_channel"),
        data=dataclasses.replace(config.data, erode=1))
    with pytest.raises(UserError, match=r"loss.lsd_weight adds 10 LSD channels.*"
                                        r"model.out_channels = 13"):
        run_train(config)
    config = dataclasses.replace(config, model=dataclasses.replace(config.model,
                                                                   out_channels=13))
    result = run_train(config)
    model, stored = load_model_from_checkpoint(result.last_checkpoint)
    assert stored["loss"] == {"reduction": "per_channel", "lsd_weight": 1.0,
                              "lsd_sigma": [2.0]}
    assert stored["data"]["erode"] == 1
    out = model(torch.zeros(2, 1, 16, 16, 16))
    out = out["output"] if isinstance(out, dict) else out
    assert out.shape[1] == 13
    assert 0 <= result.val_scores["boundary_f1"] <= 1
