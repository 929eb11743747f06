"""Checkpoints written by other tools, as pytc models: PyTC v2, BANIS and DKFZ MedNeXt weights.

Every layout holds DKFZ ``nnunet_mednext`` MedNeXt tensors under a prefix; they are renamed
to pytc's MedNeXt (:mod:`pytc_core.models.dkfz_weights`) and loaded strictly.

=================  ===============================================  =========================
layout             tensors                                          model settings
=================  ===============================================  =========================
``pytc-v2``        ``state_dict["model.model.<DKFZ name>"]``;        none stored (its config
                   EMA weights in ``callbacks["EMAWeightsCallback    is not embedded): read
                   ..."]["ema_state"]["model.<DKFZ name>"]``         from the tensors' shapes
``banis``          ``state_dict["model._orig_mod.<DKFZ name>"]``     ``hyper_parameters``:
                   (``torch.compile``) or ``"model.<DKFZ name>"``    ``model_id``,
                                                                    ``kernel_size``,
                                                                    ``num_input_channels``,
                                                                    ``long_range``,
                                                                    ``small_size``
``nnunet-mednext`` a bare DKFZ state dict (``.pth``; ``state_dict``  from the tensors' shapes
                   or ``module.`` nesting allowed)
=================  ===============================================  =========================

What the file does not state comes from the tensors (channels, levels, blocks per level,
expansion ratios, kernel sizes, GRN, residual up/down blocks, deep supervision) and from a
``[model]`` table the caller passes (``overrides``), which wins over the shapes but not over
a value the file stores (a contradiction is a UserError). Axis order: as pytc, (z, y, x).

BANIS predicts 3 nearest-neighbour affinities in the *forward* convention (channel ``c`` at
``v`` is the edge ``v``–``v + e_c``) and 3 long-range ones at ``+long_range``. pytc's decoders
read the nearest-neighbour edges backwards (``v``–``v - e_c``), so a BANIS model is wrapped in
:class:`ForwardToBackwardAffinities`, which moves channels 0–2 one voxel along their axis; the
long-range channels keep BANIS's offsets, recorded as ``(+L, 0, 0)`` etc.
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from pytc_core.errors import UserError
from pytc_core.models.dkfz_weights import dkfz_to_pytc_name
from pytc_core.models.mednext import MEDNEXT_SIZES

__all__ = [
    "FOREIGN_LAYOUTS",
    "ForeignCheckpoint",
    "ForwardToBackwardAffinities",
    "checkpoint_layout",
    "ema_weights",
    "mednext_config_from_weights",
    "read_foreign_checkpoint",
]

FOREIGN_LAYOUTS = ("pytc-v2", "banis", "nnunet-mednext")
NEAREST = ((-1, 0, 0), (0, -1, 0), (0, 0, -1))
_DKFZ_ONLY = re.compile(r"^(enc_block|down|up|dec_block)_[0-3]\.")  # names pytc does not use


@dataclass(frozen=True)
class ForeignCheckpoint:
    """A foreign checkpoint's tensors (DKFZ names, no prefix) and what the file states.

    ``stored_model``: ``[model]`` keys the file itself states; ``config``: the other tables
    pytc-infer reads (``data.normalize``, ``data.patch_size``, ``targets.offsets``).
    """

    layout: str
    weights: dict[str, Tensor]
    ema: dict[str, Tensor] | None = None
    stored_model: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    forward_affinities: bool = False


def _keys(mapping: Any) -> list[str]:
    return [k for k in mapping if isinstance(k, str)] if isinstance(mapping, Mapping) else []


def checkpoint_layout(ckpt: Any, source: str = "the checkpoint") -> str:
    """``pytc``, ``pytc-v2``, ``banis`` or ``nnunet-mednext`` for a loaded checkpoint object;
    UserError (naming ``source``) when it is none of them."""
    if not isinstance(ckpt, Mapping):
        raise UserError(f"{source} holds a {type(ckpt).__name__}, not a dict of tensors",
                        "pass a pytc, PyTC v2 or BANIS .ckpt, or DKFZ MedNeXt weights")
    hparams = ckpt.get("hyper_parameters")
    if isinstance(hparams, Mapping) and "pytc_checkpoint_format" in hparams:
        return "pytc"
    state = ckpt.get("state_dict")
    keys = _keys(state)
    if "pytc_metadata" in ckpt or any(k.startswith("model.model.") for k in keys):
        return "pytc-v2"
    if ("best_nerl_so_far" in ckpt or "best_thr_so_far" in ckpt
            or any(k.startswith("model._orig_mod.") for k in keys)
            or (isinstance(hparams, Mapping) and "model_id" in hparams)):
        return "banis"
    bare = keys or _keys(ckpt)
    if any(_DKFZ_ONLY.match(k.removeprefix("module.")) for k in bare):
        return "nnunet-mednext"
    raise UserError(f"{source} is not a pytc checkpoint, nor a PyTC v2, BANIS or DKFZ MedNeXt one "
                    "(no pytc hyper_parameters, no MedNeXt tensors under a known prefix)",
                    "pass a checkpoint written by pytc-train, PyTC v2 or BANIS (MedNeXt), or DKFZ "
                    "MedNeXt weights; for a bare state dict build the model and use "
                    "load_state_dict or load_nnunet_mednext_weights")


def _strip(state: Mapping[str, Tensor], prefixes: tuple[str, ...]) -> dict[str, Tensor]:
    """Tensors with the first matching prefix removed, then ``_orig_mod.`` (torch.compile)."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if not isinstance(value, Tensor):
            continue
        for prefix in prefixes:
            if key.startswith(prefix):
                key = key[len(prefix):]
                break
        else:
            continue  # not the network's (e.g. a loss module's buffer)
        out[key.removeprefix("_orig_mod.").removeprefix("module.")] = value
    return out


