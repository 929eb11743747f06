"""MedNeXt: paper sizes, deep supervision, custom configs, gradient checkpointing, MONAI parity."""

import pytest
import torch
import torch.nn.functional as F
from monai.networks.nets.mednext import create_mednext

from pytc_core.errors import UserError
from pytc_core.models import build_model, count_parameters
from pytc_core.models.mednext import ChannelsFirstLayerNorm

# (size, kernel): (parameters of our build for 1 -> 1 channels, the paper's count in millions)
PAPER = {
    ("S", 3): (5_550_881, 5.6), ("S", 5): (5_980_513, 5.9),
    ("B", 3): (10_526_273, 10.5), ("B", 5): (10_955_905, 11.0),
    ("M", 3): (17_548_929, 17.6), ("M", 5): (18_260_801, 18.3),
    ("L", 3): (61_779_233, 61.8), ("L", 5): (62_992_865, 63.0),
}
SEED_CUSTOM = {"architecture": "mednext_custom", "mednext_exp_r": [2, 3, 4, 4, 4, 4, 4, 3, 2],
               "mednext_block_counts": [3, 4, 8, 8, 8, 8, 8, 4, 3], "mednext_kernel_size": 7,
               "mednext_grn": True}
SMALL = {"architecture": "mednext_custom", "mednext_base_channels": 4,
         "mednext_block_counts": [1, 1, 1, 1, 1, 1, 1, 1, 1], "mednext_exp_r": 2}


@pytest.mark.parametrize(("size", "kernel"), list(PAPER))
def test_parameter_counts_match_the_paper(size, kernel):
    exact, paper_millions = PAPER[(size, kernel)]
    n = count_parameters({"architecture": "mednext", "mednext_size": size,
                          "mednext_kernel_size": kernel, "in_channels": 1, "out_channels": 1})
    assert n == exact
    assert abs(n / 1e6 - paper_millions) / paper_millions < 0.02


def test_seed_custom_example_builds():
    # Encoder/decoder of L with kernel 7 and GRN: hand count would be long; check the structure.
    model = build_model({**SEED_CUSTOM, "out_channels": 3})
    assert [len(s) for s in model.enc_stages] == [3, 4, 8, 8]
    assert len(model.bottleneck) == 8
    assert [len(s) for s in model.dec_stages] == [8, 8, 4, 3]
    assert model.enc_stages[0][0].conv1.weight.shape == (32, 1, 7, 7, 7)
    assert model.enc_stages[0][0].global_resp_gamma.shape == (1, 64, 1, 1, 1)
    assert not model.down_blocks[0].global_resp_norm  # as DKFZ's down_0
    assert model.down_blocks[1].global_resp_beta.shape == (1, 64 * 4, 1, 1, 1)


def _ds_shapes(out):
    return {k: tuple(v.shape) for k, v in out.items()}


# 16 x 32 x 48 voxels: the smallest anisotropic input (four stride-2 levels).
EXPECTED_DS = {"output": (1, 3, 16, 32, 48), "ds_1": (1, 3, 8, 16, 24),
               "ds_2": (1, 3, 4, 8, 12), "ds_3": (1, 3, 2, 4, 6), "ds_4": (1, 3, 1, 2, 3)}
VARIANTS = [pytest.param({"mednext_size": s}, id=f"mednext-{s}") for s in "SBML"] + [
    pytest.param({"mednext_size": "S", "mednext_kernel_size": 5}, id="mednext-S-k5"),
    pytest.param({**SMALL, "mednext_norm": "layer", "mednext_grn": True,
                  "mednext_enc_kernel_size": 3, "mednext_dec_kernel_size": 5,
                  "mednext_do_res": False, "mednext_do_res_up_down": False}, id="custom-small"),
    pytest.param(SEED_CUSTOM, id="custom-seed"),
]


@pytest.mark.parametrize("extra", VARIANTS)
def test_deep_supervision_five_scales_in_train_one_tensor_in_eval(extra):
    torch.manual_seed(0)
    model = build_model({"architecture": "mednext", "out_channels": 3, "deep_supervision": True,
                         **extra})
    x = torch.rand(1, 1, 16, 32, 48)
    model.train()
    out = model(x)
    assert list(out) == ["output", "ds_1", "ds_2", "ds_3", "ds_4"]
    assert _ds_shapes(out) == EXPECTED_DS
    model.eval()
    with torch.no_grad():
        full = model(x)
    assert isinstance(full, torch.Tensor) and full.shape == (1, 3, 16, 32, 48)
    # Deep supervision off: a tensor in train mode too.
    plain = build_model({"architecture": "mednext", "out_channels": 3, **extra}).train()
    assert isinstance(plain(x), torch.Tensor)


def test_custom_2d_and_separate_kernels():
    model = build_model({**SMALL, "mednext_dim": "2d", "mednext_enc_kernel_size": 3,
                         "mednext_dec_kernel_size": 7, "deep_supervision": True,
                         "out_channels": 2})
    assert model.enc_stages[3][0].conv1.weight.shape[2:] == (3, 3)
    assert model.down_blocks[3].conv1.weight.shape[2:] == (3, 3)
    assert model.bottleneck[0].conv1.weight.shape[2:] == (7, 7)  # DKFZ: bottleneck is decoder
    assert model.up_blocks[0].conv1.weight.shape[2:] == (7, 7)
    out = model.train()(torch.rand(2, 1, 32, 48))
    assert tuple(out["output"].shape) == (2, 2, 32, 48)
    assert tuple(out["ds_4"].shape) == (2, 2, 2, 3)


