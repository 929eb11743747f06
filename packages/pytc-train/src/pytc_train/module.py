"""The LightningModule: an affinity model from the zoo, masked BCE + soft Dice (pooled or
per channel), optional local shape descriptors as an auxiliary target, deep supervision,
AdamW with warm-up + cosine, validation precision / recall / F1 at 0.5.

Tensors are (N, C, Z, Y, X); targets and masks (N, K, Z, Y, X) for K affinity offsets. With
``loss.lsd_weight`` the model has K + 10 output channels: the affinities, then the LSDs.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor

from pytc_core.errors import UserError
from pytc_core.models import CHECKPOINT_FORMAT, build_model

__all__ = ["AffinityModule", "affinity_counts", "affinity_loss", "lr_factor", "lsd_loss",
           "scores_from_counts"]

log = logging.getLogger("pytc.train")


def affinity_loss(logits: Tensor, target: Tensor, mask: Tensor, *, bce_weight: float = 1.0,
                  dice_weight: float = 1.0, boundary_weight: float = 1.0,
                  reduction: str = "pooled") -> Tensor:
    """Masked BCE-with-logits (cut edges, target 0, weighted ``boundary_weight``) plus a soft
    Dice over both classes (joined and cut edges), averaged over channels; edges with mask 0
    count nowhere. The BCE is a weighted mean over all channels' edges together
    (``reduction="pooled"``) or, ``"per_channel"``, over each channel's own edges, those
    means then averaged over the channels that have any. Returns a scalar."""
    logits = logits.float()
    loss = logits.new_zeros(())
    if bce_weight:
        weight = mask * (1.0 + (boundary_weight - 1.0) * (1.0 - target))
        if reduction == "per_channel":
            dims = (0, *range(2, logits.ndim))
            bce = F.binary_cross_entropy_with_logits(logits, target, weight=weight,
                                                     reduction="none").sum(dims)
            total = weight.sum(dims)
            has = total > 0
            per_channel = bce[has] / total[has]
            bce_mean = per_channel.mean() if bool(has.any()) else bce.sum() * 0.0
            loss = loss + bce_weight * bce_mean
        elif reduction == "pooled":
            bce = F.binary_cross_entropy_with_logits(logits, target, weight=weight,
                                                     reduction="sum")
            loss = loss + bce_weight * bce / weight.sum().clamp_min(1.0)
        else:
            raise ValueError(f"unknown reduction {reduction!r}: pooled or per_channel")
    if dice_weight:
        prob = torch.sigmoid(logits)
        dims = (0, *range(2, logits.ndim))  # per channel, over batch and space
        dice = []
        for p, t in ((prob, target), (1.0 - prob, 1.0 - target)):
            inter = (p * t * mask).sum(dims)
            total = ((p + t) * mask).sum(dims)
            dice.append(1.0 - (2.0 * inter + 1.0) / (total + 1.0))
        loss = loss + dice_weight * 0.5 * (dice[0] + dice[1]).mean()
    return loss


def lsd_loss(logits: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean squared error of ``sigmoid(logits)`` against LSD targets in [0, 1], over the
    voxels with ``mask`` 1 (mask (N, 1, Z, Y, X), broadcast over the channels). A scalar."""
    diff = (torch.sigmoid(logits.float()) - target) ** 2 * mask
    count = mask.sum() * logits.shape[1]
    return diff.sum() / count.clamp_min(1.0)


def _resize_like(x: Tensor, shape: Sequence[int]) -> Tensor:
    if tuple(x.shape[-3:]) == tuple(shape):
        return x
    return F.interpolate(x, size=tuple(shape), mode="nearest")


@torch.no_grad()
def affinity_counts(logits: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """(TP, FP, FN, TN) of the joined class at probability 0.5, over masked edges (float64)."""
    pred = logits > 0
    positive = target > 0.5
    valid = mask > 0.5
    return torch.stack([(pred & positive & valid).sum(), (pred & ~positive & valid).sum(),
                        (~pred & positive & valid).sum(), (~pred & ~positive & valid).sum()]
                       ).double()


def scores_from_counts(counts: Sequence[float] | Tensor) -> dict[str, float]:
    """Precision, recall, F1 of joined edges (affinity 1) and F1 of cut edges (boundaries)."""
    tp, fp, fn, tn = (float(c) for c in counts)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    boundary_f1 = 2 * tn / (2 * tn + fn + fp) if tn + fn + fp else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "boundary_f1": boundary_f1}


