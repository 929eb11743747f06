"""Architecture registry: names → builders that turn a :class:`ModelConfig` into a module.

Every registered builder returns a ``torch.nn.Module`` with one contract: input
``(N, C_in, Z, Y, X)`` (or ``(N, C_in, Y, X)`` for 2D MedNeXt); in eval mode the output is
``(N, C_out, Z, Y, X)``; in train mode with ``deep_supervision`` on, a dict
``{"output": full, "ds_1": 1/2, "ds_2": 1/4, "ds_3": 1/8, "ds_4": 1/16}``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from pytc_core.errors import unknown_name_error
from pytc_core.models.config import ModelConfig, model_config_from_dict

__all__ = [
    "Builder",
    "build_model",
    "count_parameters",
    "describe_architectures",
    "get_architecture_builder",
    "list_architectures",
    "register_architecture",
]

Builder = Callable[[ModelConfig], nn.Module]
_REGISTRY: dict[str, Builder] = {}


def register_architecture(name: str) -> Callable[[Builder], Builder]:
    """Decorator registering ``builder(config: ModelConfig) -> nn.Module`` under ``name``."""
    def decorate(builder: Builder) -> Builder:
        if name in _REGISTRY and _REGISTRY[name] is not builder:
            raise ValueError(f"architecture '{name}' is already registered")
        _REGISTRY[name] = builder
        return builder

    return decorate


def _load_builtin() -> None:
    # Importing the families registers them (kept here so the registry module has no cycle).
    from pytc_core.models import mednext, monai_nets  # noqa: F401


def list_architectures() -> list[str]:
    """Names of every registered architecture, sorted."""
    _load_builtin()
    return sorted(_REGISTRY)


def get_architecture_builder(name: str) -> Builder:
    """The builder registered as ``name``; UserError listing the known names otherwise."""
    _load_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise unknown_name_error("architecture", name, _REGISTRY) from None


def build_model(config: Mapping[str, Any] | ModelConfig) -> nn.Module:
    """Build the network described by a ``[model]`` table (dict) or a :class:`ModelConfig`."""
    config = model_config_from_dict(config)
    return get_architecture_builder(config.architecture)(config)


def count_parameters(config: Mapping[str, Any] | ModelConfig) -> int:
    """Number of parameters of the network for ``config`` (built on the CPU and dropped;
    the meta device would save memory but costs seconds of one-time setup for MONAI's
    truncated-normal init)."""
    with torch.no_grad():
        model = build_model(config)
    return sum(p.numel() for p in model.parameters())


def describe_architectures(in_channels: int = 1, out_channels: int = 3
                           ) -> list[tuple[str, int, str]]:
    """``(name, parameters, summary)`` for every architecture with its default config (and
    each MedNeXt size as ``mednext/<size>``), for ``in_channels`` → ``out_channels``."""
    from pytc_core.models.mednext import MEDNEXT_SIZES

    rows = []
    for name in list_architectures():
        table = {"architecture": name, "in_channels": in_channels, "out_channels": out_channels}
        doc = (get_architecture_builder(name).__doc__ or "").strip().splitlines()
        summary = doc[0].replace("``", "") if doc else ""
        rows.append((name, count_parameters(table), summary))
        if name == "mednext":
            for size in MEDNEXT_SIZES:
                for kernel in (3, 5):
                    n = count_parameters({**table, "mednext_size": size,
                                          "mednext_kernel_size": kernel})
                    rows.append((f"mednext/{size}/k{kernel}", n,
                                 f"mednext_size = \"{size}\", mednext_kernel_size = {kernel}"))
    return rows