def test_expansion_ratios_follow_dkfz_levels():
    model = build_model({**SMALL, "mednext_exp_r": [2, 3, 4, 5, 6, 7, 8, 9, 10]})
    hidden = lambda block: block.conv2.out_channels // block.conv2.in_channels  # noqa: E731
    assert [hidden(s[0]) for s in model.enc_stages] == [2, 3, 4, 5]
    assert [hidden(d) for d in model.down_blocks] == [3, 4, 5, 6]  # down_i uses exp_r[i + 1]
    assert hidden(model.bottleneck[0]) == 6
    assert [hidden(u) for u in model.up_blocks] == [7, 8, 9, 10]
    assert [hidden(s[0]) for s in model.dec_stages] == [7, 8, 9, 10]


def test_layer_norm_normalises_over_channels():
    torch.manual_seed(1)
    norm = ChannelsFirstLayerNorm(5)
    with torch.no_grad():
        norm.weight.copy_(torch.arange(1.0, 6.0))
        norm.bias.copy_(torch.full((5,), 0.5))
    x = torch.randn(2, 5, 3, 4, 6)
    expected = F.layer_norm(x.movedim(1, -1), (5,), norm.weight, norm.bias, 1e-5).movedim(-1, 1)
    torch.testing.assert_close(norm(x), expected, atol=1e-5, rtol=1e-5)


def test_size_s_is_interchangeable_with_monai_mednext():
    torch.manual_seed(2)
    ours = build_model({"architecture": "mednext", "mednext_size": "S", "out_channels": 2,
                        "deep_supervision": True})
    monai = create_mednext("S", in_channels=1, out_channels=2, kernel_size=3,
                           deep_supervision=True)
    monai.load_state_dict(ours.state_dict(), strict=True)
    x = torch.rand(1, 1, 32, 32, 32)
    ours.train()
    monai.train()
    mine, theirs = ours(x), monai(x)
    for got, ref in zip(mine.values(), theirs, strict=True):
        torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-6)


def _grads(model, x):
    model.zero_grad()
    out = model(x)
    loss = sum((v * torch.linspace(-1, 1, v.numel()).view_as(v)).sum() for v in out.values())
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def test_gradient_checkpointing_gives_the_same_gradients_and_recomputes_blocks():
    torch.manual_seed(3)
    base = {**SMALL, "mednext_grn": True, "mednext_norm": "layer", "deep_supervision": True,
            "out_channels": 2}
    plain = build_model(base).train()
    ckpt = build_model({**base, "mednext_checkpoint_style": "outside_block"}).train()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.rand(2, 1, 16, 16, 32)
    calls = []
    ckpt.enc_stages[1][0].register_forward_pre_hook(lambda *a: calls.append(1))
    g_plain, g_ckpt = _grads(plain, x), _grads(ckpt, x)
    assert len(calls) == 2  # forward, then recomputed in backward
    assert g_plain.keys() == g_ckpt.keys()
    for name in g_plain:
        torch.testing.assert_close(g_ckpt[name], g_plain[name], atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # no recomputation bookkeeping outside autograd
        calls.clear()
        ckpt.eval()(x)
        assert len(calls) == 1


@pytest.mark.parametrize(("extra", "message"), [
    ({"mednext_size": "XL"}, "unknown MedNeXt size 'XL'"),
    ({"mednext_kernel_size": 7}, "mednext_kernel_size must be one of 3, 5"),
    ({"mednext_checkpoint_style": "inside_block"}, "mednext_checkpoint_style"),
    ({"backend": "monay"}, "unknown MedNeXt backend 'monay'"),
])
def test_mednext_config_errors(extra, message):
    with pytest.raises(UserError, match=message):
        build_model({"architecture": "mednext", **extra})


@pytest.mark.parametrize(("extra", "message"), [
    ({"mednext_exp_r": [2, 2]}, "mednext_exp_r must be an int >= 1 or 9"),
    ({"mednext_block_counts": [2] * 8}, "mednext_block_counts must be 9 ints"),
    ({"mednext_kernel_size": 4}, "mednext_kernel_size must be one of 3, 5, 7"),
    ({"mednext_dec_kernel_size": 9}, "mednext_dec_kernel_size must be one of 3, 5, 7"),
    ({"mednext_norm": "batch"}, "unknown MedNeXt norm 'batch'"),
    ({"mednext_dim": "4d"}, "unknown MedNeXt dim '4d'"),
])
def test_mednext_custom_config_errors(extra, message):
    with pytest.raises(UserError, match=message):
        build_model({**SMALL, **extra})


def test_nnunet_mednext_backend_without_the_package_is_a_user_error():
    try:
        import nnunet_mednext  # noqa: F401
        pytest.skip("nnunet_mednext is installed here")
    except ImportError:
        pass
    with pytest.raises(UserError) as exc:
        build_model({"architecture": "mednext", "backend": "nnunet_mednext"})
    assert "needs DKFZ's nnunet_mednext package" in exc.value.what
    assert "github.com/MIC-DKFZ/MedNeXt" in exc.value.fix


def test_input_not_divisible_by_16_is_a_user_error():
    model = build_model({**SMALL}).eval()
    with pytest.raises(UserError, match="multiples of 16 voxels on every axis"):
        model(torch.zeros(1, 1, 24, 32, 32))
