"""Loss, metrics and schedule of the LightningModule, against hand-computed values."""

import math

import pytest
import torch

from pytc_train.module import (
    AffinityModule,
    affinity_counts,
    affinity_loss,
    lr_factor,
    scores_from_counts,
)


def _t(values):
    return torch.tensor(values, dtype=torch.float32).reshape(1, 1, 1, 1, -1)


def test_masked_bce_weights_cut_edges_and_ignores_masked_ones():
    logits, target, mask = _t([0.0, 2.0, -1.0, 5.0]), _t([1, 0, 0, 1]), _t([1, 1, 1, 0])
    loss = affinity_loss(logits, target, mask, dice_weight=0, boundary_weight=3.0)
    # per edge: BCE(0, 1) = ln 2; BCE(2, 0) = ln(1 + e^2); BCE(-1, 0) = ln(1 + e^-1); weights 1, 3, 3
    expected = (math.log(2) + 3 * math.log(1 + math.e**2) + 3 * math.log(1 + math.e**-1)) / 7
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_soft_dice_of_a_perfect_and_a_wrong_prediction():
    target, mask = _t([1, 1, 0, 0]), _t([1, 1, 1, 1])
    perfect = affinity_loss(_t([50, 50, -50, -50]), target, mask, bce_weight=0)
    assert perfect.item() == pytest.approx(0.0, abs=1e-6)
    wrong = affinity_loss(_t([-50, -50, 50, 50]), target, mask, bce_weight=0)
    # both classes: dice = 1 - (0 + 1) / (4 + 1) = 0.8
    assert wrong.item() == pytest.approx(0.8, abs=1e-6)


def test_counts_and_scores():
    logits, target, mask = _t([1, 1, -1, -1, 1]), _t([1, 0, 1, 0, 1]), _t([1, 1, 1, 1, 0])
    counts = affinity_counts(logits, target, mask)
    assert counts.tolist() == [1, 1, 1, 1]  # TP, FP, FN, TN (the masked edge is not counted)
    scores = scores_from_counts([6, 2, 2, 10])
    assert scores["precision"] == 0.75 and scores["recall"] == 0.75
    assert scores["f1"] == pytest.approx(0.75)
    assert scores["boundary_f1"] == pytest.approx(20 / 24)
    # all-connected on 90% joined edges: precision 0.9, recall 1
    assert scores_from_counts([90, 10, 0, 0])["f1"] == pytest.approx(2 * 0.9 / 1.9)


def test_warmup_then_cosine():
    kw = {"max_steps": 110, "warmup_steps": 10, "scheduler": "cosine", "min_lr_ratio": 0.0}
    assert lr_factor(0, **kw) == pytest.approx(0.1)
    assert lr_factor(9, **kw) == pytest.approx(1.0)
    assert lr_factor(60, **kw) == pytest.approx(0.5)
    assert lr_factor(110, **kw) == pytest.approx(0.0)
    assert lr_factor(50, **{**kw, "scheduler": "constant"}) == 1.0


def test_deep_supervision_weights_scales_and_resizes_targets():
    config = {"model": {"architecture": "mednext_custom", "mednext_base_channels": 4,
                        "mednext_exp_r": 1, "mednext_block_counts": [1] * 9,
                        "deep_supervision": True},
              "train": {"ds_weights": [1.0, 0.5, 0.25, 0.125, 0.0625], "dice_weight": 0.0,
                        "boundary_weight": 1.0}}
    module = AffinityModule(config)
    target = torch.ones(1, 3, 16, 16, 16)
    mask = torch.ones_like(target)
    outputs = {"output": torch.zeros(1, 3, 16, 16, 16), "ds_1": torch.zeros(1, 3, 8, 8, 8),
               "ds_2": torch.full((1, 3, 4, 4, 4), 100.0), "ds_3": torch.zeros(1, 3, 2, 2, 2),
               "ds_4": torch.zeros(1, 3, 1, 1, 1)}
    total, per_scale = module.compute_loss(outputs, target, mask)
    assert sorted(per_scale) == ["ds_1", "ds_2", "ds_3", "ds_4", "output"]
    assert per_scale["ds_2"].item() == pytest.approx(0.0, abs=1e-6)
    ln2 = math.log(2)
    assert total.item() == pytest.approx(ln2 * (1 + 0.5 + 0.125 + 0.0625) / 1.9375, rel=1e-5)
    # the real network in train mode gives the five scales
    module.train()
    out = module(torch.zeros(1, 1, 32, 32, 32))
    assert [tuple(out[k].shape[-3:]) for k in ("output", "ds_1", "ds_4")] == [(32,) * 3, (16,) * 3, (2,) * 3]
