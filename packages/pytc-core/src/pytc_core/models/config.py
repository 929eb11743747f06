"""The ``[model]`` table: one typed config for every architecture in the zoo.

Field names follow PyTC v2's ``ModelConfig`` so existing configs translate one to one.
Spatial sizes are in voxels, (z, y, x); channels are counted without the batch axis.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pytc_core.config import resolve_config
from pytc_core.errors import UserError

__all__ = ["ModelConfig", "model_config_from_dict", "model_config_to_dict"]


@dataclass(frozen=True)
class ModelConfig:
    """Typed ``[model]`` table (see ``pytc_core/models/README.md`` for every architecture).

    Shared: ``architecture``, ``in_channels``, ``out_channels``, ``deep_supervision``.
    MedNeXt (``mednext``: ``mednext_size`` S/B/M/L with ``mednext_kernel_size`` 3 or 5;
    ``mednext_custom``: every ``mednext_*`` field). MONAI nets: ``filters``, ``dropout``,
    ``norm``, ``activation``, ``num_res_units``, ``kernel_size``, ``feature_size``,
    ``hidden_size``, ``mlp_dim``, ``num_heads``, ``input_size`` (UNETR's fixed patch, voxels).
    ``feature_size`` unset means the network's own default (UNETR 16, SwinUNETR 24).
    """

    architecture: str = "mednext"
    in_channels: int = 1
    out_channels: int = 3
    deep_supervision: bool = False
    backend: str = "monai"
    # MedNeXt, predefined sizes (architecture = "mednext")
    mednext_size: str = "S"
    mednext_kernel_size: int = 3
    # MedNeXt, full control (architecture = "mednext_custom")
    mednext_base_channels: int = 32
    mednext_exp_r: int | list[int] = 4
    mednext_block_counts: list[int] = field(default_factory=lambda: [2] * 9)
    mednext_enc_kernel_size: int | None = None
    mednext_dec_kernel_size: int | None = None
    mednext_do_res: bool = True
    mednext_do_res_up_down: bool = True
    mednext_checkpoint_style: str | None = None
    mednext_norm: str = "group"
    mednext_dim: str = "3d"
    mednext_grn: bool = False
    # MONAI networks
    input_size: list[int] = field(default_factory=lambda: [128, 128, 128])
    filters: list[int] = field(default_factory=lambda: [32, 64, 128, 256, 512])
    dropout: float = 0.0
    norm: str = "batch"
    activation: str = "relu"
    num_res_units: int = 2
    kernel_size: int = 3
    feature_size: int | None = None
    hidden_size: int = 768
    mlp_dim: int = 3072
    num_heads: int = 12

    def __post_init__(self) -> None:
        for name in ("in_channels", "out_channels"):
            if getattr(self, name) < 1:
                raise UserError(f"model.{name} must be >= 1, got {getattr(self, name)}",
                                "set a positive channel count")


def model_config_from_dict(table: Mapping[str, Any] | ModelConfig) -> ModelConfig:
    """The ``[model]`` table (plain dict from TOML) as a :class:`ModelConfig`.

    Unknown keys and wrong types raise UserError naming the valid keys and the closest match.
    A ``ModelConfig`` is returned unchanged.
    """
    if isinstance(table, ModelConfig):
        return table
    if not isinstance(table, Mapping):
        raise UserError(f"model config must be a table, got {type(table).__name__}",
                        "pass the [model] table as a dict")
    return resolve_config(ModelConfig, None, overrides={k: v for k, v in table.items()})


def model_config_to_dict(config: ModelConfig | Mapping[str, Any]) -> dict[str, Any]:
    """A plain dict of every field (None kept), for checkpoints and TOML."""
    config = model_config_from_dict(config)
    return {f.name: _plain(getattr(config, f.name)) for f in dataclasses.fields(config)}


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
