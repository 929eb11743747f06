"""DKFZ weights: a faithful copy of nnunet_mednext's MedNeXt (names and forward, from
MIC-DKFZ/MedNeXt nnunet_mednext/network_architecture/mednextv1/{MedNextV1,blocks}.py),
its state dict loaded into pytc's MedNeXt must give the same outputs."""

import sys
import types

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pytc_core.errors import UserError
from pytc_core.models import build_model, dkfz_to_pytc_name, load_nnunet_mednext_weights
from pytc_core.models.dkfz_weights import nnunet_mednext_state_dict


class LayerNorm(nn.Module):  # blocks.LayerNorm, channels_first
    def __init__(self, normalized_shape, eps=1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(normalized_shape))
        self.bias = nn.Parameter(torch.zeros(normalized_shape))
        self.eps = eps

    def forward(self, x):
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        shape = (-1,) + (1,) * (x.ndim - 2)
        return self.weight.view(shape) * x + self.bias.view(shape)


class MedNeXtBlock(nn.Module):
    def __init__(self, in_channels, out_channels, exp_r=4, kernel_size=7, do_res=True,
                 norm_type="group", dim="3d", grn=False, transpose=False, stride=1):
        super().__init__()
        self.do_res, self.dim, self.grn = do_res, dim, grn
        conv = nn.Conv2d if dim == "2d" else nn.Conv3d
        first = (nn.ConvTranspose2d if dim == "2d" else nn.ConvTranspose3d) if transpose else conv
        self.conv1 = first(in_channels, in_channels, kernel_size, stride=stride,
                           padding=kernel_size // 2, groups=in_channels)
        self.norm = (nn.GroupNorm(in_channels, in_channels) if norm_type == "group"
                     else LayerNorm(in_channels))
        self.conv2 = conv(in_channels, exp_r * in_channels, 1)
        self.act = nn.GELU()
        self.conv3 = conv(exp_r * in_channels, out_channels, 1)
        if grn:
            shape = (1, exp_r * in_channels) + (1,) * (2 if dim == "2d" else 3)
            self.grn_beta = nn.Parameter(torch.zeros(shape))
            self.grn_gamma = nn.Parameter(torch.zeros(shape))

    def forward(self, x):
        x1 = self.act(self.conv2(self.norm(self.conv1(x))))
        if self.grn:
            dims = (-2, -1) if self.dim == "2d" else (-3, -2, -1)
            gx = torch.norm(x1, p=2, dim=dims, keepdim=True)
            nx = gx / (gx.mean(dim=1, keepdim=True) + 1e-6)
            x1 = self.grn_gamma * (x1 * nx) + self.grn_beta + x1
        x1 = self.conv3(x1)
        return x + x1 if self.do_res else x1


class MedNeXtDownBlock(MedNeXtBlock):
    def __init__(self, in_channels, out_channels, exp_r, kernel_size, do_res, norm_type, dim,
                 grn=False):
        super().__init__(in_channels, out_channels, exp_r, kernel_size, False, norm_type, dim,
                         grn, stride=2)
        self.resample_do_res = do_res
        if do_res:
            conv = nn.Conv2d if dim == "2d" else nn.Conv3d
            self.res_conv = conv(in_channels, out_channels, 1, stride=2)

    def forward(self, x):
        x1 = super().forward(x)
        return x1 + self.res_conv(x) if self.resample_do_res else x1


class MedNeXtUpBlock(MedNeXtBlock):
    def __init__(self, in_channels, out_channels, exp_r, kernel_size, do_res, norm_type, dim,
                 grn=False):
        super().__init__(in_channels, out_channels, exp_r, kernel_size, False, norm_type, dim,
                         grn, transpose=True, stride=2)
        self.resample_do_res = do_res
        if do_res:
            conv = nn.ConvTranspose2d if dim == "2d" else nn.ConvTranspose3d
            self.res_conv = conv(in_channels, out_channels, 1, stride=2)

    def forward(self, x):
        pad = (1, 0) * (2 if self.dim == "2d" else 3)
        x1 = F.pad(super().forward(x), pad)
        if self.resample_do_res:
            x1 = x1 + F.pad(self.res_conv(x), pad)
        return x1


class OutBlock(nn.Module):
    def __init__(self, in_channels, n_classes, dim):
        super().__init__()
        conv = nn.ConvTranspose2d if dim == "2d" else nn.ConvTranspose3d
        self.conv_out = conv(in_channels, n_classes, kernel_size=1)

    def forward(self, x):
        return self.conv_out(x)


class DKFZMedNeXt(nn.Module):  # MedNextV1.MedNeXt without the checkpointing branch
    def __init__(self, in_channels, n_channels, n_classes, exp_r=4, kernel_size=7,
                 enc_kernel_size=None, dec_kernel_size=None, deep_supervision=False,
                 do_res=False, do_res_up_down=False, checkpoint_style=None,
                 block_counts=(2,) * 9, norm_type="group", dim="3d", grn=False):
        super().__init__()
        self.do_ds = deep_supervision
        self.outside_block_checkpointing = checkpoint_style == "outside_block"
        if kernel_size is not None:
            enc_kernel_size = dec_kernel_size = kernel_size
        exp_r = [exp_r] * 9 if isinstance(exp_r, int) else exp_r
        c = [n_channels * 2**i for i in range(5)]
        self.stem = (nn.Conv2d if dim == "2d" else nn.Conv3d)(in_channels, n_channels, 1)

        def stage(ch, e, k, n):
            return nn.Sequential(*[MedNeXtBlock(ch, ch, e, k, do_res, norm_type, dim, grn)
                                   for _ in range(n)])

        for i in range(4):
            setattr(self, f"enc_block_{i}", stage(c[i], exp_r[i], enc_kernel_size, block_counts[i]))
            # DKFZ passes grn to down_1..down_3 only
            setattr(self, f"down_{i}", MedNeXtDownBlock(c[i], c[i + 1], exp_r[i + 1],
                                                        enc_kernel_size, do_res_up_down,
                                                        norm_type, dim, grn=grn and i > 0))
        self.bottleneck = stage(c[4], exp_r[4], dec_kernel_size, block_counts[4])
        for k in (3, 2, 1, 0):
            level = 8 - k  # up_3 / dec_block_3 use exp_r[5], ..., up_0 / dec_block_0 exp_r[8]
            setattr(self, f"up_{k}", MedNeXtUpBlock(c[k + 1], c[k], exp_r[level],
                                                    dec_kernel_size, do_res_up_down, norm_type,
                                                    dim, grn=grn))
            setattr(self, f"dec_block_{k}", stage(c[k], exp_r[level], dec_kernel_size,
                                                  block_counts[level]))
        self.out_0 = OutBlock(n_channels, n_classes, dim)
        self.dummy_tensor = nn.Parameter(torch.tensor([1.0]), requires_grad=True)
        if deep_supervision:
            for k in (1, 2, 3, 4):
                setattr(self, f"out_{k}", OutBlock(c[k], n_classes, dim))

    def forward(self, x):
        x = self.stem(x)
        res = []
        for i in range(4):
            x = getattr(self, f"enc_block_{i}")(x)
            res.append(x)
            x = getattr(self, f"down_{i}")(x)
        x = self.bottleneck(x)
        ds = {}
        if self.do_ds:
            ds[4] = self.out_4(x)
        for k in (3, 2, 1, 0):
            x = getattr(self, f"dec_block_{k}")(res[k] + getattr(self, f"up_{k}")(x))
            if self.do_ds and k > 0:
                ds[k] = getattr(self, f"out_{k}")(x)
        x = self.out_0(x)
        return [x, ds[1], ds[2], ds[3], ds[4]] if self.do_ds else x


def _randomise(model):
    torch.manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    return model


CUSTOM = {"in_channels": 2, "n_channels": 4, "n_classes": 3,
          "exp_r": [2, 3, 2, 3, 2, 3, 2, 3, 2], "kernel_size": None, "enc_kernel_size": 3,
          "dec_kernel_size": 5, "deep_supervision": True, "do_res": True,
          "do_res_up_down": True, "block_counts": [1, 2, 1, 1, 1, 1, 1, 2, 1],
          "norm_type": "layer", "dim": "3d", "grn": True}
PYTC_CUSTOM = {"architecture": "mednext_custom", "in_channels": 2, "out_channels": 3,
               "mednext_base_channels": 4, "mednext_exp_r": [2, 3, 2, 3, 2, 3, 2, 3, 2],
               "mednext_enc_kernel_size": 3, "mednext_dec_kernel_size": 5,
               "deep_supervision": True, "mednext_block_counts": [1, 2, 1, 1, 1, 1, 1, 2, 1],
               "mednext_norm": "layer", "mednext_grn": True}


def test_dkfz_weights_give_dkfz_outputs_3d_layer_norm_grn_deep_supervision():
    dkfz = _randomise(DKFZMedNeXt(**CUSTOM))
    ours = load_nnunet_mednext_weights(build_model(PYTC_CUSTOM), dkfz.state_dict())
    x = torch.rand(2, 2, 16, 32, 32)
    dkfz.train()
    ours.train()
    with torch.no_grad():
        ref, got = dkfz(x), ours(x)
    assert len(ref) == 5
    for name, r in zip(["output", "ds_1", "ds_2", "ds_3", "ds_4"], ref, strict=True):
        torch.testing.assert_close(got[name], r, atol=1e-5, rtol=1e-5)
    ours.eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref[0], atol=1e-5, rtol=1e-5)