def lr_factor(step: int, *, max_steps: int, warmup_steps: int, scheduler: str,
              min_lr_ratio: float) -> float:
    """Learning-rate multiplier at optimiser step ``step``: linear warm-up, then cosine or flat."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if scheduler == "constant":
        return 1.0
    span = max(1, max_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class AffinityModule(pl.LightningModule):
    """Trains ``build_model(config["model"])`` on affinity targets.

    ``config`` is the full resolved train config as a plain dict (it is stored in the
    checkpoint's ``hyper_parameters`` so ``pytc_core.models.load_model_from_checkpoint`` and
    ``AffinityModule.load_from_checkpoint`` both rebuild the model alone).
    """

    def __init__(self, config: Mapping[str, Any], pytc_version: str = "",
                 pytc_checkpoint_format: int = CHECKPOINT_FORMAT) -> None:
        super().__init__()
        if not pytc_version:
            from pytc_core import __version__ as pytc_version
        self.save_hyperparameters({"config": dict(config), "pytc_version": pytc_version,
                                   "pytc_checkpoint_format": int(pytc_checkpoint_format)})
        self.config = dict(config)
        self.model = build_model(self.config["model"])
        self._train = dict(self.config.get("train", {}))
        self._optim = dict(self.config.get("optim", {}))
        self._loss = dict(self.config.get("loss", {}))
        self.lsd_weight = float(self._loss.get("lsd_weight", 0.0))
        self._val_counts: Tensor | None = None
        self._val_loss: list[Tensor] = []

    def forward(self, x: Tensor) -> Tensor | dict[str, Tensor]:
        return self.model(x)

    def _loss_terms(self) -> dict[str, Any]:
        t = self._train
        return {"bce_weight": float(t.get("bce_weight", 1.0)),
                "dice_weight": float(t.get("dice_weight", 1.0)),
                "boundary_weight": float(t.get("boundary_weight", 1.0)),
                "reduction": str(self._loss.get("reduction", "pooled"))}

    def _scale_loss(self, logits: Tensor, target: Tensor, mask: Tensor,
                    lsd: tuple[Tensor, Tensor] | None) -> Tensor:
        """One output's loss: affinities on its first K channels, LSDs on the rest."""
        k = target.shape[1]
        loss = affinity_loss(logits[:, :k], target, mask, **self._loss_terms())
        if lsd is not None and self.lsd_weight > 0:
            shape = logits.shape[-3:]
            loss = loss + self.lsd_weight * lsd_loss(
                logits[:, k:], _resize_like(lsd[0], shape), _resize_like(lsd[1], shape))
        return loss

    def compute_loss(self, outputs: Tensor | Mapping[str, Tensor], target: Tensor,
                     mask: Tensor, lsd: tuple[Tensor, Tensor] | None = None
                     ) -> tuple[Tensor, dict[str, Tensor]]:
        """Total loss and the loss of each output scale (deep supervision: ``output``,
        ``ds_1`` (1/2) ... with weights ``train.ds_weights``, targets resized nearest).
        ``lsd``: (LSD target (N, 10, Z, Y, X), voxel mask (N, 1, Z, Y, X)) when
        ``loss.lsd_weight`` is on."""
        if isinstance(outputs, Tensor):
            loss = self._scale_loss(outputs, target, mask, lsd)
            return loss, {"output": loss.detach()}
        weights = list(self._train.get("ds_weights", (1.0, 0.5, 0.25, 0.125, 0.0625)))
        names = ["output"] + [f"ds_{i}" for i in range(1, len(outputs))]
        total, per_scale, weight_sum = target.new_zeros(()), {}, 0.0
        for i, name in enumerate(names):
            if name not in outputs or i >= len(weights) or weights[i] == 0:
                continue
            logits = outputs[name]
            shape = logits.shape[-3:]
            t = _resize_like(target, shape)
            m = _resize_like(mask, shape)
            term = self._scale_loss(logits, t, m, lsd)
            per_scale[name] = term.detach()
            total = total + weights[i] * term
            weight_sum += weights[i]
        return total / weight_sum, per_scale

    def _nonfinite_terms(self, outputs: Tensor | Mapping[str, Tensor], target: Tensor,
                         mask: Tensor) -> list[str]:
        """Which loss terms are not finite: ``"<scale> <bce|dice>"`` (or the output itself)."""
        named = {"output": outputs} if isinstance(outputs, Tensor) else dict(outputs)
        terms = self._loss_terms()
        bad = []
        for name, logits in named.items():
            shape = logits.shape[-3:]
            t, m = _resize_like(target, shape), _resize_like(mask, shape)
            for term, weights in (("bce", {"dice_weight": 0.0}), ("dice", {"bce_weight": 0.0})):
                if terms[f"{term}_weight"] and not torch.isfinite(
                        affinity_loss(logits[:, :t.shape[1]], t, m, **{**terms, **weights})):
                    bad.append(f"{term} of {name}")
            if not bool(torch.isfinite(logits).all()):
                bad.append(f"the model's {name} ({int((~torch.isfinite(logits)).sum())} "
                           "non-finite values)")
        return bad

    def training_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> Tensor | None:
        outputs = self.model(batch["image"])
        lsd = (batch["lsd"], batch["lsd_mask"]) if "lsd" in batch else None
        loss, per_scale = self.compute_loss(outputs, batch["target"], batch["mask"], lsd)
        if not bool(torch.isfinite(loss)):
            # skip this step (no backward, no update), as AMP skips an overflow; stop after
            # optim.max_nonfinite_steps in a row. (Single-process only: a skipped step on one
            # DDP rank would leave the others waiting in their gradient all-reduce.)
            self.nonfinite_steps = getattr(self, "nonfinite_steps", 0) + 1
            shown = float(loss.detach())
            terms = ", ".join(self._nonfinite_terms(outputs, batch["target"], batch["mask"]))
            limit = int(self._optim.get("max_nonfinite_steps", 3))
            step = self.trainer.global_step + 1 if self._trainer is not None else batch_idx
            log.warning("step %d: the loss is %s (%s); step skipped (%d of %d in a row)",
                        step, shown, terms, self.nonfinite_steps, limit)
            if self.nonfinite_steps >= limit:
                raise UserError(
                    f"the loss was not finite for {self.nonfinite_steps} steps in a row, the last "
                    f"at step {step}: {shown} ({terms}); the run stopped, its checkpoints "
                    "hold the last finite weights",
                    "lower optim.lr, keep optim.grad_clip on, try --precision 32, or check the "
                    "data (optim.max_nonfinite_steps sets how many steps are skipped)")
            return None
        self.nonfinite_steps = 0
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=batch["image"].shape[0])
        if len(per_scale) > 1:
            for name, value in per_scale.items():
                self.log(f"train/loss_{name}", value, batch_size=batch["image"].shape[0])
        return loss

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Never write non-finite weights (last.ckpt, best.ckpt): UserError instead."""
        bad = [name for name, value in checkpoint.get("state_dict", {}).items()
               if torch.is_tensor(value) and value.is_floating_point()
               and not bool(torch.isfinite(value).all())]
        if bad:
            step = self.trainer.global_step if self._trainer is not None else -1
            raise UserError(f"the weights at step {step} are not finite ({len(bad)} tensors, "
                            f"e.g. {bad[0]}); not saved: the checkpoints hold the last finite "
                            "weights", "lower optim.lr, keep optim.grad_clip on, or try "
                            "--precision 32")

    def on_validation_epoch_start(self) -> None:
        self._val_counts = torch.zeros(4, dtype=torch.float64, device=self.device)
        self._val_loss = []

    def validation_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> None:
        logits = self.model(batch["image"])
        if isinstance(logits, Mapping):
            logits = logits["output"]
        logits = logits[:, :batch["target"].shape[1]]  # the affinities (LSDs follow them)
        loss = affinity_loss(logits, batch["target"], batch["mask"], **self._loss_terms())
        self._val_loss.append(loss.detach().double())
        assert self._val_counts is not None
        self._val_counts += affinity_counts(logits, batch["target"], batch["mask"])

    def on_validation_epoch_end(self) -> None:
        counts = self._val_counts if self._val_counts is not None else torch.zeros(4, dtype=torch.float64)
        losses = torch.stack(self._val_loss) if self._val_loss else torch.zeros(1, dtype=torch.float64)
        summary = torch.cat([counts.to(self.device), losses.sum().reshape(1).to(self.device),
                             torch.tensor([float(len(self._val_loss))], dtype=torch.float64,
                                          device=self.device)])
        if self.trainer.world_size > 1:
            gathered = self.all_gather(summary)
            assert isinstance(gathered, torch.Tensor)
            summary = gathered.reshape(-1, 6).sum(0)
        scores = scores_from_counts(summary[:4].tolist())
        loss = float(summary[4] / summary[5].clamp_min(1.0))
        self.log("val/loss", loss, sync_dist=False, rank_zero_only=False)
        for name, value in scores.items():
            self.log(f"val/{name}", value, prog_bar=name == "f1", rank_zero_only=False)
        self.last_val_scores = {"loss": loss, **scores}

    def configure_optimizers(self):
        o = self._optim
        optimizer = torch.optim.AdamW(self.model.parameters(), lr=float(o.get("lr", 1e-3)),
                                      weight_decay=float(o.get("weight_decay", 0.01)),
                                      betas=tuple(o.get("betas", (0.9, 0.999))))
        max_steps = int(self._train.get("max_steps", 1000))
        warmup = int(o.get("warmup_steps", 0))
        kind = str(o.get("scheduler", "cosine"))
        min_ratio = float(o.get("min_lr_ratio", 0.01))
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_factor(step, max_steps=max_steps, warmup_steps=warmup,
                                              scheduler=kind, min_lr_ratio=min_ratio))
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}
