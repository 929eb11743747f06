"""OME-Zarr (NGFF 0.4 and 0.5) multiscales metadata: voxel size and offset of one level.

An OME-Zarr image is a zarr group whose attributes hold ``multiscales`` (0.4, zarr v2) or
``ome.multiscales`` (0.5, zarr v3): the axes (names, types, units) and, per level, the path of
its array and ``coordinateTransformations`` (a ``scale`` and an optional ``translation`` in
the axes' units; a multiscale-wide pair is applied after the level's own). pytc reads the
spatial axes (z, y, x), with an optional channel axis first, and converts them to nm.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pytc_core.bbox import Vec3
from pytc_core.errors import UserError
from pytc_core.volume.metadata import nm_per_unit

__all__ = ["NgffLevel", "level_paths", "multiscales_of", "ngff_attrs", "ngff_level"]

log = logging.getLogger("pytc.volume")


@dataclass(frozen=True)
class NgffLevel:
    """One level of an OME-Zarr image: its array path (relative to the image group), voxel
    size (nm, z y x), offset (voxels, z y x) and whether a channel axis comes first."""

    path: str
    voxel_size: tuple[float, float, float]
    offset: Vec3
    channels: bool
    version: str


def multiscales_of(attrs: Mapping[str, Any]) -> tuple[list, str] | None:
    """(the ``multiscales`` list, the NGFF version) of a group's attributes, or None."""
    ome = attrs.get("ome")
    if isinstance(ome, Mapping) and isinstance(ome.get("multiscales"), list) and ome["multiscales"]:
        return ome["multiscales"], str(ome.get("version", "0.5"))
    ms = attrs.get("multiscales")
    if isinstance(ms, list) and ms and isinstance(ms[0], Mapping):
        return ms, str(ms[0].get("version", "0.4"))
    return None


def level_paths(attrs: Mapping[str, Any]) -> list[str]:
    """The array paths of an OME-Zarr group's levels, level 0 first (empty: not OME-Zarr)."""
    found = multiscales_of(attrs)
    if found is None:
        return []
    datasets = found[0][0].get("datasets") or []
    return [str(d.get("path", "")).strip("/") for d in datasets if isinstance(d, Mapping)]


def _transforms(items: Any, n: int, uri: str) -> tuple[list[float], list[float]]:
    scale, translation = [1.0] * n, [0.0] * n
    for t in items or []:
        kind = t.get("type") if isinstance(t, Mapping) else None
        if kind == "identity":
            continue
        if kind not in ("scale", "translation") or kind not in t:
            raise UserError(f"{uri}: unsupported OME-Zarr coordinate transformation {t!r}",
                            "pytc reads scale and translation given inline")
        values = [float(v) for v in t[kind]]
        if len(values) != n:
            raise UserError(f"{uri}: OME-Zarr {kind} {values} has {len(values)} entries for {n} axes",
                            "fix the multiscales metadata")
        if kind == "scale":
            scale = values
        else:
            translation = values
    return scale, translation


def _axes(ms: Mapping[str, Any], ndim: int, uri: str) -> tuple[bool, list[float]]:
    """(channel axis first?, nm per unit of z, y, x) from the multiscale's axes."""
    axes = ms.get("axes")
    if axes is None:  # NGFF <= 0.3: always 5D tczyx
        axes = ["t", "c", "z", "y", "x"][-ndim:]
    names = [str(a.get("name") if isinstance(a, Mapping) else a).lower() for a in axes]
    types = [str(a.get("type", "")) if isinstance(a, Mapping) else "" for a in axes]
    units = [a.get("unit") if isinstance(a, Mapping) else None for a in axes]
    if len(names) != ndim:
        raise UserError(f"{uri}: OME-Zarr axes {names} do not match the array's {ndim} dimensions",
                        "fix the multiscales metadata")
    lead = names[:-3]
    channels = len(lead) == 1 and (lead[0] == "c" or types[0] == "channel")
    if names[-3:] != ["z", "y", "x"] or (lead and not channels):
        raise UserError(f"{uri} has OME-Zarr axes {names}; pytc reads (z, y, x) or (c, z, y, x)",
                        "drop the time axis or reorder the axes (e.g. with ome-zarr-py)")
    return channels, [nm_per_unit(u, uri) for u in units[-3:]]


def ngff_level(attrs: Mapping[str, Any], ndim: int | None, uri: str, path: str | None = None) -> NgffLevel | None:
    """The level at ``path`` (default: the first, level 0) of the OME-Zarr group with
    ``attrs``; None when the group has no multiscales or does not list ``path``.

    ``ndim``: the level array's number of dimensions when known (checked against the axes).
    """
    found = multiscales_of(attrs)
    if found is None:
        return None
    multiscales, version = found
    ms = multiscales[0]
    datasets = ms.get("datasets") or []
    if not datasets:
        raise UserError(f"{uri}: OME-Zarr multiscales lists no datasets", "fix the multiscales metadata")
    if path is None:
        dataset = datasets[0]
    else:
        matches = [d for d in datasets if str(d.get("path", "")).strip("/") == path.strip("/")]
        if not matches:
            return None
        dataset = matches[0]
    axes = ms.get("axes")
    n = ndim if ndim is not None else (len(axes) if axes is not None else 5)
    channels, unit_nm = _axes(ms, n, uri)
    s_ds, t_ds = _transforms(dataset.get("coordinateTransformations"), n, uri)
    s_g, t_g = _transforms(ms.get("coordinateTransformations"), n, uri)
    scale = [a * b for a, b in zip(s_ds, s_g, strict=True)]
    translation = [t * g + u for t, g, u in zip(t_ds, s_g, t_g, strict=True)]
    voxel = tuple(round(s * u, 9) for s, u in zip(scale[-3:], unit_nm, strict=True))
    if any(v <= 0 for v in voxel):
        raise UserError(f"{uri}: OME-Zarr scale {scale} is not positive", "fix the multiscales metadata")
    exact = [t * u / v for t, u, v in zip(translation[-3:], unit_nm, voxel, strict=True)]
    offset = tuple(int(round(q)) for q in exact)
    if any(abs(q - o) > 1e-3 for q, o in zip(exact, offset, strict=True)):
        log.warning("%s: OME-Zarr translation %s is not a whole number of voxels; using offset %s voxels",
                    uri, translation[-3:], list(offset))
    return NgffLevel(str(dataset.get("path", "")).strip("/"), voxel, offset, channels, version)  # type: ignore[arg-type]


def ngff_attrs(zarr_format: int, axes: str, voxel_size: Sequence[float], offset: Sequence[int],
               name: str = "", path: str = "0") -> dict[str, Any]:
    """Group attributes of a one-level OME-Zarr image (NGFF 0.4 for zarr v2, 0.5 for v3) with
    its level at ``path``: scale = voxel size (nm), translation = offset × voxel size (nm)."""
    spatial = [{"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"]
    lead = [{"name": "c", "type": "channel"}] if axes == "czyx" else []
    scale = [1.0] * len(lead) + [float(v) for v in voxel_size]
    translation = [0.0] * len(lead) + [float(o) * float(v) for o, v in zip(offset, voxel_size, strict=True)]
    multiscale: dict[str, Any] = {
        "name": name,
        "axes": lead + spatial,
        "datasets": [{"path": path, "coordinateTransformations": [
            {"type": "scale", "scale": scale}, {"type": "translation", "translation": translation}]}],
    }
    if zarr_format == 2:
        return {"multiscales": [{"version": "0.4", **multiscale}]}
    return {"ome": {"version": "0.5", "multiscales": [multiscale]}}
