"""pytc checkpoints: Lightning-compatible ``.ckpt`` files that rebuild their model alone.

Layout (a dict saved with ``torch.save``; Lightning itself is never imported here)::

    state_dict          {"model.<name>": tensor}   (the LightningModule holds the net as .model)
    hyper_parameters    {"config": full resolved config (dict with a "model" table, plus
                         targets, normalisation, patch and voxel size as the trainer resolved
                         them), "pytc_version": str, "pytc_checkpoint_format": 1}
    pytorch-lightning_version, epoch, global_step
    callbacks           {"EMAWeightsCallback": {"ema_state": {"model.<name>": tensor}, ...}}
                        (only with EMA weights: pytc-train's optim.ema, PyTC v2's place)
"""

from __future__ import annotations

import dataclasses
import os
import pickle
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pytc_core.config import config_to_dict
from pytc_core.errors import UserError
from pytc_core.files import write_atomic
from pytc_core.models.dkfz_weights import load_nnunet_mednext_weights
from pytc_core.models.foreign import (
    ForwardToBackwardAffinities,
    checkpoint_layout,
    ema_weights,
    foreign_weights,
    mednext_config_from_weights,
    pytc_named,
    read_foreign_checkpoint,
    resolve_model_table,
    to_device,
    torch_load,
)
from pytc_core.models.registry import build_model
from pytc_core.version import __version__

__all__ = [
    "CHECKPOINT_FORMAT",
    "load_checkpoint_config",
    "load_model_from_checkpoint",
    "save_checkpoint",
]

CHECKPOINT_FORMAT = 1
_PREFIX = "model."


def _lightning_version() -> str:
    for dist in ("pytorch-lightning", "lightning"):
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return "2.0.0"


def _pytc_version() -> str:
    return __version__


