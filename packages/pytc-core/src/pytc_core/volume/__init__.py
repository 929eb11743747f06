"""Volumes by URI: one interface over precomputed, HDF5, zarr, TIFF and .npy.

URI forms (axes always (z, y, x), channels first):

- ``path/to/layer``, ``file:///abs/layer``, ``gs://bucket/layer``, ``s3://...`` — a Neuroglancer
  precomputed layer via CloudVolume (the default output format; chunked and resumable)
- ``file.h5:dataset`` (also ``.hdf5``, ``.hdf``) — an HDF5 dataset
- ``x.zarr`` or ``x.zarr/path/in/store`` — a zarr v2 or v3 array, or an OME-Zarr image group
  (its level 0; ``x.zarr/1`` for level 1)
- ``x.tif`` / ``x.tiff`` — a TIFF stack
- ``x.npy`` — a NumPy array (metadata in ``x.npy.json``)

``file://`` URIs are percent-decoded. Each format is one backend module (open, create, exists,
delete, sidecar placement) listed in ``BACKENDS``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pytc_core.errors import UserError
from pytc_core.volume.backends import BACKENDS, backend, sidecar_path
from pytc_core.volume.base import (
    FormatBackend,
    Volume,
    VolumeSpec,
    require_channels,
    require_finite,
    require_integer_labels,
)
from pytc_core.volume.location import VolumeLocation, parse_uri
from pytc_core.volume.metadata import check_ndim
from pytc_core.volume.stored import check_creatable, inspect_output, remove_volume

__all__ = [
    "BACKENDS",
    "FormatBackend",
    "Volume",
    "VolumeLocation",
    "VolumeSpec",
    "backend",
    "create_volume",
    "delete_volume",
    "open_volume",
    "parse_uri",
    "require_channels",
    "require_finite",
    "require_integer_labels",
    "sidecar_path",
    "volume_exists",
]


def open_volume(uri: str, *, fill_missing: bool = False) -> Volume:
    """Open the volume at ``uri`` lazily (metadata only; data is read by ``.read(bbox)``).

    I/O only: whether the volume is a finished pytc output is not checked here; a stage
    opens its inputs with :func:`pytc_core.open_volume` (:func:`pytc_core.output_run.open_input`),
    which refuses an unfinished one. Raises UserError for a missing file, a missing dataset,
    a corrupt layer, and data that is not 3D (Z, Y, X) / 4D (C, Z, Y, X). A missing chunk of
    a precomputed layer is a UserError when read, unless ``fill_missing`` (layers sparse on
    purpose: missing chunks read as zeros).
    """
    loc = parse_uri(uri)
    vol = backend(loc.format).open(loc, fill_missing)
    check_ndim(vol.shape, uri)
    return vol


def volume_exists(uri: str) -> bool:
    """Whether a volume (or anything else) is at ``uri``; pytc's own lease, run record or
    scratch files alone do not count (see :func:`pytc_core.volume.stored.inspect_output`)."""
    return inspect_output(uri).kind != "absent"


def delete_volume(uri: str) -> None:
    """Delete the volume at ``uri`` with pytc's files about it (nothing happens if it is
    absent); only a volume pytc recognises, else UserError
    (:func:`pytc_core.volume.stored.remove_volume`)."""
    remove_volume(uri)


def _default_chunk(shape: Sequence[int]) -> tuple[int, int, int]:
    return tuple(min(64, int(s)) for s in shape[-3:])  # type: ignore[return-value]


def create_volume(
    uri: str,
    shape: Sequence[int],
    dtype: np.dtype | str | type,
    *,
    voxel_size: Sequence[float] = (1.0, 1.0, 1.0),
    offset: Sequence[int] = (0, 0, 0),
    chunk_size: Sequence[int] | None = None,
    layer_type: str = "image",
    overwrite: bool = False,
    exist_ok: bool = False,
    compress: str | None = "auto",
    zarr_format: int = 3,
) -> Volume:
    """Create an empty volume at ``uri`` and return it open for writing.

    ``shape`` is (Z, Y, X) or channels-first (C, Z, Y, X); ``voxel_size`` in nm and ``offset``
    in voxels, both (z, y, x); ``chunk_size`` (z, y, x) voxels (default 64³ capped by the
    shape). ``layer_type`` is ``image`` or ``segmentation`` (precomputed). An existing output
    is a UserError unless ``overwrite`` (delete and recreate) or ``exist_ok`` (reopen it when
    shape and dtype match, to resume an interrupted run). ``compress``: ``auto`` gzips integer
    precomputed layers and leaves float ones raw; ``gzip`` or None force it.
    """
    loc = parse_uri(uri)
    shape = tuple(int(s) for s in shape)
    check_ndim(shape, uri)
    if any(s <= 0 for s in shape):
        raise UserError(f"cannot create {uri} with shape {shape}", "every dimension must be positive")
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        dtype = np.dtype(np.uint8)
    if layer_type not in ("image", "segmentation"):
        raise UserError(f"unknown layer type '{layer_type}'", "use image or segmentation")
    voxel = tuple(float(v) for v in voxel_size)
    if len(voxel) != 3 or any(not np.isfinite(v) or v <= 0 for v in voxel):
        raise UserError(f"bad voxel size {tuple(voxel_size)}", "give 3 positive numbers in nm (z, y, x)")
    off = tuple(int(v) for v in offset)
    chunks = tuple(int(c) for c in (chunk_size or _default_chunk(shape)))
    if len(chunks) != 3 or any(c <= 0 for c in chunks):
        raise UserError(f"bad chunk size {chunk_size}", "give 3 positive voxel counts (z, y, x)")
    check_creatable(uri)
    state = inspect_output(uri)
    if state.kind == "foreign":
        raise UserError(f"output {uri} is not a volume pytc can replace: {state.what}",
                        "choose another output; pytc never deletes files it did not write")
    if state.kind == "volume":
        if overwrite:
            remove_volume(uri)
        elif exist_ok:
            vol = open_volume(uri, fill_missing=True)  # its writer's view
            if vol.shape != shape or vol.dtype != dtype:
                raise UserError(f"{uri} exists with shape {vol.shape} {vol.dtype}, not {shape} {dtype}",
                                "pass --overwrite to replace it, or choose another output")
            return vol
        else:
            raise UserError(f"output {uri} already exists", "pass --overwrite to replace it, or choose another output")
    spec = VolumeSpec(shape, dtype, voxel, off, chunks, layer_type, compress, zarr_format)  # type: ignore[arg-type]
    return backend(loc.format).create(loc, spec)
