"""pytc-infer's checks of its input against the checkpoint's data contract.

The checkpoint says what the model was trained on (:class:`pytc_core.contract.DataContract`);
before anything is written the input is checked against it:

- voxel size (nm, z y x; the input's metadata, or ``--voxel-size``): more than 5 % off along
  an axis is refused, unless the input is multiscale (precomputed mips, OME-Zarr levels) and
  one level matches, which is then read instead (logged), or ``--allow-resolution-mismatch``;
- intensities: 8 sampled patches of the input, normalised as in training, must span a range
  that fits the training data's (a warning with the numbers; an error under ``--strict``).

A checkpoint without a contract (written before it existed, or a foreign one) is run as it
is, with one note.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pytc_core.bbox import BBox
from pytc_core.contract import (
    VOXEL_TOLERANCE,
    DataContract,
    IntensityStats,
    intensity_mismatch,
    matching_level,
    sample_intensities,
    voxel_size_mismatch,
)
from pytc_core.errors import UserError
from pytc_core.volume import Volume

__all__ = ["CheckedInput", "check_input", "contract_of", "note_no_contract"]

log = logging.getLogger("pytc.infer")

Vec3f = tuple[float, float, float]


@dataclass(frozen=True)
class CheckedInput:
    """The volume to read (the input, or the level of a multiscale input that matches the
    training voxel size) and the voxel size (nm, z y x) the output is written with."""

    volume: Volume
    voxel_size: Vec3f
    level_chosen: bool = False


def contract_of(config: Mapping[str, Any], checkpoint: str) -> DataContract | None:
    """The data contract stored in a checkpoint's full config, or None when it has none
    (the caller notes it with :func:`note_no_contract` once its checks passed); a damaged one
    is a UserError."""
    raw = config.get("data_contract")
    if raw is None:
        return None
    try:
        return DataContract.from_dict(raw)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise UserError(f"{checkpoint}: its data contract is damaged ({type(exc).__name__}: "
                        f"{exc})", "use another checkpoint") from None


def note_no_contract(checkpoint: str) -> None:
    """The one stderr note for a checkpoint without a data contract."""
    log.info("note: %s stores no data contract (written before pytc-train recorded one, or "
             "not by pytc-train); the input's voxel size and intensities are not checked",
             checkpoint)


def _nm(v: Sequence[float]) -> str:
    return "x".join(f"{float(x):g}" for x in v) + " nm"


def check_input(volume: Volume, contract: DataContract | None, *, open_level: Any,
                voxel_size: Sequence[float] | None = None, allow_mismatch: bool = False,
                strict: bool = False, box: BBox | None = None,
                tolerance: float = VOXEL_TOLERANCE) -> CheckedInput:
    """Check ``volume`` against ``contract`` (see the module docstring).

    ``voxel_size`` (nm, z y x) overrides the volume's metadata; ``open_level(uri)`` opens a
    level of a multiscale input; ``box`` (global voxels) is the region intensities are
    sampled from (default: the whole volume). UserError for a voxel size that does not match
    (without ``allow_mismatch``) and, under ``strict``, for intensities that do not fit.
    """
    given: Vec3f = tuple(float(v) for v in (voxel_size or volume.voxel_size))  # type: ignore[assignment]
    if contract is None:
        return CheckedInput(volume, given)
    chosen = False
    if voxel_size_mismatch(contract.voxel_size, given, tolerance):
        level = None if voxel_size is not None else matching_level(contract.voxel_size,
                                                                  volume.levels, tolerance)
        if level is not None:
            uri, level_voxel = volume.levels[level]
            log.info("%s is %s; the model was trained at %s: reading its level %s (%s)",
                     volume.uri, _nm(given), _nm(contract.voxel_size), uri, _nm(level_voxel))
            volume, given, chosen, box = open_level(uri), tuple(level_voxel), True, None  # type: ignore[assignment]
        elif allow_mismatch:
            log.warning("%s is %s but the model was trained at %s (--allow-resolution-mismatch: "
                        "predicting anyway)", volume.uri, _nm(given), _nm(contract.voxel_size))
        else:
            levels = ", ".join(f"{u} ({_nm(v)})" for u, v in volume.levels)
            raise UserError(
                f"{volume.uri} has voxel size {_nm(given)} but the model was trained at "
                f"{_nm(contract.voxel_size)} (more than {tolerance:.0%} apart"
                + (f"; its levels: {levels}" if levels else "")
                + ("; a file that states no voxel size reads as 1x1x1 nm"
                   if voxel_size is None and given == (1.0, 1.0, 1.0) else "") + ")",
                "resample the input to the training voxel size (or name a matching level, "
                "e.g. layer@mip=N), pass --voxel-size Z,Y,X if its metadata is wrong, or "
                "--allow-resolution-mismatch to predict anyway")
    stats = IntensityStats.of(sample_intensities(volume, box, size=contract.patch))
    problem = intensity_mismatch(contract, volume.dtype.name, stats)
    if problem is not None:
        if strict:
            raise UserError(f"{volume.uri}: {problem}",
                            f"convert the input to what the model was trained on "
                            f"({contract.dtype}, {contract.intensity.line()}), or drop --strict "
                            "to predict anyway")
        log.warning("%s: %s; predictions may be poor (convert the input to %s; --strict makes "
                    "this an error)", volume.uri, problem, contract.dtype)
    return CheckedInput(volume, given, chosen)
