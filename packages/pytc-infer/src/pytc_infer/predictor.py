"""A checkpoint's model as a window predictor: input normalisation, device, precision,
output activation and TTA, from the settings the training run recorded in its config.

Keys read from the checkpoint's config (all optional): ``data.patch_size`` (z, y, x),
``data.offsets`` or ``targets.offsets`` (the affinity offset of each output channel, default
the three nearest-neighbour edges for the first three channels), ``data.normalize``
(``auto``: integer raw divided by its dtype's maximum, float raw as is; ``none``;
``meanstd`` / ``percentile`` with ``data.mean`` / ``data.std``), applied with
:func:`pytc_core.normalize.normalize_raw`, the function pytc-train normalised with,
``targets.activation`` (``sigmoid``, default, or ``none``). A model trained with local shape
descriptors (``loss.lsd_weight`` > 0) has them as extra channels after the affinities; only
the affinity channels (one per offset) are predicted and written.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytc_core.errors import UserError
from pytc_core.normalize import NORMALIZE_MODES, RawNormalization, normalize_raw

__all__ = ["CheckpointSettings", "checkpoint_settings", "file_sha256", "make_forward",
           "normalize_raw", "resolve_device"]

NEAREST = ((-1, 0, 0), (0, -1, 0), (0, 0, -1))
PRECISIONS = ("32", "bf16", "16")


@dataclass(frozen=True)
class CheckpointSettings:
    """What inference needs to know from a checkpoint's config."""

    in_channels: int
    out_channels: int
    patch: tuple[int, int, int] | None
    offsets: tuple[tuple[int, int, int] | None, ...]
    activation: str = "sigmoid"
    normalize: str = "auto"
    mean: float = 0.0
    std: float = 1.0
    architecture: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def normalization(self) -> RawNormalization:
        """The raw normalisation the model was trained with."""
        if self.normalize in ("meanstd", "percentile"):
            return RawNormalization(self.normalize, self.mean, self.std)  # type: ignore[arg-type]
        return RawNormalization(self.normalize)  # type: ignore[arg-type]


def _table(config: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = config.get(name)
    return value if isinstance(value, Mapping) else {}


def checkpoint_settings(config: Mapping[str, Any]) -> CheckpointSettings:
    """Read the inference settings out of a checkpoint's full config (see the module docstring)."""
    model, data, targets = (_table(config, k) for k in ("model", "data", "targets"))
    in_ch, out_ch = int(model.get("in_channels", 1)), int(model.get("out_channels", 3))
    patch = data.get("patch_size") or data.get("patch")
    if isinstance(patch, int):
        patch = (patch,) * 3
    patch = tuple(int(p) for p in patch) if patch else None
    raw_offsets = data.get("offsets") or targets.get("offsets")
    if raw_offsets:
        offsets = tuple(tuple(int(v) for v in o) if o is not None else None for o in raw_offsets)
    else:
        offsets = NEAREST[:min(3, out_ch)] if out_ch >= 3 else ()
    loss = _table(config, "loss")
    if float(loss.get("lsd_weight", 0) or 0) > 0 and 0 < len(offsets) < out_ch:
        out_ch = len(offsets)  # the LSD channels after the affinities are not written
    activation = str(targets.get("activation", "sigmoid"))
    if activation not in ("sigmoid", "none"):
        raise UserError(f"checkpoint asks for output activation '{activation}'",
                        "pytc-infer applies sigmoid or none")
    normalize = str(data.get("normalize", "auto"))
    if normalize not in NORMALIZE_MODES:
        raise UserError(f"checkpoint asks for raw normalisation '{normalize}'",
                        "pytc-infer knows auto, none, meanstd and percentile")
    mean, std = data.get("mean"), data.get("std")
    settings = CheckpointSettings(in_ch, out_ch, patch, offsets, activation, normalize,  # type: ignore[arg-type]
                                  0.0 if mean is None else float(mean),
                                  1.0 if std is None else float(std),
                                  str(model.get("architecture", "")))
    try:
        _ = settings.normalization  # checked here, before any data is read
    except ValueError as exc:
        raise UserError(f"the checkpoint's data.normalize = {normalize!r} cannot be applied: "
                        f"{exc}", "fix data.mean / data.std in the training config and "
                        "retrain") from None
    return settings


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file (the checkpoint's identity in provenance and resume keys)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for piece in iter(lambda: fh.read(1 << 20), b""):
            digest.update(piece)
    return digest.hexdigest()


def resolve_device(device: str) -> str:
    """``auto`` → ``cuda`` when a GPU is visible, else ``cpu``; ``cuda`` without one is a
    UserError."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda, but no CUDA device is visible",
                        "use --device cpu or auto, or run on a GPU node")
    if device != "cpu" and not device.startswith("cuda"):
        raise UserError(f"unknown device '{device}'", "use auto, cpu or cuda")
    return device


def make_forward(model, *, activation: str = "sigmoid", precision: str = "32",
                 device: str = "cpu", channels: int | None = None) -> Callable:
    """A function (N, C_in, Z, Y, X) → (N, C_out, Z, Y, X) float32 running ``model`` under
    autocast for ``precision`` ``bf16``/``16`` and applying the output ``activation``;
    ``channels``: keep only the first that many output channels (the affinities)."""
    import torch

    if precision not in PRECISIONS:
        raise UserError(f"unknown precision '{precision}'", "use 32, bf16 or 16")
    dtype = {"bf16": torch.bfloat16, "16": torch.float16}.get(precision)
    device_type = "cuda" if str(device).startswith("cuda") else "cpu"

    def forward(x):
        if dtype is None:
            y = model(x)
        else:
            with torch.autocast(device_type, dtype=dtype):
                y = model(x)
        if isinstance(y, Mapping):
            y = y["output"]
        elif isinstance(y, (list, tuple)):
            y = y[0]
        if channels is not None:
            y = y[:, :channels]
        y = y.float()
        return torch.sigmoid(y) if activation == "sigmoid" else y

    return forward


def check_offsets(offsets: Sequence[Sequence[int] | None], out_channels: int) -> None:
    """UserError when there are more affinity offsets than output channels."""
    if len(offsets) > out_channels:
        raise UserError(f"the checkpoint lists {len(offsets)} affinity offsets for a model with "
                        f"{out_channels} output channels", "fix data.offsets in its config")
