"""pytc checkpoints: Lightning-compatible ``.ckpt`` files that rebuild their model alone.

Layout (a dict saved with ``torch.save``; Lightning itself is never imported here)::

    state_dict          {"model.<name>": tensor}   (the LightningModule holds the net as .model)
    hyper_parameters    {"config": full resolved config (dict with a "model" table, plus
                         targets, normalisation, patch and voxel size as the trainer resolved
                         them), "pytc_version": str, "pytc_checkpoint_format": 1}
    pytorch-lightning_version, epoch, global_step
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


def _read(path: str | os.PathLike[str], map_location: Any, trusted: bool) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"checkpoint not found: {p}", "check the --checkpoint path")
    try:
        ckpt = torch.load(p, map_location=map_location, weights_only=not trusted)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" in str(exc):
            raise UserError(f"{p} holds Python objects besides tensors and plain data",
                            "if you trust its origin, load it with trusted=True") from None
        raise UserError(f"{p} is not a PyTorch checkpoint ({str(exc).splitlines()[0]})",
                        "pass a .ckpt written by pytc-train") from None
    except (RuntimeError, EOFError, ValueError, OSError) as exc:
        raise UserError(f"{p} is not a PyTorch checkpoint ({str(exc).splitlines()[0]})",
                        "pass a .ckpt written by pytc-train") from None
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


def load_checkpoint_config(path: str | os.PathLike[str], *, trusted: bool = False) -> dict[str, Any]:
    """The full resolved config stored in a pytc checkpoint (no model is built)."""
    return dict(_read(path, "cpu", trusted)["hyper_parameters"]["config"])


def load_model_from_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu", *,
                               trusted: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model of a pytc checkpoint and load its weights: ``(model in eval mode,
    full config dict)``. UserError for a missing file, a non-pytc file, or another format.
    ``trusted=True`` allows arbitrary pickled objects (only for files you trust)."""
    ckpt = _read(path, map_location, trusted)
    config = dict(ckpt["hyper_parameters"]["config"])
    model = build_model(config["model"])
    weights = {k[len(_PREFIX):]: v for k, v in ckpt["state_dict"].items() if k.startswith(_PREFIX)}
    result = model.load_state_dict(weights, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise UserError(f"{path}: weights do not fit the model its config builds "
                        f"(missing {result.missing_keys[:2]}, unexpected {result.unexpected_keys[:2]})",
                        "the checkpoint is damaged or was edited")
    if map_location is not None and not callable(map_location) and not isinstance(map_location, dict):
        model = model.to(map_location)
    return model.eval(), config
