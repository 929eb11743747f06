"""MONAI networks under pytc's registry: BasicUNet, UNet, UNETR, SwinUNETR, SegResNet (3D).

Each takes ``(N, C_in, Z, Y, X)`` and returns ``(N, C_out, Z, Y, X)``; none has deep
supervision (asking for it is a UserError). Input sizes (voxels): BasicUNet multiples of 16,
UNet multiples of ``2 ** (len(filters) - 1)``, UNETR exactly ``input_size`` (multiples of
16), SwinUNETR multiples of 32, SegResNet multiples of 8.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from pytc_core.errors import UserError
from pytc_core.models.config import ModelConfig
from pytc_core.models.input_size import InputSizeRule

__all__ = [
    "basic_unet_input_rule",
    "build_monai_basic_unet3d",
    "build_monai_segresnet",
    "build_monai_swin_unetr",
    "build_monai_unet",
    "build_monai_unetr",
    "segresnet_input_rule",
    "swin_unetr_input_rule",
    "unet_input_rule",
    "unetr_input_rule",
]


def _no_deep_supervision(config: ModelConfig) -> None:
    if config.deep_supervision:
        raise UserError(f"architecture '{config.architecture}' has no deep supervision",
                        "set model.deep_supervision = false or use mednext / mednext_custom")


def _norm(config: ModelConfig) -> Any:
    """``model.norm`` as a MONAI norm spec (group norm needs a group count: 8)."""
    return ("group", {"num_groups": 8}) if config.norm == "group" else config.norm


def build_monai_basic_unet3d(config: ModelConfig) -> nn.Module:
    """``monai.networks.nets.BasicUNet``; ``filters`` gives its 5 encoder widths (+ last = first)."""
    from monai.networks.nets import BasicUNet  # heavy (every MONAI net): only when built

    _no_deep_supervision(config)
    features = list(config.filters)
    if len(features) == 5:
        features.append(features[0])
    if len(features) != 6:
        raise UserError(f"monai_basic_unet3d needs 5 or 6 filters, got {config.filters}",
                        "e.g. filters = [32, 32, 64, 128, 256]")
    return BasicUNet(spatial_dims=3, in_channels=config.in_channels,
                     out_channels=config.out_channels, features=tuple(features),
                     act=config.activation, norm=_norm(config), dropout=config.dropout)


def build_monai_unet(config: ModelConfig) -> nn.Module:
    """``monai.networks.nets.UNet`` with channels ``filters`` and stride 2 between levels."""
    from monai.networks.nets import UNet  # heavy (every MONAI net): only when built

    _no_deep_supervision(config)
    if len(config.filters) < 2:
        raise UserError("monai_unet needs at least 2 filters", "e.g. filters = [32, 64, 128]")
    return UNet(spatial_dims=3, in_channels=config.in_channels, out_channels=config.out_channels,
                channels=tuple(config.filters), strides=(2,) * (len(config.filters) - 1),
                kernel_size=config.kernel_size, up_kernel_size=config.kernel_size,
                num_res_units=config.num_res_units, act=config.activation, norm=_norm(config),
                dropout=config.dropout)


def build_monai_unetr(config: ModelConfig) -> nn.Module:
    """``monai.networks.nets.UNETR`` for patches of exactly ``input_size`` (multiples of 16)."""
    from monai.networks.nets import UNETR  # heavy (every MONAI net): only when built

    _no_deep_supervision(config)
    size = tuple(config.input_size)
    if len(size) != 3 or any(s % 16 for s in size):
        raise UserError(f"monai_unetr needs a 3D input_size of multiples of 16, got {list(size)}",
                        "e.g. input_size = [32, 32, 32]")
    if config.hidden_size % config.num_heads:
        raise UserError("monai_unetr needs hidden_size divisible by num_heads",
                        "e.g. hidden_size = 768, num_heads = 12")
    return UNETR(in_channels=config.in_channels, out_channels=config.out_channels, img_size=size,
                 feature_size=config.feature_size or 16, hidden_size=config.hidden_size,
                 mlp_dim=config.mlp_dim, num_heads=config.num_heads, norm_name=_norm(config),
                 dropout_rate=config.dropout, spatial_dims=3)


def build_monai_swin_unetr(config: ModelConfig) -> nn.Module:
    """``monai.networks.nets.SwinUNETR`` (inputs multiples of 32; feature_size multiple of 12)."""
    from monai.networks.nets import SwinUNETR  # heavy (every MONAI net): only when built

    _no_deep_supervision(config)
    feature_size = config.feature_size or 24
    if feature_size % 12:
        raise UserError(f"monai_swin_unetr needs feature_size divisible by 12, got {feature_size}",
                        "e.g. feature_size = 24 or 48")
    return SwinUNETR(in_channels=config.in_channels, out_channels=config.out_channels,
                     feature_size=feature_size, norm_name=_norm(config),
                     drop_rate=config.dropout, spatial_dims=3)


def build_monai_segresnet(config: ModelConfig) -> nn.Module:
    """``monai.networks.nets.SegResNet`` with ``init_filters = filters[0]`` (inputs multiples of 8)."""
    from monai.networks.nets import SegResNet  # heavy (every MONAI net): only when built

    _no_deep_supervision(config)
    return SegResNet(spatial_dims=3, init_filters=config.filters[0],
                     in_channels=config.in_channels, out_channels=config.out_channels,
                     dropout_prob=config.dropout or None, act=config.activation,
                     norm=_norm(config))


def basic_unet_input_rule(config: ModelConfig) -> InputSizeRule:
    """BasicUNet: four stride-2 poolings, multiples of 16 (MONAI pads other sizes level by
    level, which shifts features between tiles)."""
    return InputSizeRule(multiple=16)


def unet_input_rule(config: ModelConfig) -> InputSizeRule:
    """UNet: one stride-2 level per filter after the first, multiples of 2 ** (levels - 1)."""
    return InputSizeRule(multiple=2 ** max(len(config.filters) - 1, 0))


def unetr_input_rule(config: ModelConfig) -> InputSizeRule:
    """UNETR: exactly ``input_size`` (its position embedding is fixed)."""
    return InputSizeRule(exact=tuple(config.input_size))


def swin_unetr_input_rule(config: ModelConfig) -> InputSizeRule:
    """SwinUNETR: patch embedding 2 and four merges, multiples of 32."""
    return InputSizeRule(multiple=32)


def segresnet_input_rule(config: ModelConfig) -> InputSizeRule:
    """SegResNet with its default four levels (three stride-2 convolutions): multiples of 8."""
    return InputSizeRule(multiple=8)
