"""HDF5 datasets, ``file.h5:dataset`` (also .hdf5/.hdf), metadata in dataset attributes.

Attributes written and read: see :mod:`pytc_core.volume.metadata` (pytc's own keys plus the
funlib/CREMI ``resolution`` and ``offset`` in nm).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from pytc_core.bbox import BBox
from pytc_core.errors import UserError
from pytc_core.volume.base import FormatBackend, Volume, VolumeSpec
from pytc_core.volume.file_lock import file_lock
from pytc_core.volume.location import VolumeLocation
from pytc_core.volume.metadata import metadata_attrs, metadata_from_attrs

__all__ = ["BACKEND", "Hdf5Volume", "list_datasets"]


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:160]


def list_datasets(path: Path) -> list[str]:
    """Every dataset name in an HDF5 file."""
    import h5py  # heavy: only when an HDF5 file is used

    names: list[str] = []
    with _open_file(path) as fh:
        fh.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    return names


@contextlib.contextmanager
def _open_file(path: Path, mode: str = "r") -> Iterator[Any]:
    """The open file, holding its lock (:func:`pytc_core.volume.file_lock.file_lock`) until
    it is closed: reads and writes of one file in this process never overlap."""
    import h5py  # heavy: only when an HDF5 file is used

    with file_lock(path):
        try:
            fh = h5py.File(path, mode)
        except OSError as exc:
            raise UserError(f"cannot open {path} as HDF5 ({_short(exc)})",
                            "check that the file is a complete HDF5 file") from None
        with fh:
            yield fh


class Hdf5Volume(Volume):
    """One dataset of an HDF5 file, opened per read/write under the file's lock: the threads
    of one process read and write one file in turn. Not safe for several processes writing
    one file (pytc refuses ``--blocks`` shares with an HDF5 output)."""

    format = "hdf5"

    def __init__(self, uri: str, path: Path, dataset: str | None) -> None:
        import h5py  # heavy: only when an HDF5 file is used

        self.uri, self.path, self.dataset = uri, path, dataset
        if not path.exists():
            raise UserError(f"no such file: {path}", "check the path")
        if dataset is None:
            names = list_datasets(path)
            raise UserError(f"{uri} names an HDF5 file but no dataset",
                            f"write it as {path}:DATASET; datasets here: {', '.join(names) or 'none'}")
        with _open_file(path) as fh:
            if dataset not in fh or not isinstance(fh[dataset], h5py.Dataset):
                names = list_datasets(path)
                raise UserError(f"dataset '{dataset}' not found in {path}",
                                f"datasets here: {', '.join(names) or 'none'}")
            ds = fh[dataset]
            self.shape = tuple(int(s) for s in ds.shape)
            self.dtype = np.dtype(ds.dtype)
            attrs = dict(ds.attrs)
            chunks = ds.chunks
        meta = metadata_from_attrs(attrs, self.shape, uri)
        self.voxel_size, self.offset = meta["voxel_size"], meta["offset"]
        self.chunk_size = tuple(chunks[-3:]) if chunks else self.spatial_shape

    def _read(self, bbox: BBox) -> np.ndarray:
        with _open_file(self.path) as fh:
            try:
                return np.asarray(fh[self.dataset][self.array_index(bbox)])
            except (OSError, ValueError) as exc:  # a chunk that does not decode
                raise UserError(f"cannot read {bbox} of {self.uri}: the file is damaged ({_short(exc)})",
                                "recreate or restore the file") from None

    def _write(self, array: np.ndarray, bbox: BBox) -> None:
        with _open_file(self.path, "r+") as fh:
            fh[self.dataset][self.array_index(bbox)] = array


def _open(loc: VolumeLocation, fill_missing: bool = False) -> Hdf5Volume:
    assert loc.path is not None
    return Hdf5Volume(loc.uri, loc.path, loc.inner or None)


def _exists(loc: VolumeLocation) -> bool:
    assert loc.path is not None
    if not loc.inner or not loc.path.exists():
        return loc.path.exists()
    with _open_file(loc.path) as fh:
        return loc.inner in fh


def _delete(loc: VolumeLocation) -> None:
    """Delete one dataset, never the whole file."""
    assert loc.path is not None
    if not loc.inner:
        raise UserError(f"{loc.uri} names an HDF5 file but no dataset", f"name it as {loc.path}:DATASET")
    with _open_file(loc.path, "a") as fh:
        if loc.inner in fh:
            del fh[loc.inner]


def _create(loc: VolumeLocation, spec: VolumeSpec) -> Hdf5Volume:
    assert loc.path is not None
    if not loc.inner:
        raise UserError(f"{loc.uri} names an HDF5 file but no dataset", f"write it as {loc.path}:DATASET")
    loc.path.parent.mkdir(parents=True, exist_ok=True)
    with _open_file(loc.path, "a") as fh:
        ds = fh.create_dataset(loc.inner, shape=spec.shape, dtype=spec.dtype, chunks=spec.storage_chunks(),
                               compression="gzip", compression_opts=1)
        for k, v in metadata_attrs(spec.axes, spec.voxel_size, spec.offset).items():
            ds.attrs[k] = v
    return Hdf5Volume(loc.uri, loc.path, loc.inner)


def _sidecar(loc: VolumeLocation, name: str) -> Path:
    assert loc.path is not None
    dataset = loc.inner.replace("/", "_")
    return loc.path.with_name(f"{loc.path.name}.{dataset}.{name}")


BACKEND = FormatBackend("hdf5", _open, _create, _exists, _delete, _sidecar)