def test_dkfz_weights_2d_group_norm_from_a_nested_ddp_checkpoint():
    dkfz = _randomise(DKFZMedNeXt(1, 4, 2, exp_r=2, kernel_size=3, do_res=True,
                                  do_res_up_down=False, block_counts=[1] * 9, dim="2d"))
    nested = {"state_dict": {"module." + k: v for k, v in dkfz.state_dict().items()}}
    ours = build_model({"architecture": "mednext_custom", "out_channels": 2,
                        "mednext_base_channels": 4, "mednext_exp_r": 2,
                        "mednext_block_counts": [1] * 9, "mednext_do_res_up_down": False,
                        "mednext_dim": "2d"})
    load_nnunet_mednext_weights(ours, nested)
    x = torch.rand(1, 1, 32, 48)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), dkfz.eval()(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("size", ["S", "B", "M", "L"])
def test_paper_sizes_have_dkfz_tensors_one_to_one(size):
    exp_r, counts = {"S": (2, [2] * 9), "B": ([2, 3, 4, 4, 4, 4, 4, 3, 2], [2] * 9),
                     "M": ([2, 3, 4, 4, 4, 4, 4, 3, 2], [3, 4, 4, 4, 4, 4, 4, 4, 3]),
                     "L": ([3, 4, 8, 8, 8, 8, 8, 4, 3], [3, 4, 8, 8, 8, 8, 8, 4, 3])}[size]
    with torch.device("meta"):  # create_mednext_v1's arguments
        dkfz = DKFZMedNeXt(1, 32, 3, exp_r=exp_r, kernel_size=5, deep_supervision=True,
                           do_res=True, do_res_up_down=True, block_counts=counts)
        ours = build_model({"architecture": "mednext", "mednext_size": size,
                            "mednext_kernel_size": 5, "deep_supervision": True})
    mapped = {k: tuple(v.shape) for k, v in nnunet_mednext_state_dict(dkfz.state_dict()).items()}
    assert mapped == {k: tuple(v.shape) for k, v in ours.state_dict().items()}


def test_name_mapping_examples():
    assert dkfz_to_pytc_name("enc_block_0.0.conv1.weight") == "enc_stages.0.0.conv1.weight"
    assert dkfz_to_pytc_name("down_2.res_conv.bias") == "down_blocks.2.res_conv.bias"
    assert dkfz_to_pytc_name("up_3.conv1.weight") == "up_blocks.0.conv1.weight"
    assert dkfz_to_pytc_name("dec_block_0.1.grn_gamma") == "dec_stages.3.1.global_resp_gamma"
    assert dkfz_to_pytc_name("out_4.conv_out.weight") == "out_blocks.0.conv_out.weight"
    assert dkfz_to_pytc_name("out_1.conv_out.bias") == "out_blocks.3.conv_out.bias"
    assert dkfz_to_pytc_name("bottleneck.1.norm.weight") == "bottleneck.1.norm.weight"
    assert dkfz_to_pytc_name("dummy_tensor") is None
    with pytest.raises(UserError, match="'decoder.0.weight' is not a tensor name"):
        dkfz_to_pytc_name("decoder.0.weight")


def test_mismatches_are_clear_user_errors():
    state = DKFZMedNeXt(**CUSTOM).state_dict()
    no_ds = {**PYTC_CUSTOM, "deep_supervision": False}
    with pytest.raises(UserError) as exc:
        load_nnunet_mednext_weights(build_model(no_ds), state)
    assert exc.value.fix == "set model.deep_supervision = true"
    without_ds = {k: v for k, v in state.items() if not k.startswith(("out_1", "out_2", "out_3",
                                                                    "out_4"))}
    with pytest.raises(UserError, match="lack 8 tensors") as exc:
        load_nnunet_mednext_weights(build_model(PYTC_CUSTOM), without_ds)
    assert exc.value.fix == "set model.deep_supervision = false"
    k3 = {**PYTC_CUSTOM, "mednext_dec_kernel_size": 3}
    with pytest.raises(UserError, match=r"has shape \(64, 1, 5, 5, 5\), the model expects "
                                        r"\(64, 1, 3, 3, 3\)"):
        load_nnunet_mednext_weights(build_model(k3), state)
    with pytest.raises(UserError, match="not a tensor name of nnunet_mednext"):
        load_nnunet_mednext_weights(build_model(PYTC_CUSTOM), {**state, "head.weight": state["stem.bias"]})


def create_mednext_v1(num_input_channels, num_classes, model_id, kernel_size=3,
                      deep_supervision=False):  # create_mednext_v1.py, sizes S and B
    exp_r = {"S": 2, "B": [2, 3, 4, 4, 4, 4, 4, 3, 2]}[model_id]
    return DKFZMedNeXt(num_input_channels, 32, num_classes, exp_r=exp_r, kernel_size=kernel_size,
                       deep_supervision=deep_supervision, do_res=True, do_res_up_down=True,
                       block_counts=[2] * 9)


def test_nnunet_mednext_backend_uses_dkfz_networks(monkeypatch):
    # nnunet_mednext is not on PyPI: this test's copy of it stands in for the package.
    package = types.ModuleType("nnunet_mednext")
    package.MedNeXt = DKFZMedNeXt
    package.create_mednext_v1 = create_mednext_v1
    monkeypatch.setitem(sys.modules, "nnunet_mednext", package)
    sized = build_model({"architecture": "mednext", "mednext_size": "B", "backend": "nnunet_mednext",
                         "deep_supervision": True, "mednext_checkpoint_style": "outside_block"})
    assert isinstance(sized.net, DKFZMedNeXt) and sized.net.outside_block_checkpointing
    assert sized.net.down_0.conv2.out_channels == 32 * 3  # B: down_0 uses exp_r[1]
    custom = build_model({**PYTC_CUSTOM, "backend": "nnunet_mednext"})
    load_nnunet_mednext_weights(custom, _randomise(DKFZMedNeXt(**CUSTOM)).state_dict())
    ours = load_nnunet_mednext_weights(build_model(PYTC_CUSTOM),
                                       _randomise(DKFZMedNeXt(**CUSTOM)).state_dict())
    x = torch.rand(1, 2, 16, 16, 32)
    with torch.no_grad():
        got, ref = custom.train()(x), ours.train()(x)
        assert list(got) == ["output", "ds_1", "ds_2", "ds_3", "ds_4"]
        for name in ref:
            torch.testing.assert_close(got[name], ref[name], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(custom.eval()(x), ours.eval()(x), atol=1e-5, rtol=1e-5)
