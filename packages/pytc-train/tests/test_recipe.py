"""The BANIS+ recipe options: EMA weights, per-channel BCE, label erosion, LSD targets."""

import math

import numpy as np
import pytest
import torch

from pytc_core.errors import UserError
from pytc_train.config import LSD_CHANNELS, DataConfig, LossConfig, OptimConfig
from pytc_train.data import targets_from_sample
from pytc_train.ema import EMAWeightsCallback, ema_update
from pytc_train.lsd import lsd_from_labels
from pytc_train.module import affinity_loss, lsd_loss

# ---------------------------------------------------------------- EMA


def test_ema_update_equals_the_formula_after_k_steps():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.LayerNorm(2))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    decay = 0.9
    ema = {f"model.{k}": v.detach().clone() for k, v in net.state_dict().items()}
    history = [{k: v.detach().clone().double() for k, v in net.state_dict().items()}]
    for _ in range(5):
        opt.zero_grad()
        net(torch.randn(4, 3)).pow(2).sum().backward()
        opt.step()
        ema_update(ema, net, decay)
        history.append({k: v.detach().clone().double() for k, v in net.state_dict().items()})
    k = len(history) - 1
    for name in history[0]:
        # ema_k = d^k w_0 + sum_i (1 - d) d^(k - i) w_i
        expected = decay ** k * history[0][name] + sum(
            (1 - decay) * decay ** (k - i) * history[i][name] for i in range(1, k + 1))
        np.testing.assert_allclose(ema[f"model.{name}"].double().numpy(), expected.numpy(),
                                   rtol=0, atol=1e-6)
        assert not torch.equal(ema[f"model.{name}"], net.state_dict()[name])


@pytest.mark.parametrize("decay", [1.0, 1.5, -0.1])
def test_ema_decay_outside_0_1_is_a_user_error(decay):
    with pytest.raises(UserError, match=r"optim.ema must be a decay in \(0, 1\)"):
        OptimConfig(ema=decay)
    OptimConfig(ema=0.0)  # off
    with pytest.raises(ValueError):
        EMAWeightsCallback(decay)


# ---------------------------------------------------------------- per-channel loss


def _bce(x: float, t: float) -> float:
    return math.log1p(math.exp(x)) - t * x


def test_per_channel_bce_averages_each_channel_over_its_own_valid_edges():
    # channel 0: 3 valid edges, channel 1: 1 valid edge (e.g. a long-range offset)
    logits = torch.tensor([[[[[0.5, -1.0, 2.0, 3.0]]], [[[1.5, -0.5, 0.0, 9.0]]]]])
    target = torch.tensor([[[[[1.0, 0.0, 1.0, 0.0]]], [[[0.0, 1.0, 1.0, 1.0]]]]])
    mask = torch.tensor([[[[[1.0, 1.0, 1.0, 0.0]]], [[[1.0, 0.0, 0.0, 0.0]]]]])
    per_channel = affinity_loss(logits, target, mask, dice_weight=0.0, boundary_weight=1.0,
                                reduction="per_channel")
    c0 = (_bce(0.5, 1) + _bce(-1.0, 0) + _bce(2.0, 1)) / 3
    c1 = _bce(1.5, 0)
    assert float(per_channel) == pytest.approx((c0 + c1) / 2, rel=1e-6)
    pooled = affinity_loss(logits, target, mask, dice_weight=0.0, boundary_weight=1.0)
    assert float(pooled) == pytest.approx((3 * c0 + c1) / 4, rel=1e-6)
    # boundary weight 5 on cut edges (target 0), per channel: weighted means
    weighted = affinity_loss(logits, target, mask, dice_weight=0.0, boundary_weight=5.0,
                             reduction="per_channel")
    w0 = (_bce(0.5, 1) + 5 * _bce(-1.0, 0) + _bce(2.0, 1)) / 7
    assert float(weighted) == pytest.approx((w0 + c1) / 2, rel=1e-6)


def test_a_channel_without_valid_edges_does_not_count():
    logits = torch.zeros(1, 2, 1, 1, 2)
    target = torch.ones(1, 2, 1, 1, 2)
    mask = torch.tensor([[[[[1.0, 1.0]]], [[[0.0, 0.0]]]]])
    loss = affinity_loss(logits, target, mask, dice_weight=0.0, reduction="per_channel")
    assert float(loss) == pytest.approx(math.log(2), rel=1e-6)


# ---------------------------------------------------------------- erosion in the config


