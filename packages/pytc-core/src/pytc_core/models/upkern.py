"""UpKern (MedNeXt paper, Sec. 2.3): start a large-kernel MedNeXt from a trained small-kernel one."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pytc_core.errors import UserError

__all__ = ["upkern_load_weights", "upkern_state_dict"]


def upkern_state_dict(target: Mapping[str, Tensor], source: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``target``'s tensors filled from ``source``: equal shapes are copied unchanged, conv
    kernels whose spatial size differs (same channel dims) are resized trilinearly (bilinearly
    in 2D) with ``align_corners=False``, as DKFZ's ``upkern_load_weights``; the centre tap of
    an odd kernel therefore keeps its value. Any other difference is a UserError."""
    missing = [k for k in target if k not in source]
    extra = [k for k in source if k not in target]
    if missing or extra:
        raise UserError(f"UpKern needs the same architecture apart from kernel sizes; "
                        f"{len(missing)} tensors missing in the source (e.g. {missing[:2]}), "
                        f"{len(extra)} unexpected (e.g. {extra[:2]})",
                        "use a source trained with the same size, channels and deep supervision")
    out: dict[str, Tensor] = {}
    for name, dst in target.items():
        src = source[name]
        if src.shape == dst.shape:
            out[name] = src.detach().clone().to(dst.dtype)
        elif src.ndim in (4, 5) and src.ndim == dst.ndim and src.shape[:2] == dst.shape[:2]:
            mode = "trilinear" if src.ndim == 5 else "bilinear"
            resized = F.interpolate(src.detach().float(), size=tuple(dst.shape[2:]), mode=mode,
                                    align_corners=False)
            out[name] = resized.to(dst.dtype)
        else:
            raise UserError(f"UpKern cannot map '{name}' from {tuple(src.shape)} to "
                            f"{tuple(dst.shape)}", "only kernel sizes may differ")
    return out


def upkern_load_weights(target_model: nn.Module,
                        source: nn.Module | Mapping[str, Tensor]) -> nn.Module:
    """Load ``source`` (a trained kernel-3 MedNeXt, or its state dict) into ``target_model``
    (same config with kernel 5 or 7) by UpKern; returns ``target_model``."""
    src = source.state_dict() if isinstance(source, nn.Module) else source
    with torch.no_grad():
        target_model.load_state_dict(upkern_state_dict(target_model.state_dict(), src))
    return target_model
