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

__all__ = ["REMOTE_PREFIXES", "VolumeLocation", "local_path", "parse_uri", "split_zarr_path"]

#: URI prefixes of remote precomputed layers (read through CloudVolume)
REMOTE_PREFIXES = ("gs://", "s3://", "http://", "https://", "matrix://", "tigerdata://")

_H5 = re.compile(r"^(?P<path>.*\.(?:h5|hdf5|hdf))(?::(?P<dataset>.*))?$", re.IGNORECASE)


@dataclass(frozen=True)
class VolumeLocation:
    """A parsed URI: the format and where the data lives."""

    format: str  # precomputed, hdf5, zarr, tiff, npy
    uri: str
    path: Path | None = None  # local file/dir (root of a zarr store); None for remote layers
    inner: str = ""  # HDF5 dataset or zarr array/group path inside the store


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


def parse_uri(uri: str) -> VolumeLocation:
    """Work out a URI's format from its form (see :mod:`pytc_core.volume`)."""
    if not isinstance(uri, str) or not uri.strip():
        raise UserError("empty volume URI", "pass a path or URI")
    uri = uri.strip()
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
