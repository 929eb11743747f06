"""Zarr arrays (format 2 and 3): ``x.zarr`` (root array) or ``x.zarr/path/to/array``.

Metadata lives in the array attributes (``axes``, ``voxel_size`` nm, ``offset`` voxels); v3
arrays also carry ``dimension_names``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pytc_core.bbox import BBox
from pytc_core.errors import UserError
from pytc_core.volume.base import Volume
from pytc_core.volume.metadata import metadata_from_attrs

__all__ = ["ZarrVolume", "create_zarr", "split_zarr_path"]


def split_zarr_path(path: str) -> tuple[Path, str]:
    """``a/b.zarr/c/d`` → (``a/b.zarr``, ``c/d``)."""
    parts = Path(path).parts
    for i, part in enumerate(parts):
        if part.endswith(".zarr"):
            return Path(*parts[: i + 1]), "/".join(parts[i + 1:])
    raise ValueError(f"not a zarr path: {path}")


def _list_arrays(root: Path) -> list[str]:
    import zarr

    try:
        group = zarr.open_group(str(root), mode="r")
    except Exception:
        return []
    return sorted(name for name, _ in group.arrays())


class ZarrVolume(Volume):
    format = "zarr"

    def __init__(self, uri: str, root: Path, inner: str) -> None:
        import zarr

        self.uri, self.root, self.inner = uri, root, inner
        if not root.exists():
            raise UserError(f"no such zarr store: {root}", "check the path")
        try:
            self.array = zarr.open_array(str(root), path=inner, mode="r+")
        except Exception:
            arrays = _list_arrays(root)
            raise UserError(f"no zarr array at {uri}",
                            f"arrays in {root}: {', '.join(arrays)}" if arrays
                            else "check the path; the store holds no arrays") from None
        self.shape = tuple(int(s) for s in self.array.shape)
        self.dtype = np.dtype(self.array.dtype)
        meta = metadata_from_attrs(dict(self.array.attrs), self.shape, uri)
        self.voxel_size, self.offset = meta["voxel_size"], meta["offset"]
        self.chunk_size = tuple(int(c) for c in self.array.chunks[-3:])

    def _read(self, bbox: BBox) -> np.ndarray:
        return np.asarray(self.array[self.array_index(bbox)])

    def _write(self, array: np.ndarray, bbox: BBox) -> None:
        self.array[self.array_index(bbox)] = array


def create_zarr(uri: str, root: Path, inner: str, shape, dtype, meta: dict, chunk_size,
                zarr_format: int = 3) -> ZarrVolume:
    import zarr

    if zarr_format not in (2, 3):
        raise UserError(f"zarr format {zarr_format} is not supported", "use 2 or 3")
    chunks = tuple(min(c, s) for c, s in zip(chunk_size, shape[-3:], strict=True))
    if len(shape) == 4:
        chunks = (1, *chunks)
    kwargs = {}
    if zarr_format == 3:
        kwargs["dimension_names"] = list(meta["axes"])
    if inner:
        group = zarr.open_group(str(root), mode="a", zarr_format=zarr_format)
        group.create_array(inner, shape=tuple(shape), dtype=dtype, chunks=chunks,
                           attributes=meta, **kwargs)
    else:
        zarr.create_array(str(root), shape=tuple(shape), dtype=dtype, chunks=chunks,
                          attributes=meta, zarr_format=zarr_format, **kwargs)
    return ZarrVolume(uri, root, inner)