def test_erosion_larger_than_the_patch_allows_is_a_user_error():
    DataConfig(patch_size=(16, 16, 16), erode=7)
    with pytest.raises(UserError, match="data.erode = 8 .* no object would survive"):
        DataConfig(patch_size=(16, 16, 16), erode=8)
    # in-plane erosion looks at y and x only
    DataConfig(patch_size=(4, 32, 32), erode=3, erode_2d=True)
    with pytest.raises(UserError, match="along z/y/x"):
        DataConfig(patch_size=(4, 32, 32), erode=3)
    with pytest.raises(UserError, match="data.erode must be >= 0"):
        DataConfig(erode=-1)


def test_training_targets_are_computed_from_eroded_labels():
    labels = np.zeros((4, 8, 8), np.int64)
    labels[:, :, :4], labels[:, :, 4:] = 1, 2
    sample = {"image": np.zeros((1, 4, 8, 8), np.float32), "label": labels}
    plain = targets_from_sample(sample, (4, 8, 8), [(0, 0, -1)])
    eroded = targets_from_sample(sample, (4, 8, 8), [(0, 0, -1)], erode=1, erode_2d=True)
    # x edges (v, v - 1) joined: plain everywhere but at x = 4; eroded: x = 1, 2 and 6, 7
    assert plain["target"][0, 0, 0].tolist() == [0, 1, 1, 1, 0, 1, 1, 1]
    assert eroded["target"][0, 0, 0].tolist() == [0, 1, 1, 0, 0, 0, 1, 1]


# ---------------------------------------------------------------- LSDs


def test_lsd_of_a_large_object_at_its_centre_by_hand():
    labels = np.ones((21, 21, 21), np.uint32)  # the 3-sigma kernel (radius 6) fits inside
    lsd = lsd_from_labels(labels, 2.0)
    assert lsd.shape == (LSD_CHANNELS, 21, 21, 21) and lsd.dtype == np.float32
    centre = lsd[:, 10, 10, 10]
    # offset 0 -> 0.5; variance of the truncated Gaussian / sigma^2; no correlation -> 0.5;
    # mass: the normalised kernel summed = 1
    taps = np.arange(-6, 7)
    kernel = np.exp(-0.5 * (taps / 2.0) ** 2)
    kernel /= kernel.sum()
    variance = float((kernel * taps**2).sum()) / 4.0
    np.testing.assert_allclose(centre, [0.5] * 3 + [variance] * 3 + [0.5] * 3 + [1.0],
                               rtol=0, atol=1e-5)
    # one voxel from the x border: the object's mass lies towards -x, so the x offset < 0.5
    assert lsd[2, 10, 10, 20] < 0.5 and lsd[9, 10, 10, 20] < 1.0


def test_lsd_background_is_zero_and_values_lie_in_0_1():
    labels = np.zeros((8, 12, 12), np.int64)
    labels[2:6, 2:7, 2:9] = 7
    labels[2:6, 7:11, 2:9] = 3
    lsd = lsd_from_labels(labels, (1.0, 2.0, 2.0))
    assert np.all(lsd[:, labels == 0] == 0)
    assert lsd.min() >= 0 and lsd.max() <= 1 and np.all(lsd[9, labels > 0] > 0)


def test_lsd_equal_lsd_lite():
    from lsd_lite import get_lsds

    from pytc_core.synthetic import synthetic_em_volume

    _, labels = synthetic_em_volume((16, 32, 32), seed=5)
    labels[:, :4] = 0  # some background too
    for sigma in (2.0, (1.0, 3.0, 3.0)):
        ours = lsd_from_labels(labels, sigma)
        theirs = get_lsds(labels, sigma)
        assert ours.shape == theirs.shape == (10, 16, 32, 32)
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5)


def test_lsd_loss_is_the_masked_mse_of_the_sigmoid():
    logits = torch.tensor([[[[[0.0, 2.0]]], [[[-1.0, 1.0]]]]])  # (1, 2 channels, 1, 1, 2)
    target = torch.tensor([[[[[1.0, 0.0]]], [[[0.5, 0.5]]]]])
    mask = torch.tensor([[[[[1.0, 0.0]]]]])  # only the first voxel counts
    s = 1 / (1 + math.exp(1.0))
    expected = ((0.5 - 1.0) ** 2 + (s - 0.5) ** 2) / 2
    assert float(lsd_loss(logits, target, mask)) == pytest.approx(expected, rel=1e-6)


def test_lsd_config_is_checked():
    with pytest.raises(UserError, match="loss.lsd_weight must be >= 0"):
        LossConfig(lsd_weight=-1.0)
    with pytest.raises(UserError, match="loss.lsd_sigma"):
        LossConfig(lsd_sigma=(0.0,))
    assert LossConfig(lsd_sigma=(2.0, 5.0, 5.0)).sigma_zyx() == (2.0, 5.0, 5.0)
