"""UpKern: kernel-3 MedNeXt weights into a kernel-5/7 MedNeXt."""

import pytest
import torch

from pytc_core.errors import UserError
from pytc_core.models import build_model, upkern_load_weights

SMALL = {"architecture": "mednext_custom", "mednext_base_channels": 4, "mednext_exp_r": 2,
         "mednext_block_counts": [1, 2, 1, 1, 1, 1, 1, 1, 1], "deep_supervision": True,
         "out_channels": 2}

# 3 -> 5 taps, trilinear with align_corners=False: output tap i samples source coordinate
# 0.6 i - 0.2, clamped to [0, 2] (so taps 0 and 4 copy the border, tap 2 the centre).
W35 = torch.tensor([[1.0, 0.0, 0.0], [0.6, 0.4, 0.0], [0.0, 1.0, 0.0], [0.0, 0.4, 0.6],
                    [0.0, 0.0, 1.0]])


def _trained_k3():
    torch.manual_seed(11)
    source = build_model({**SMALL, "mednext_kernel_size": 3})
    with torch.no_grad():
        for p in source.parameters():
            p.copy_(torch.randn_like(p))
    return source


def test_upkern_3_to_5_copies_everything_and_resizes_depthwise_kernels():
    source = _trained_k3()
    target = upkern_load_weights(build_model({**SMALL, "mednext_kernel_size": 5}), source)
    src, dst = source.state_dict(), target.state_dict()
    assert src.keys() == dst.keys()
    resized = [k for k in dst if dst[k].shape != src[k].shape]
    # every depthwise conv: 9 levels of blocks (10 blocks here) + 4 down + 4 up
    assert len(resized) == 18 and all(k.endswith("conv1.weight") for k in resized)
    for k in dst:
        if k not in resized:
            assert torch.equal(dst[k], src[k]), k
    for k in resized:
        assert dst[k].shape[2:] == (5, 5, 5)
        assert torch.equal(dst[k][:, :, 2, 2, 2], src[k][:, :, 1, 1, 1])  # centre kept
        expected = torch.einsum("ai,bj,dk,ocijk->ocabd", W35, W35, W35, src[k])
        torch.testing.assert_close(dst[k], expected, atol=1e-6, rtol=1e-6)


def test_upkern_from_a_state_dict_3_to_7_keeps_centres():
    source = _trained_k3().state_dict()
    target = upkern_load_weights(build_model({**SMALL, "mednext_kernel_size": 7}), source)
    w = target.state_dict()["enc_stages.1.1.conv1.weight"]
    assert w.shape == (8, 1, 7, 7, 7)
    assert torch.equal(w[:, :, 3, 3, 3], source["enc_stages.1.1.conv1.weight"][:, :, 1, 1, 1])
    # a constant kernel stays constant under linear interpolation
    const = {k: (torch.full_like(v, 0.25) if k.endswith("conv1.weight") else v)
             for k, v in source.items()}
    target = upkern_load_weights(build_model({**SMALL, "mednext_kernel_size": 7}), const)
    torch.testing.assert_close(target.state_dict()["up_blocks.2.conv1.weight"],
                               torch.full((16, 1, 7, 7, 7), 0.25), atol=1e-7, rtol=0)


def test_upkern_2d():
    source = build_model({**SMALL, "mednext_dim": "2d", "mednext_kernel_size": 3})
    target = upkern_load_weights(
        build_model({**SMALL, "mednext_dim": "2d", "mednext_kernel_size": 5}), source)
    s = source.state_dict()["bottleneck.0.conv1.weight"]
    expected = torch.einsum("ai,bj,ocij->ocab", W35, W35, s)
    torch.testing.assert_close(target.state_dict()["bottleneck.0.conv1.weight"], expected,
                               atol=1e-6, rtol=1e-6)


def test_upkern_needs_the_same_architecture():
    source = _trained_k3()
    with pytest.raises(UserError, match="same architecture apart from kernel sizes"):
        upkern_load_weights(build_model({**SMALL, "mednext_kernel_size": 5,
                                         "mednext_block_counts": [1] * 9}), source)
    with pytest.raises(UserError, match="cannot map 'stem.weight'"):
        upkern_load_weights(build_model({**SMALL, "mednext_kernel_size": 5, "in_channels": 2}),
                            source)
