"""TIFF stacks (``.tif``/``.tiff``): one page per z slice (per channel and z for 4D).

pytc writes uncompressed TIFFs through ``tifffile.memmap`` so blocks can be written in place;
axes, voxel size and offset go into tifffile's JSON shaped metadata. TIFFs from elsewhere
(compressed, ImageJ) are read whole on first access.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pytc_core.bbox import BBox
from pytc_core.errors import UserError
from pytc_core.volume.base import Volume
from pytc_core.volume.metadata import metadata_from_attrs

__all__ = ["TiffVolume", "create_tiff"]


class TiffVolume(Volume):
    format = "tiff"

    def __init__(self, uri: str, path: Path) -> None:
        import tifffile

        self.uri, self.path = uri, path
        if not path.exists():
            raise UserError(f"no such file: {path}", "check the path")
        try:
            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                shape = tuple(int(s) for s in series.shape)
                dtype = np.dtype(series.dtype)
                attrs = dict(tif.shaped_metadata[0]) if tif.shaped_metadata else {}
        except (tifffile.TiffFileError, ValueError, OSError) as exc:
            raise UserError(f"cannot read {path} as TIFF ({exc})", "check that the file is a TIFF stack") from None
        attrs.pop("shape", None)
        if isinstance(attrs.get("axes"), str) and attrs["axes"].upper() in ("ZYX", "CZYX"):
            attrs["axes"] = attrs["axes"].lower()
        elif "axes" in attrs and not isinstance(attrs.get("voxel_size"), list):
            attrs.pop("axes")  # tifffile's own axes codes (e.g. 'QYX'), not pytc's
        self.shape, self.dtype = shape, dtype
        meta = metadata_from_attrs(attrs, shape, uri)
        self.voxel_size, self.offset = meta["voxel_size"], meta["offset"]
        self.chunk_size = (1, *shape[-2:])
        self._data = None

    def _array(self, writable: bool = False) -> np.ndarray:
        import tifffile

        if writable:
            return tifffile.memmap(self.path, mode="r+")
        if self._data is None:
            try:
                self._data = tifffile.memmap(self.path, mode="r")
            except ValueError:  # compressed or not contiguous: read it whole
                self._data = tifffile.imread(self.path)
            self._data = self._data.reshape(self.shape)
        return self._data

    def _read(self, bbox: BBox) -> np.ndarray:
        return np.array(self._array()[self.array_index(bbox)])

    def _write(self, array: np.ndarray, bbox: BBox) -> None:
        mm = self._array(writable=True).reshape(self.shape)
        mm[self.array_index(bbox)] = array
        mm.flush()
        del mm
        self._data = None


def create_tiff(uri: str, path: Path, shape, dtype, meta: dict) -> TiffVolume:
    import tifffile

    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"axes": meta["axes"].upper(), "voxel_size": meta["voxel_size"], "offset": meta["offset"]}
    mm = tifffile.memmap(path, shape=tuple(shape), dtype=dtype, photometric="minisblack",
                         metadata=metadata, bigtiff=True)
    mm.flush()
    del mm
    return TiffVolume(uri, path)
