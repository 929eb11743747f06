"""What identifies a volume's data, from its metadata and a few sampled chunks.

A resumable run stores the identity of its inputs and refuses to continue on another input.
Walking every file of a layer (millions of ``stat`` calls on Lustre/GPFS per array task) is
too slow, and a walk sees a mip added to the layer mid-run as a change. The identity is
instead:

- the volume's geometry: URI (a local path resolved), shape, dtype, voxel size (nm, z y x),
  offset and chunk size (voxels, z y x);
- the metadata of the array read, and only of it: a precomputed layer's ``info`` without its
  other scales (adding a mip changes nothing), a zarr array's own metadata files, an HDF5
  dataset's attributes, chunks and compression, a TIFF or ``.npy`` file's size and
  modification time (ns);
- a hash of the decoded data of :data:`SAMPLES` storage chunks at fixed positions spread over
  the chunk grid (each sample is at most 64³ voxels of its chunk), so rewriting a sampled
  chunk changes the identity; a missing chunk hashes as ``missing``.

A rewrite of a chunk that is not sampled is not seen: the cost of seeing every rewrite is the
walk this replaces. Remote layers are identified the same way (one metadata read and
:data:`SAMPLES` chunk reads).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

from pytc_core.bbox import BBox
from pytc_core.errors import UserError
from pytc_core.volume.base import Volume
from pytc_core.volume.file_lock import file_lock
from pytc_core.volume.location import parse_uri

__all__ = ["SAMPLES", "sample_boxes", "volume_identity"]

#: chunks sampled per volume
SAMPLES = 8
#: largest sampled box per axis (voxels): an unchunked HDF5 dataset's "chunk" is the volume
_MAX_SAMPLE = 64


def sample_boxes(volume: Volume, samples: int = SAMPLES) -> list[BBox]:
    """The boxes (global voxels, z y x) hashed into the identity: the first ≤ 64³ voxels of
    ``samples`` chunks at evenly spaced positions of the chunk grid (C order), first and last
    chunk included."""
    grid = [-(-s // c) for s, c in zip(volume.spatial_shape, volume.chunk_size, strict=True)]
    total = int(np.prod(grid))
    flat = np.unique(np.linspace(0, total - 1, min(samples, total)).round().astype(np.int64))
    boxes = []
    for index in flat:
        pos = np.unravel_index(int(index), grid)
        start = tuple(int(o + p * c) for o, p, c in
                      zip(volume.offset, pos, volume.chunk_size, strict=True))
        stop = tuple(min(a + min(c, _MAX_SAMPLE), e) for a, c, e in
                     zip(start, volume.chunk_size, volume.bbox.stop, strict=True))
        boxes.append(BBox(start, stop))
    return boxes


def _metadata(volume: Volume) -> Any:
    """The stored metadata of the array ``volume`` reads (see the module docstring)."""
    loc = parse_uri(volume.uri)
    if volume.format == "precomputed":
        info = dict(getattr(volume, "info", {}))
        key = getattr(volume, "key", None)
        info["scales"] = [s for s in info.get("scales", []) if s.get("key") == key]
        return info
    if volume.format == "zarr":
        array = getattr(volume, "array", None)
        if array is None:
            return None
        meta = getattr(array, "metadata", None)
        try:
            text = json.dumps(meta.to_dict(), sort_keys=True, default=str)  # type: ignore[union-attr]
        except Exception:  # zarr versions differ in what metadata offers
            text = repr(meta)
        return {"array": text, "attrs": json.dumps(dict(array.attrs), sort_keys=True, default=str)}
    if volume.format == "hdf5" and loc.path is not None:
        import h5py  # heavy: only for HDF5 inputs

        with file_lock(loc.path), h5py.File(loc.path, "r") as f:
            ds = f[loc.inner]
            attrs = {k: np.asarray(v).tolist() for k, v in ds.attrs.items()}
            return {"attrs": json.dumps(attrs, sort_keys=True, default=str),
                    "chunks": list(ds.chunks or ()), "compression": str(ds.compression)}
    if loc.path is not None and loc.path.is_file():
        st = loc.path.stat()
        return {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns}
    return None


def _sample_hash(volume: Volume, box: BBox) -> str:
    try:
        data = np.ascontiguousarray(volume.read(box))
    except UserError:  # a missing chunk of a sparse layer
        return "missing"
    return hashlib.blake2b(data.tobytes(), digest_size=16).hexdigest()


def volume_identity(volume: Volume, samples: int = SAMPLES) -> dict[str, Any]:
    """The identity of ``volume``'s data as a JSON-able dict (see the module docstring)."""
    loc = parse_uri(volume.uri)
    uri = volume.uri
    if loc.path is not None and loc.path.exists():
        uri = str(loc.path.resolve()) + (f":{loc.inner}" if loc.inner and loc.format == "hdf5"
                                         else f"/{loc.inner}" if loc.inner else "")
    return {
        "uri": uri, "shape": list(volume.shape), "dtype": str(volume.dtype),
        "voxel_size": [float(v) for v in volume.voxel_size],
        "offset": [int(v) for v in volume.offset],
        "chunk_size": [int(v) for v in volume.chunk_size],
        "metadata": _metadata(volume),
        "samples": {"_".join(map(str, b.start)): _sample_hash(volume, b)
                    for b in sample_boxes(volume, samples)},
    }
