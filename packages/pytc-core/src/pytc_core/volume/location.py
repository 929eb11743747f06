"""Volume URIs: which format a URI names and where its data lives.

``file://`` URIs are percent-decoded (``file:///data/my%20run/seg`` is ``/data/my run/seg``);
plain paths are taken as written (``~`` expanded).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from pytc_core.errors import UserError

__all__ = ["REMOTE_PREFIXES", "VolumeLocation", "local_path", "mip_uri", "parse_uri",
           "split_mip", "split_zarr_path"]

#: URI prefixes of remote precomputed layers (read through CloudVolume)
REMOTE_PREFIXES = ("gs://", "s3://", "http://", "https://", "matrix://", "tigerdata://")

#: ``layer@mip=N``: scale N of a precomputed layer (an ``@mip=N`` suffix; nothing else
#: in a layer path ends that way)
_MIP = re.compile(r"^(?P<layer>.+)@mip=(?P<mip>[0-9]+)/?$")
_H5 = re.compile(r"^(?P<path>.*\.(?:h5|hdf5|hdf))(?::(?P<dataset>.*))?$", re.IGNORECASE)


@dataclass(frozen=True)
class VolumeLocation:
    """A parsed URI: the format and where the data lives."""

    format: str  # precomputed, hdf5, zarr, tiff, npy
    uri: str
    path: Path | None = None  # local file/dir (root of a zarr store); None for remote layers
    inner: str = ""  # HDF5 dataset or zarr array/group path inside the store
    mip: int = 0  # precomputed scale (``layer@mip=N``); 0 for every other format


def local_path(uri: str) -> str:
    """The local path a non-remote URI names: ``file://`` stripped and percent-decoded, ``~``
    expanded."""
    if uri.startswith("precomputed://"):
        uri = uri[len("precomputed://"):]
    if uri.startswith("file://"):
        uri = unquote(uri[len("file://"):])
        if uri.startswith("localhost/"):
            uri = uri[len("localhost"):]
    return os.path.expanduser(uri)


def split_zarr_path(path: str) -> tuple[Path, str]:
    """``a/b.zarr/c/d`` → (``a/b.zarr``, ``c/d``)."""
    parts = Path(path).parts
    for i, part in enumerate(parts):
        if part.endswith(".zarr"):
            return Path(*parts[: i + 1]), "/".join(parts[i + 1:])
    raise ValueError(f"not a zarr path: {path}")


def split_mip(uri: str) -> tuple[str, int | None]:
    """``layer@mip=N`` → (``layer``, N); any other URI → (uri, None)."""
    m = _MIP.match(uri.strip())
    return (m.group("layer"), int(m.group("mip"))) if m else (uri, None)


def mip_uri(layer_uri: str, mip: int) -> str:
    """The URI of scale ``mip`` of the precomputed layer ``layer_uri`` (``layer@mip=N``;
    mip 0 is the layer's own URI)."""
    base = split_mip(layer_uri)[0].rstrip("/")
    return base if mip == 0 else f"{base}@mip={int(mip)}"


def parse_uri(uri: str) -> VolumeLocation:
    """Work out a URI's format from its form (see :mod:`pytc_core.volume`)."""
    if not isinstance(uri, str) or not uri.strip():
        raise UserError("empty volume URI", "pass a path or URI")
    uri = uri.strip()
    base, mip = split_mip(uri)
    if mip is not None:
        loc = parse_uri(base)
        if loc.format != "precomputed":
            raise UserError(f"{uri}: @mip= names a scale of a precomputed layer, and "
                            f"{base} is {loc.format}",
                            "name an OME-Zarr level by its path (x.zarr/1), or drop @mip=")
        return VolumeLocation("precomputed", uri, loc.path, mip=mip)
    if uri.startswith(REMOTE_PREFIXES) or uri.startswith(tuple("precomputed://" + p for p in REMOTE_PREFIXES)):
        return VolumeLocation("precomputed", uri)
    plain = local_path(uri)
    if uri.startswith("precomputed://"):
        return VolumeLocation("precomputed", uri, Path(plain))
    m = _H5.match(plain)
    if m:
        return VolumeLocation("hdf5", uri, Path(m.group("path")), (m.group("dataset") or "").strip("/"))
    if ".zarr" in plain and any(p.endswith(".zarr") for p in Path(plain).parts):
        root, inner = split_zarr_path(plain.replace(".zarr:", ".zarr/"))
        return VolumeLocation("zarr", uri, root, inner)
    lower = plain.lower()
    if lower.endswith((".tif", ".tiff")):
        return VolumeLocation("tiff", uri, Path(plain))
    if lower.endswith(".npy"):
        return VolumeLocation("npy", uri, Path(plain))
    return VolumeLocation("precomputed", uri, Path(plain))
