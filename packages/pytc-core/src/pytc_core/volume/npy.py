"""NumPy ``.npy`` files (memory-mapped) with a JSON sidecar ``x.npy.json`` for the metadata."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pytc_core.bbox import BBox
from pytc_core.errors import UserError
from pytc_core.volume.base import Volume
from pytc_core.volume.metadata import metadata_from_attrs

__all__ = ["NpyVolume", "create_npy", "npy_sidecar"]


def npy_sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


class NpyVolume(Volume):
    format = "npy"

    def __init__(self, uri: str, path: Path) -> None:
        self.uri, self.path = uri, path
        if not path.exists():
            raise UserError(f"no such file: {path}", "check the path")
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise UserError(f"cannot read {path} as .npy ({exc})", "check that the file is a NumPy array") from None
        attrs = {}
        sidecar = npy_sidecar(path)
        if sidecar.exists():
            try:
                attrs = json.loads(sidecar.read_text())
            except ValueError as exc:
                raise UserError(f"{sidecar} is not valid JSON ({exc})", "fix or delete the sidecar") from None
        self.shape, self.dtype = tuple(int(s) for s in arr.shape), np.dtype(arr.dtype)
        meta = metadata_from_attrs(attrs, self.shape, uri)
        self.voxel_size, self.offset = meta["voxel_size"], meta["offset"]
        self.chunk_size = self.spatial_shape

    def _read(self, bbox: BBox) -> np.ndarray:
        return np.array(np.load(self.path, mmap_mode="r")[self.array_index(bbox)])

    def _write(self, array: np.ndarray, bbox: BBox) -> None:
        mm = np.load(self.path, mmap_mode="r+")
        mm[self.array_index(bbox)] = array
        mm.flush()
        del mm


def create_npy(uri: str, path: Path, shape, dtype, meta: dict) -> NpyVolume:
    path.parent.mkdir(parents=True, exist_ok=True)
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=tuple(shape))
    mm.flush()
    del mm
    npy_sidecar(path).write_text(json.dumps(meta, indent=2))
    return NpyVolume(uri, path)