def ema_weights(ckpt: Mapping[str, Any]) -> dict[str, Tensor] | None:
    """The EMA weights a Lightning checkpoint keeps in
    ``callbacks["EMAWeightsCallback..."]["ema_state"]`` (PyTC v2's callback and pytc-train's
    ``optim.ema``), their ``model.`` prefix removed; None when it has none."""
    return _ema_state(ckpt)


def _ema_state(ckpt: Mapping[str, Any]) -> dict[str, Tensor] | None:
    callbacks = ckpt.get("callbacks")
    if not isinstance(callbacks, Mapping):
        return None
    for name, state in callbacks.items():
        if str(name).startswith("EMAWeightsCallback") and isinstance(state, Mapping):
            ema = state.get("ema_state")
            if isinstance(ema, Mapping) and ema:
                return _strip(ema, ("model.",))
    return None


def read_foreign_checkpoint(ckpt: Mapping[str, Any], path: str | os.PathLike[str]
                            ) -> ForeignCheckpoint:
    """The tensors and stored settings of a PyTC v2, BANIS or DKFZ checkpoint object."""
    name = Path(path).name
    layout = checkpoint_layout(ckpt, name)
    if layout == "pytc":
        raise ValueError("a pytc checkpoint is read by load_model_from_checkpoint itself")
    state = ckpt.get("state_dict")
    if layout == "nnunet-mednext":
        source = state if isinstance(state, Mapping) else ckpt
        weights = {k.removeprefix("module."): v for k, v in source.items()
                   if isinstance(v, Tensor)}
        return ForeignCheckpoint(layout, weights, config={"data": {"normalize": "auto"}})
    assert isinstance(state, Mapping)
    if layout == "pytc-v2":
        weights = _strip(state, ("model.model.",))
        meta = ckpt.get("pytc_metadata")
        arch = meta.get("model_arch") if isinstance(meta, Mapping) else None
        if isinstance(arch, str) and not arch.startswith("mednext"):
            raise UserError(f"{name} is a PyTC v2 checkpoint of architecture '{arch}'; pytc "
                            "reads PyTC v2's MedNeXt checkpoints only",
                            "retrain with pytc-train, or export the weights of a MedNeXt")
        return ForeignCheckpoint(layout, weights, _ema_state(ckpt),
                                 config={"data": {"normalize": "auto"}})
    weights = _strip(state, ("model.",))
    hp = ckpt.get("hyper_parameters")
    hp = hp if isinstance(hp, Mapping) else {}
    stored: dict[str, Any] = {"out_channels": 6 + int(bool(hp.get("sdt", False)))}
    if "model_id" in hp:
        stored["architecture"] = "mednext"
        stored["mednext_size"] = str(hp["model_id"]).upper()
    if "kernel_size" in hp:
        stored["mednext_kernel_size"] = int(hp["kernel_size"])
    if "num_input_channels" in hp:
        stored["in_channels"] = int(hp["num_input_channels"])
    long_range = int(hp.get("long_range", 10))
    offsets = [list(o) for o in NEAREST] + [[long_range, 0, 0], [0, long_range, 0],
                                            [0, 0, long_range]]
    data: dict[str, Any] = {"normalize": "auto"}  # BANIS divides uint8 raw by 255
    if hp.get("small_size"):
        data["patch_size"] = [int(hp["small_size"])] * 3
    return ForeignCheckpoint(layout, weights, stored_model=stored,
                             config={"data": data, "targets": {"offsets": offsets}},
                             forward_affinities=True)


