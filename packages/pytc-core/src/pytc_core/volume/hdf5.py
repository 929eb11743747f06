"""HDF5 datasets, ``file.h5:dataset`` (also .hdf5/.hdf), metadata in dataset attributes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pytc_core.bbox import BBox
from pytc_core.errors import UserError
from pytc_core.volume.base import Volume
from pytc_core.volume.metadata import metadata_from_attrs

__all__ = ["Hdf5Volume", "create_hdf5", "list_datasets"]


def list_datasets(path: Path) -> list[str]:
    """Every dataset name in an HDF5 file."""
    import h5py

    names: list[str] = []
    with h5py.File(path, "r") as fh:
        fh.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    return names


def _open_file(path: Path, mode: str = "r"):
    import h5py

    try:
        return h5py.File(path, mode)
    except OSError as exc:
        raise UserError(f"cannot open {path} as HDF5 ({' '.join(str(exc).split())[:120]})",
                        "check that the file is a complete HDF5 file") from None


class Hdf5Volume(Volume):
    """One dataset of an HDF5 file, opened per read/write (safe across processes)."""

    format = "hdf5"

    def __init__(self, uri: str, path: Path, dataset: str | None) -> None:
        self.uri, self.path, self.dataset = uri, path, dataset
        if not path.exists():
            raise UserError(f"no such file: {path}", "check the path")
        if dataset is None:
            names = list_datasets(path)
            raise UserError(f"{uri} names an HDF5 file but no dataset",
                            f"write it as {path}:DATASET; datasets here: {', '.join(names) or 'none'}")
        with _open_file(path) as fh:
            if dataset not in fh or not hasattr(fh[dataset], "shape"):
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
            return np.asarray(fh[self.dataset][self.array_index(bbox)])

    def _write(self, array: np.ndarray, bbox: BBox) -> None:
        with _open_file(self.path, "r+") as fh:
            fh[self.dataset][self.array_index(bbox)] = array


def dataset_exists(path: Path, dataset: str) -> bool:
    if not path.exists():
        return False
    with _open_file(path) as fh:
        return dataset in fh


def delete_dataset(path: Path, dataset: str) -> None:
    with _open_file(path, "a") as fh:
        if dataset in fh:
            del fh[dataset]


def create_hdf5(uri: str, path: Path, dataset: str, shape, dtype, meta: dict, chunk_size) -> Hdf5Volume:
    path.parent.mkdir(parents=True, exist_ok=True)
    chunks = tuple(min(c, s) for c, s in zip(chunk_size, shape[-3:], strict=True))
    if len(shape) == 4:
        chunks = (1, *chunks)
    with _open_file(path, "a") as fh:
        ds = fh.create_dataset(dataset, shape=tuple(shape), dtype=dtype, chunks=chunks,
                               compression="gzip", compression_opts=1)
        for k, v in meta.items():
            ds.attrs[k] = v
    return Hdf5Volume(uri, path, dataset)
