"""Load MedNeXt weights saved by DKFZ's ``nnunet_mednext`` into pytc's MedNeXt.

The two networks hold the same tensors under different names (``{i}`` a level, ``{j}`` a
block, ``{k}`` DKFZ's decoder level, counted from full resolution):

=============================  ===============================
nnunet_mednext (DKFZ)          pytc / MONAI layout
=============================  ===============================
``stem.*``                     ``stem.*``
``enc_block_{i}.{j}.*``        ``enc_stages.{i}.{j}.*``
``down_{i}.*``                 ``down_blocks.{i}.*``
``bottleneck.{j}.*``           ``bottleneck.{j}.*``
``up_{k}.*``                   ``up_blocks.{3-k}.*``
``dec_block_{k}.{j}.*``        ``dec_stages.{3-k}.{j}.*``
``out_0.*``                    ``out_0.*``
``out_{k}.*`` (k = 1..4)       ``out_blocks.{4-k}.*``
``*.grn_beta``, ``*.grn_gamma``  ``*.global_resp_beta``, ``*.global_resp_gamma``
``dummy_tensor``               (dropped: DKFZ's checkpointing helper, never used in outputs)
=============================  ===============================

Inside a block the names agree (``conv1``, ``norm``, ``conv2``, ``conv3``, ``res_conv``,
``conv_out``; ``norm.weight``/``norm.bias`` for group and layer norm alike).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from pytc_core.errors import UserError
from pytc_core.models.mednext import NnunetMedNeXtAdapter

__all__ = ["dkfz_to_pytc_name", "load_nnunet_mednext_weights", "nnunet_mednext_state_dict",
           "pytc_to_dkfz_name"]

_RULES: list[tuple[re.Pattern[str], object]] = [
    (re.compile(r"^enc_block_([0-3])\.(.+)$"), lambda m: f"enc_stages.{m[1]}.{m[2]}"),
    (re.compile(r"^down_([0-3])\.(.+)$"), lambda m: f"down_blocks.{m[1]}.{m[2]}"),
    (re.compile(r"^up_([0-3])\.(.+)$"), lambda m: f"up_blocks.{3 - int(m[1])}.{m[2]}"),
    (re.compile(r"^dec_block_([0-3])\.(.+)$"), lambda m: f"dec_stages.{3 - int(m[1])}.{m[2]}"),
    (re.compile(r"^out_([1-4])\.(.+)$"), lambda m: f"out_blocks.{4 - int(m[1])}.{m[2]}"),
    (re.compile(r"^((?:stem|bottleneck|out_0)\..+)$"), lambda m: m[1]),
]


def _renamed(name: str, rules: list[tuple[re.Pattern[str], object]]) -> str | None:
    """``name`` renamed by the first rule whose pattern matches it; None if none does."""
    for pattern, rename in rules:
        m = pattern.match(name)
        if m:
            return rename(m)  # type: ignore[operator]
    return None


def dkfz_to_pytc_name(name: str) -> str | None:
    """The pytc name of DKFZ tensor ``name``; None for ``dummy_tensor``; UserError if unknown."""
    if name == "dummy_tensor":
        return None
    new = _renamed(name, _RULES)
    if new is not None:
        return re.sub(r"\.grn_(beta|gamma)$", r".global_resp_\1", new)
    raise UserError(f"'{name}' is not a tensor name of nnunet_mednext's MedNeXt",
                    "pass the state dict of an nnunet_mednext MedNeXt network")


_INVERSE: list[tuple[re.Pattern[str], object]] = [
    (re.compile(r"^enc_stages\.([0-3])\.(.+)$"), lambda m: f"enc_block_{m[1]}.{m[2]}"),
    (re.compile(r"^down_blocks\.([0-3])\.(.+)$"), lambda m: f"down_{m[1]}.{m[2]}"),
    (re.compile(r"^up_blocks\.([0-3])\.(.+)$"), lambda m: f"up_{3 - int(m[1])}.{m[2]}"),
    (re.compile(r"^dec_stages\.([0-3])\.(.+)$"), lambda m: f"dec_block_{3 - int(m[1])}.{m[2]}"),
    (re.compile(r"^out_blocks\.([0-3])\.(.+)$"), lambda m: f"out_{4 - int(m[1])}.{m[2]}"),
    (re.compile(r"^((?:stem|bottleneck|out_0)\..+)$"), lambda m: m[1]),
]


def pytc_to_dkfz_name(name: str) -> str:
    """The DKFZ ``nnunet_mednext`` name of pytc MedNeXt tensor ``name`` (the inverse of
    :func:`dkfz_to_pytc_name`), e.g. to hand weights to a DKFZ, BANIS or PyTC v2 user."""
    new = _renamed(name, _INVERSE)
    if new is not None:
        return re.sub(r"\.global_resp_(beta|gamma)$", r".grn_\1", new)
    raise UserError(f"'{name}' is not a tensor name of pytc's MedNeXt",
                    "pass the state dict of a pytc MedNeXt network")


def _unwrap(state_dict: Mapping[str, Tensor]) -> Mapping[str, Tensor]:
    inner = state_dict.get("state_dict") if isinstance(state_dict, Mapping) else None
    if isinstance(inner, Mapping):  # nnU-Net training checkpoints nest it
        state_dict = inner
    return {k.removeprefix("module."): v for k, v in state_dict.items()}


def nnunet_mednext_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A DKFZ MedNeXt state dict renamed to pytc's names (``dummy_tensor`` dropped)."""
    out: dict[str, Tensor] = {}
    for name, tensor in _unwrap(state_dict).items():
        new = dkfz_to_pytc_name(name)
        if new is not None:
            out[new] = tensor
    return out


def load_nnunet_mednext_weights(model: nn.Module, state_dict: Mapping[str, Tensor]) -> nn.Module:
    """Load a state dict saved by ``nnunet_mednext``'s ``MedNeXt`` into ``model`` (built by
    ``build_model`` with the matching ``mednext``/``mednext_custom`` config), strictly: every
    tensor mapped, none missing, shapes equal; a UserError otherwise. Returns ``model``."""
    if isinstance(model, NnunetMedNeXtAdapter):  # DKFZ's own network: names already agree
        model.net.load_state_dict(_unwrap(state_dict), strict=True)
        return model
    renamed = nnunet_mednext_state_dict(state_dict)
    own = model.state_dict()
    missing = [k for k in own if k not in renamed]
    extra = [k for k in renamed if k not in own]
    if extra:
        ds = any(k.startswith("out_blocks.") for k in extra)
        raise UserError(f"the DKFZ weights hold {len(extra)} tensors this model lacks "
                        f"(e.g. {extra[0]})",
                        "set model.deep_supervision = true" if ds else
                        "build the model with the config the weights were trained with "
                        "(size, block counts, grn, do_res_up_down)")
    if missing:
        ds = any(k.startswith("out_blocks.") for k in missing)
        raise UserError(f"the DKFZ weights lack {len(missing)} tensors of this model "
                        f"(e.g. {missing[0]})",
                        "set model.deep_supervision = false" if ds else
                        "build the model with the config the weights were trained with "
                        "(size, block counts, grn, do_res_up_down)")
    for name, tensor in renamed.items():
        if tuple(tensor.shape) != tuple(own[name].shape):
            raise UserError(f"DKFZ tensor for '{name}' has shape {tuple(tensor.shape)}, the model "
                            f"expects {tuple(own[name].shape)}",
                            "match channels, expansion ratios and kernel sizes to the weights")
    with torch.no_grad():
        model.load_state_dict(renamed, strict=True)
    return model
