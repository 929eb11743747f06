"""NumPy ``.npy`` files (memory-mapped) with a JSON sidecar ``x.npy.json`` for the metadata."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np

from pytc_core.bbox import BBox
from pytc_core.errors import UserError
from pytc_core.files import write_atomic
from pytc_core.volume.base import FormatBackend, Volume, VolumeSpec, file_exists, file_sidecar
from pytc_core.volume.file_lock import file_lock
from pytc_core.volume.location import VolumeLocation
from pytc_core.volume.metadata import metadata_attrs, metadata_from_attrs

__all__ = ["BACKEND", "NpyVolume", "npy_sidecar"]


def npy_sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _load(path: Path, mode: Literal["r", "r+"] = "r") -> np.memmap:
    """The .npy file memory-mapped; UserError for an empty, truncated or non-.npy file."""
    try:
        return np.load(path, mmap_mode=mode, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        size = path.stat().st_size if path.exists() else 0
        why = " ".join(str(exc).split())[:160]
        if size == 0:
            why = "it is empty"
        elif "mmap length is greater than file size" in why:
            why = "it is truncated: shorter than its header says"
        raise UserError(f"cannot read {path} as .npy ({why})",
                        "check that the file is a complete NumPy array (np.save)") from None


class NpyVolume(Volume):
    format = "npy"

    def __init__(self, uri: str, path: Path) -> None:
        self.uri, self.path = uri, path
        if not path.exists():
            raise UserError(f"no such file: {path}", "check the path")
        arr = _load(path)
        attrs = {}
        sidecar = npy_sidecar(path)
        if sidecar.exists():
            try:
                attrs = json.loads(sidecar.read_text())
            except ValueError as exc:
                raise UserError(f"{sidecar} is not valid JSON ({exc})", "fix or delete the sidecar") from None
            if not isinstance(attrs, dict):
                raise UserError(f"{sidecar} is not a JSON object", "fix or delete the sidecar")
        self.shape, self.dtype = tuple(int(s) for s in arr.shape), np.dtype(arr.dtype)
        meta = metadata_from_attrs(attrs, self.shape, uri)
        self.voxel_size, self.offset = meta["voxel_size"], meta["offset"]
        self.chunk_size = self.spatial_shape

    def _read(self, bbox: BBox) -> np.ndarray:
        with file_lock(self.path):  # one file: reads and writes of this process in turn
            return np.array(_load(self.path)[self.array_index(bbox)])

    def _write(self, array: np.ndarray, bbox: BBox) -> None:
        with file_lock(self.path):
            mm = _load(self.path, "r+")
            mm[self.array_index(bbox)] = array
            mm.flush()
            del mm


def _open(loc: VolumeLocation, fill_missing: bool = False) -> NpyVolume:
    assert loc.path is not None
    return NpyVolume(loc.uri, loc.path)


def _delete(loc: VolumeLocation) -> None:
    assert loc.path is not None
    with file_lock(loc.path):
        loc.path.unlink()
        npy_sidecar(loc.path).unlink(missing_ok=True)


def _create(loc: VolumeLocation, spec: VolumeSpec) -> NpyVolume:
    assert loc.path is not None
    loc.path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(loc.path):
        mm = np.lib.format.open_memmap(loc.path, mode="w+", dtype=spec.dtype, shape=spec.shape)
        mm.flush()
        del mm
    attrs = metadata_attrs(spec.axes, spec.voxel_size, spec.offset)
    write_atomic(npy_sidecar(loc.path), json.dumps(attrs, indent=2).encode())
    return NpyVolume(loc.uri, loc.path)


BACKEND = FormatBackend("npy", _open, _create, file_exists, _delete, file_sidecar)
