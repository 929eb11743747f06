"""Architecture registry: names → builders that turn a :class:`ModelConfig` into a module.

Every registered builder returns a ``torch.nn.Module`` with one contract: input
``(N, C_in, Z, Y, X)`` (or ``(N, C_in, Y, X)`` for 2D MedNeXt); in eval mode the output is
``(N, C_out, Z, Y, X)``; in train mode with ``deep_supervision`` on, a dict
``{"output": full, "ds_1": 1/2, "ds_2": 1/4, "ds_3": 1/8, "ds_4": 1/16}``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pytc_core.errors import UserError, unknown_name_error
from pytc_core.models.config import ModelConfig, model_config_from_dict
from pytc_core.models.input_size import InputSizeRule

__all__ = [
    "Architecture",
    "Builder",
    "build_model",
    "count_parameters",
    "describe_architectures",
    "get_architecture",
    "get_architecture_builder",
    "list_architectures",
    "register_architecture",
    "validate_input_size",
]

Builder = Callable[[ModelConfig], nn.Module]
InputRule = Callable[[ModelConfig], InputSizeRule]


@dataclass(frozen=True)
class Architecture:
    """A registered network: its builder and the input sizes it takes for a config."""

    name: str
    build: Builder
    input_rule: InputRule


#: The built-in architectures: name -> (module, builder, input-size rule). The family modules
#: do not import this registry, so there is no import cycle; a module is imported on first use.
_BUILTIN: dict[str, tuple[str, str, str]] = {
    "mednext": ("pytc_core.models.mednext", "build_mednext", "mednext_input_rule"),
    "mednext_custom": ("pytc_core.models.mednext", "build_mednext_custom", "mednext_input_rule"),
    "monai_basic_unet3d": ("pytc_core.models.monai_nets", "build_monai_basic_unet3d",
                           "basic_unet_input_rule"),
    "monai_unet": ("pytc_core.models.monai_nets", "build_monai_unet", "unet_input_rule"),
    "monai_unetr": ("pytc_core.models.monai_nets", "build_monai_unetr", "unetr_input_rule"),
    "monai_swin_unetr": ("pytc_core.models.monai_nets", "build_monai_swin_unetr",
                         "swin_unetr_input_rule"),
    "monai_segresnet": ("pytc_core.models.monai_nets", "build_monai_segresnet",
                        "segresnet_input_rule"),
}
#: architectures registered by a lab's own code (``register_architecture``) and built-ins
#: already imported
_REGISTRY: dict[str, Architecture] = {}


def _any_size(config: ModelConfig) -> InputSizeRule:
    return InputSizeRule()


def register_architecture(name: str, input_rule: InputRule | None = None
                          ) -> Callable[[Builder], Builder]:
    """Decorator registering ``builder(config: ModelConfig) -> nn.Module`` under ``name``.

    The hook for a lab's own network. ``input_rule(config)`` states the spatial sizes it
    takes (:class:`InputSizeRule`; default: any size).
    """
    if name in _BUILTIN:
        raise ValueError(f"architecture '{name}' is built in; choose another name")

    def decorate(builder: Builder) -> Builder:
        known = _REGISTRY.get(name)
        if known is not None and known.build is not builder:
            raise ValueError(f"architecture '{name}' is already registered")
        _REGISTRY[name] = Architecture(name, builder, input_rule or _any_size)
        return builder

    return decorate


def list_architectures() -> list[str]:
    """Names of every architecture (built in and registered), sorted."""
    return sorted({*_BUILTIN, *_REGISTRY})


def get_architecture(name: str) -> Architecture:
    """The architecture registered as ``name``; UserError naming the closest match otherwise."""
    arch = _REGISTRY.get(name)
    if arch is not None:
        return arch
    if name not in _BUILTIN:
        raise unknown_name_error("architecture", name, list_architectures())
    module_name, builder, rule = _BUILTIN[name]
    module = importlib.import_module(module_name)
    arch = Architecture(name, getattr(module, builder), getattr(module, rule))
    _REGISTRY[name] = arch
    return arch


def get_architecture_builder(name: str) -> Builder:
    """The builder registered as ``name``; UserError listing the known names otherwise."""
    return get_architecture(name).build


def validate_input_size(config: Mapping[str, Any] | ModelConfig, size: Any,
                        what: str = "patch") -> None:
    """UserError naming the nearest valid sizes unless the network of ``config`` takes
    spatial ``size`` (voxels, (z, y, x))."""
    config = model_config_from_dict(config)
    get_architecture(config.architecture).input_rule(config).check(size, config.architecture,
                                                                   what)


def build_model(config: Mapping[str, Any] | ModelConfig) -> nn.Module:
    """Build the network described by a ``[model]`` table (dict) or a :class:`ModelConfig`.

    The module checks each input's spatial size before running (a forward pre-hook), so a
    size the network cannot take is a UserError naming the valid sizes.
    """
    config = model_config_from_dict(config)
    arch = get_architecture(config.architecture)
    model = arch.build(config)
    rule = arch.input_rule(config)

    def check_input(module: nn.Module, args: tuple[Any, ...]) -> None:
        if args and isinstance(args[0], torch.Tensor):
            x = args[0]
            if x.ndim != rule.spatial_dims + 2:
                raise UserError(f"{arch.name} takes (N, C, {rule.spatial_dims} spatial axes) "
                                f"tensors, got shape {tuple(x.shape)}",
                                "add the batch and channel axes")
            rule.check(x.shape[2:], arch.name, "input")

    model.register_forward_pre_hook(check_input)
    return model


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
    from pytc_core.models.mednext import MEDNEXT_SIZES  # family modules load on first use

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