def _count(names: list[str], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return len({m[1] for n in names if (m := pattern.match(n))})


def mednext_config_from_weights(weights: Mapping[str, Tensor]) -> dict[str, Any]:
    """The ``[model]`` table of the MedNeXt whose (pytc-named) tensors are ``weights``.

    Read from the shapes: channels, base channels, blocks and expansion ratio per level,
    encoder/decoder kernel sizes, GRN, residual up/down blocks, deep supervision, 2d/3d. Not
    visible in tensors, so left at DKFZ's defaults: ``mednext_norm = "group"`` and
    ``mednext_do_res = true``. A paper size (S/B/M/L) comes back as ``mednext`` with that size.
    """
    names = list(weights)
    try:
        stem = weights["stem.weight"]
        out_channels = int(weights["out_0.conv_out.bias"].shape[0])
    except KeyError as exc:
        raise UserError(f"the weights have no {exc.args[0]} tensor: not a MedNeXt",
                        "pass the checkpoint of a MedNeXt network") from None
    stages = [f"enc_stages.{i}." for i in range(4)] + ["bottleneck."] + [
        f"dec_stages.{i}." for i in range(4)]
    counts, exp_r = [], []
    for prefix in stages:
        n = _count(names, prefix)
        if n == 0:
            raise UserError(f"the weights have no '{prefix}0' block: not a 5-level MedNeXt",
                            "pass the checkpoint of a MedNeXt network")
        counts.append(n)
        w = weights[f"{prefix}0.conv2.weight"]
        exp_r.append(int(w.shape[0]) // int(w.shape[1]))
    enc_k = int(weights["enc_stages.0.0.conv1.weight"].shape[-1])
    dec_k = int(weights["dec_stages.3.0.conv1.weight"].shape[-1])
    table: dict[str, Any] = {
        "in_channels": int(stem.shape[1]), "out_channels": out_channels,
        "deep_supervision": any(n.startswith("out_blocks.") for n in names),
        "mednext_base_channels": int(stem.shape[0]), "mednext_exp_r": exp_r,
        "mednext_block_counts": counts, "mednext_kernel_size": enc_k,
        "mednext_enc_kernel_size": enc_k, "mednext_dec_kernel_size": dec_k,
        "mednext_grn": any(n.endswith("global_resp_beta") for n in names),
        "mednext_do_res_up_down": "down_blocks.0.res_conv.weight" in weights,
        "mednext_dim": "3d" if stem.ndim == 5 else "2d",
    }
    for size, spec in MEDNEXT_SIZES.items():
        if (table["mednext_base_channels"] == 32 and enc_k == dec_k and enc_k in (3, 5)
                and spec["exp_r"] == exp_r and spec["block_counts"] == counts
                and not table["mednext_grn"] and table["mednext_do_res_up_down"]
                and table["mednext_dim"] == "3d"):
            return {"architecture": "mednext", "in_channels": table["in_channels"],
                    "out_channels": out_channels, "deep_supervision": table["deep_supervision"],
                    "mednext_size": size, "mednext_kernel_size": enc_k}
    return {"architecture": "mednext_custom", **table}


def resolve_model_table(foreign: ForeignCheckpoint, shapes: Mapping[str, Any],
                        overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``[model]`` table: the shapes' reading, under the caller's ``overrides``, under what
    the file stores (an override that contradicts a stored value is a UserError; a stored
    value that contradicts the shapes fails later, in the strict load, naming the tensor)."""
    overrides = dict(overrides or {})
    for key, value in overrides.items():
        stored = foreign.stored_model.get(key)
        if stored is not None and stored != value:
            raise UserError(f"model.{key} = {value!r} contradicts the checkpoint's own "
                            f"{stored!r} ({foreign.layout})", f"drop model.{key} from the config")
    table = {**shapes, **overrides, **foreign.stored_model}
    if table.get("architecture") == "mednext":  # a paper size: the custom fields do not apply
        table = {k: v for k, v in table.items()
                 if not k.startswith("mednext_") or k in ("mednext_size", "mednext_kernel_size")}
    return table


def foreign_weights(foreign: ForeignCheckpoint, which: str, path: str | os.PathLike[str]
                    ) -> tuple[str, dict[str, Tensor]]:
    """``(raw|ema, DKFZ-named tensors)`` of ``foreign``: ``which`` ``auto`` takes the EMA
    weights where the file has them."""
    if which not in ("auto", "raw", "ema"):
        raise UserError(f"unknown weights '{which}'", "use auto, raw or ema")
    if which == "auto":
        which = "ema" if foreign.ema else "raw"
    if which == "ema" and not foreign.ema:
        raise UserError(f"{Path(path).name} holds no EMA weights", "use --weights raw (or auto)")
    return which, dict(foreign.ema if which == "ema" else foreign.weights)  # type: ignore[arg-type]


def pytc_named(tensors: Mapping[str, Tensor], foreign: ForeignCheckpoint,
               path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """DKFZ-named ``tensors`` under pytc's MedNeXt names (UserError naming the first tensor
    that does not map)."""
    out: dict[str, Tensor] = {}
    for name, tensor in tensors.items():
        try:
            new = dkfz_to_pytc_name(name)
        except UserError:
            raise UserError(f"{Path(path).name} ({foreign.layout}): tensor '{name}' does not "
                            "map onto pytc's MedNeXt",
                            "pass a checkpoint of a MedNeXt network (DKFZ nnunet_mednext names)"
                            ) from None
        if new is not None:
            out[new] = tensor
    return out


class ForwardToBackwardAffinities(nn.Module):
    """Wraps a network whose channels 0–2 are forward nearest-neighbour affinities (edge
    ``v``–``v + e_c``, BANIS) so they come out in pytc's backward convention (edge
    ``v``–``v - e_c``): channel ``c`` moves one voxel along spatial axis ``c`` (z, y, x). The
    first slice along that axis, whose edge leaves the window, repeats its neighbour; with
    overlapping Gaussian-weighted windows it only matters at a window's rim."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    @staticmethod
    def shift(y: Tensor) -> Tensor:
        """(N, C, Z, Y, X) forward affinities in channels 0–2 → backward ones."""
        out = y.clone()
        for c in range(min(3, y.shape[1])):
            axis = 2 + c
            n = y.shape[axis]
            moved = y[:, c].narrow(axis - 1, 0, n - 1)
            out[:, c].narrow(axis - 1, 1, n - 1).copy_(moved)
            out[:, c].narrow(axis - 1, 0, 1).copy_(y[:, c].narrow(axis - 1, 0, 1))
        return out

    def forward(self, x: Tensor) -> Any:
        y = self.net(x)
        if isinstance(y, Mapping):
            return {k: self.shift(v) for k, v in y.items()}
        return self.shift(y)


def to_device(model: nn.Module, map_location: Any) -> nn.Module:
    """``model`` moved to ``map_location`` when that names one device."""
    if map_location is not None and not callable(map_location) and not isinstance(
            map_location, dict):
        model = model.to(map_location)
    return model


def torch_load(path: Path, map_location: Any, trusted: bool) -> Any:
    """``torch.load`` of a checkpoint; Lightning's ``AttributeDict`` hyper-parameters load as
    ordered dicts without ``trusted`` (no code from the file runs)."""
    if trusted:
        return torch.load(path, map_location=map_location, weights_only=False)
    safe: list[Any] = [(OrderedDict, f"{m}.AttributeDict") for m in (
        "pytorch_lightning.utilities.parsing", "lightning.pytorch.utilities.parsing",
        "lightning_fabric.utilities.data", "lightning.fabric.utilities.data")]
    safe += [(_ordered_dict, "collections.defaultdict"), float, int]  # BANIS: defaultdict(float)
    with torch.serialization.safe_globals(safe):
        return torch.load(path, map_location=map_location, weights_only=True)


def _ordered_dict(*_factory: Any) -> OrderedDict:
    """Stands in for ``collections.defaultdict`` when a checkpoint is read (its items kept)."""
    return OrderedDict()
