"""An exponential moving average of the weights (``optim.ema``), as a Lightning callback.

After every optimiser step, ``ema = decay * ema + (1 - decay) * weights`` for each floating
tensor of the model's state dict (other tensors are copied); the average starts as the
weights at the first step of the run. Validation runs on the averaged weights (so the
validation scores and ``best.ckpt``'s choice are the EMA's), the raw weights are put back
before anything is saved. Checkpoints keep the average where PyTC v2's ``EMAWeightsCallback``
keeps it, ``callbacks["EMAWeightsCallback"]["ema_state"]["model.<name>"]``, which is where
``pytc_core.models.load_model_from_checkpoint(weights="auto"|"ema")`` (and so pytc-infer)
finds it; a resumed run restores it from there.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

__all__ = ["EMA_STATE_KEY", "EMAWeightsCallback", "ema_update"]

#: the callback's key in a checkpoint's ``callbacks`` table (PyTC v2's name)
EMA_STATE_KEY = "EMAWeightsCallback"
_PREFIX = "model."


@torch.no_grad()
def ema_update(ema: dict[str, Tensor], model: nn.Module, decay: float) -> None:
    """One EMA step in place: ``ema[k] = decay * ema[k] + (1 - decay) * model[k]`` for the
    floating tensors of ``model.state_dict()`` (keys ``model.<name>``); others are copied."""
    for name, value in model.state_dict().items():
        avg = ema[_PREFIX + name]
        if avg.is_floating_point():
            avg.mul_(decay).add_(value.detach().to(avg.dtype), alpha=1.0 - decay)
        else:
            avg.copy_(value)


def _net(pl_module: pl.LightningModule) -> nn.Module:
    net = pl_module.model
    assert isinstance(net, nn.Module)
    return net


class EMAWeightsCallback(pl.Callback):
    """Keeps the EMA of ``pl_module.model``'s weights with ``decay`` in (0, 1); see the module
    docstring. Put it first among the callbacks: a checkpoint saved at the end of a step
    (another callback's ``on_train_batch_end``) then holds that step's average."""

    def __init__(self, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.ema: dict[str, Tensor] | None = None
        self.updates = 0
        self._step = -1
        self._raw: dict[str, Tensor] | None = None

    @property
    def state_key(self) -> str:
        return EMA_STATE_KEY

    def _start(self, pl_module: pl.LightningModule) -> dict[str, Tensor]:
        own = _net(pl_module).state_dict()
        if self.ema is None:
            self.ema = {_PREFIX + k: v.detach().clone() for k, v in own.items()}
        else:  # restored from a checkpoint: onto the model's device
            self.ema = {k: v.to(own[k[len(_PREFIX):]].device) for k, v in self.ema.items()}
        return self.ema

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start(pl_module)
        self._step = trainer.global_step

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_step == self._step:  # a micro-batch of gradient accumulation
            return
        self._step = trainer.global_step
        ema = self.ema if self.ema is not None else self._start(pl_module)
        ema_update(ema, _net(pl_module), self.decay)
        self.updates += 1

    @torch.no_grad()
    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.ema is None or trainer.sanity_checking:
            return
        own = _net(pl_module).state_dict()
        self._raw = {k: v.detach().clone() for k, v in own.items()}
        for k, v in own.items():
            v.copy_(self.ema[_PREFIX + k])

    @torch.no_grad()
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._raw is None:
            return
        for k, v in _net(pl_module).state_dict().items():
            v.copy_(self._raw[k])
        self._raw = None

    def state_dict(self) -> dict[str, Any]:
        if self.ema is None:
            return {"decay": self.decay, "updates": self.updates}
        return {"ema_state": {k: v.detach().clone() for k, v in self.ema.items()},
                "decay": self.decay, "updates": self.updates}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        ema = state_dict.get("ema_state")
        if isinstance(ema, dict) and ema:
            self.ema = {str(k): v for k, v in ema.items()}
        self.updates = int(state_dict.get("updates", 0))