def _config_dict(config: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = config_to_dict(config)
    if not isinstance(config, Mapping) or not isinstance(config.get("model"), Mapping):
        raise ValueError("save_checkpoint needs the full resolved config with a 'model' table")
    return _plain(config)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def save_checkpoint(path: str | os.PathLike[str], model: nn.Module, config: Mapping[str, Any],
                    *, epoch: int = 0, global_step: int = 0) -> Path:
    """Write ``model``'s weights and the full resolved ``config`` to ``path`` (atomically).

    ``config``: the whole resolved config (dict or dataclass) whose ``model`` table built
    ``model``. Returns the path written.
    """
    path = Path(path)
    ckpt = {
        "epoch": int(epoch),
        "global_step": int(global_step),
        "pytorch-lightning_version": _lightning_version(),
        "state_dict": {_PREFIX + k: v.detach().cpu() for k, v in model.state_dict().items()},
        "hyper_parameters": {
            "config": _config_dict(config),
            "pytc_version": _pytc_version(),
            "pytc_checkpoint_format": CHECKPOINT_FORMAT,
        },
    }
    return write_atomic(path, lambda fh: torch.save(ckpt, fh))


def _load(path: str | os.PathLike[str], map_location: Any, trusted: bool) -> Any:
    """The checkpoint file as loaded by torch (UserError for a missing or non-torch file)."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"checkpoint not found: {p}", "check the --checkpoint path")
    try:
        return torch_load(p, map_location, trusted)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" in str(exc):
            raise UserError(f"{p} holds Python objects besides tensors and plain data",
                            "if you trust its origin, load it with trusted=True") from None
        raise UserError(f"{p} is not a PyTorch checkpoint ({str(exc).splitlines()[0]})",
                        "pass a .ckpt written by pytc-train") from None
    except (RuntimeError, EOFError, ValueError, OSError) as exc:
        raise UserError(f"{p} is not a PyTorch checkpoint ({str(exc).splitlines()[0]})",
                        "pass a .ckpt written by pytc-train") from None


def _check_pytc(ckpt: Any, p: str | os.PathLike[str]) -> dict[str, Any]:
    """``ckpt`` if it is a readable pytc checkpoint of this format, else a UserError."""
    hparams = ckpt.get("hyper_parameters") if isinstance(ckpt, Mapping) else None
    if not isinstance(hparams, Mapping) or "pytc_checkpoint_format" not in hparams:
        raise UserError(f"{p} is not a pytc checkpoint (no hyper_parameters.pytc_checkpoint_format)",
                        "pass a .ckpt written by pytc-train; DKFZ MedNeXt weights go through "
                        "load_nnunet_mednext_weights")
    fmt = hparams["pytc_checkpoint_format"]
    if fmt != CHECKPOINT_FORMAT:
        raise UserError(f"{p} has checkpoint format {fmt!r} (written by pytc "
                        f"{hparams.get('pytc_version', '?')}); this pytc {_pytc_version()} reads "
                        f"format {CHECKPOINT_FORMAT}",
                        "use the pytc version that wrote it, or retrain")
    config = hparams.get("config")
    if not isinstance(config, Mapping) or not isinstance(config.get("model"), Mapping):
        raise UserError(f"{p} is a pytc checkpoint without a [model] config",
                        "the file is damaged; use another checkpoint")
    if not isinstance(ckpt.get("state_dict"), Mapping):
        raise UserError(f"{p} has no state_dict", "the file is damaged; use another checkpoint")
    return ckpt


def _read(path: str | os.PathLike[str], map_location: Any, trusted: bool) -> dict[str, Any]:
    return _check_pytc(_load(path, map_location, trusted), path)


def load_checkpoint_config(path: str | os.PathLike[str], *, trusted: bool = False) -> dict[str, Any]:
    """The full resolved config stored in a pytc checkpoint (no model is built)."""
    return dict(_read(path, "cpu", trusted)["hyper_parameters"]["config"])


def load_model_from_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu", *,
                               trusted: bool = False, model: Mapping[str, Any] | None = None,
                               weights: str = "auto") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model of a checkpoint and load its weights: ``(model in eval mode, full
    config dict)``.

    Reads pytc checkpoints and, through :mod:`pytc_core.models.foreign`, PyTC v2 and BANIS
    Lightning checkpoints and bare DKFZ MedNeXt weights; for those, ``model`` (a ``[model]``
    table) supplies what the file does not store, and ``weights`` picks ``raw`` or ``ema``
    tensors (``auto``: EMA where the file has them; also for pytc checkpoints of a run with
    ``optim.ema``, whose config then gets a ``source`` table naming the weights used). The returned config of a foreign file
    is pytc's view of it (``model``, ``data``, ``targets`` and ``source`` tables). UserError
    for a missing file, an unknown layout, tensors that do not map or do not fit, another
    pytc format. ``trusted=True`` allows arbitrary pickled objects (only for files you trust).
    """
    ckpt = _load(path, map_location, trusted)
    if checkpoint_layout(ckpt, str(path)) != "pytc":
        return _load_foreign(ckpt, path, map_location, model, weights)
    ckpt = _check_pytc(ckpt, path)
    if weights not in ("auto", "raw", "ema"):
        raise UserError(f"unknown weights '{weights}'", "use auto, raw or ema")
    ema = ema_weights(ckpt)
    if weights == "ema" and not ema:
        raise UserError(f"{Path(path).name} holds no EMA weights", "use --weights raw (or auto)")
    config = dict(ckpt["hyper_parameters"]["config"])
    for key, value in (model or {}).items():
        if config["model"].get(key, value) != value:
            raise UserError(f"model.{key} = {value!r} contradicts the checkpoint's own "
                            f"{config['model'][key]!r}", f"drop model.{key} from the config")
    net = build_model(config["model"])
    if ema and weights != "raw":  # auto: the EMA weights where the file has them
        state = ema
        config["source"] = {"layout": "pytc", "weights": "ema", "path": str(path)}
    else:
        state = {k[len(_PREFIX):]: v for k, v in ckpt["state_dict"].items()
                 if k.startswith(_PREFIX)}
        if ema:
            config["source"] = {"layout": "pytc", "weights": "raw", "path": str(path)}
    result = net.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise UserError(f"{path}: weights do not fit the model its config builds "
                        f"(missing {result.missing_keys[:2]}, unexpected {result.unexpected_keys[:2]})",
                        "the checkpoint is damaged or was edited")
    return to_device(net, map_location).eval(), config


def _load_foreign(ckpt: Any, path: str | os.PathLike[str], map_location: Any,
                  model: Mapping[str, Any] | None, weights: str) -> tuple[nn.Module, dict[str, Any]]:
    foreign = read_foreign_checkpoint(ckpt, path)
    which, tensors = foreign_weights(foreign, weights, path)
    shapes = mednext_config_from_weights(pytc_named(tensors, foreign, path))
    table = resolve_model_table(foreign, shapes, model)
    net: nn.Module = load_nnunet_mednext_weights(build_model(table), tensors)
    if foreign.forward_affinities:
        net = ForwardToBackwardAffinities(net)
    config = {"model": table, **foreign.config,
              "source": {"layout": foreign.layout, "weights": which, "path": str(path)}}
    return to_device(net, map_location).eval(), config
