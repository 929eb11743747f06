"""Zarr arrays (format 2 and 3) and OME-Zarr images: ``x.zarr`` or ``x.zarr/path/in/store``.

A URI naming an OME-Zarr image group opens its level 0; naming a level's array
(``x.zarr/1``) opens that level, with the voxel size and offset of the group's multiscales
(NGFF 0.4 or 0.5, see :mod:`pytc_core.volume.ngff`). Plain arrays take theirs from their
attributes (pytc's and funlib's keys, see :mod:`pytc_core.volume.metadata`).

pytc writes an OME-Zarr image: a group at the URI (NGFF 0.4 for zarr v2, 0.5 for v3) holding
its array at ``0``, which carries pytc's and funlib's attributes (and ``dimension_names`` in
v3), so napari, Neuroglancer, Fiji and funlib read the voxel size and offset.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from pytc_core.bbox import BBox
from pytc_core.errors import UserError
from pytc_core.volume.base import FormatBackend, Volume, VolumeSpec
from pytc_core.volume.location import VolumeLocation, split_zarr_path
from pytc_core.volume.metadata import check_ndim, metadata_attrs, metadata_from_attrs
from pytc_core.volume.ngff import level_paths, ngff_attrs, ngff_level

__all__ = ["BACKEND", "ZarrVolume", "split_zarr_path"]

_METADATA_FILES = ("zarr.json", ".zarray", ".zgroup", ".zattrs")


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:160]


def _list_arrays(root: Path) -> list[str]:
    import zarr  # heavy: only when a zarr store is used

    try:
        group = zarr.open_group(str(root), mode="r")
        return sorted(name for name, _ in group.arrays())
    except Exception:
        return []


def _open_node(root: Path, inner: str, uri: str):
    """The zarr array or group at ``inner`` of the store ``root``."""
    import zarr  # heavy: only when a zarr store is used

    try:
        return zarr.open(str(root), path=inner, mode="r")
    except Exception as exc:
        target = root / inner if inner else root
        broken = [target / name for name in _METADATA_FILES if (target / name).is_file()]
        if broken:
            raise UserError(f"cannot read the zarr metadata of {uri} ({type(exc).__name__}: {_short(exc)})",
                            f"repair or recreate {broken[0]}") from None
        arrays = _list_arrays(root)
        raise UserError(f"no zarr array at {uri}",
                        f"arrays in {root}: {', '.join(arrays)}" if arrays
                        else "check the path; the store holds no arrays") from None


class ZarrVolume(Volume):
    format = "zarr"

    def __init__(self, uri: str, root: Path, inner: str) -> None:
        import zarr  # heavy: only when a zarr store is used

        self.uri, self.root = uri, root
        if not root.exists():
            raise UserError(f"no such zarr store: {root}", "check the path")
        node = _open_node(root, inner, uri)
        group_attrs, level_path = None, ""
        #: the OME-Zarr image group holding this array (path in the store), if any
        self.image_group: str | None = None
        if isinstance(node, zarr.Group):
            group_attrs = dict(node.attrs)
            paths = level_paths(group_attrs)
            if not paths:
                arrays = sorted(name for name, _ in node.arrays())
                raise UserError(f"{uri} is a zarr group, not an array or an OME-Zarr image",
                                f"name one of its arrays: {', '.join(arrays)}" if arrays
                                else "name an array inside it")
            level_path = paths[0]
            self.image_group = inner
            self.array_path = f"{inner}/{level_path}".strip("/")
            node = _open_node(root, self.array_path, uri)
            if not isinstance(node, zarr.Array):
                raise UserError(f"{uri}: OME-Zarr level '{level_path}' is not an array",
                                "fix the multiscales metadata")
        else:  # an array; a level of an OME-Zarr image when its parent group lists it
            self.array_path = inner
            parent, _, name = inner.rpartition("/")
            try:
                attrs = dict(zarr.open_group(str(root), path=parent, mode="r").attrs) if inner else {}
            except Exception:
                attrs = {}
            if name and name in level_paths(attrs):
                group_attrs, level_path = attrs, name
                self.image_group = parent
        self.array = node
        self.shape = tuple(int(s) for s in node.shape)
        self.dtype = np.dtype(node.dtype)
        if group_attrs is not None:
            check_ndim(self.shape, uri)
            level = ngff_level(group_attrs, len(self.shape), uri, path=level_path)
            assert level is not None
            self.voxel_size, self.offset = level.voxel_size, level.offset
            self.levels = [(str(root / self.image_group / p) if self.image_group
                            else str(root / p), lv.voxel_size)
                           for p in level_paths(group_attrs)
                           if (lv := ngff_level(group_attrs, len(self.shape), uri, path=p))]
        else:
            meta = metadata_from_attrs(dict(node.attrs), self.shape, uri)
            self.voxel_size, self.offset = meta["voxel_size"], meta["offset"]
        cz, cy, cx = (int(c) for c in node.chunks[-3:])
        self.chunk_size = (cz, cy, cx)
        self._writable: zarr.Array | None = None

    def _read(self, bbox: BBox) -> np.ndarray:
        try:
            return np.asarray(self.array[self.array_index(bbox)])
        except Exception as exc:  # codecs raise many types for a chunk that does not decode
            raise UserError(f"cannot read {bbox} of {self.uri}: a chunk does not decode "
                            f"({type(exc).__name__}: {_short(exc)})", "recreate or restore the array") from None

    def _write(self, array: np.ndarray, bbox: BBox) -> None:
        import zarr  # heavy: only when a zarr store is used

        if self._writable is None:
            self._writable = zarr.open_array(str(self.root), path=self.array_path, mode="r+")
        self._writable[self.array_index(bbox)] = array


def _target(loc: VolumeLocation) -> Path:
    assert loc.path is not None
    return loc.path / loc.inner if loc.inner else loc.path


def _open(loc: VolumeLocation, fill_missing: bool = False) -> ZarrVolume:
    assert loc.path is not None
    return ZarrVolume(loc.uri, loc.path, loc.inner)


def _exists(loc: VolumeLocation) -> bool:
    target = _target(loc)
    return target.exists() and (not target.is_dir() or any(target.iterdir()))


def _delete(loc: VolumeLocation) -> None:
    target = _target(loc)
    if target.is_dir():
        shutil.rmtree(target)
    else:
        target.unlink()


def _create(loc: VolumeLocation, spec: VolumeSpec) -> ZarrVolume:
    """An OME-Zarr image at the URI: a group with NGFF metadata holding the array ``0``."""
    import zarr  # heavy: only when a zarr store is used

    assert loc.path is not None
    if spec.zarr_format not in (2, 3):
        raise UserError(f"zarr format {spec.zarr_format} is not supported", "use 2 or 3")
    store = zarr.open_group(str(loc.path), mode="a", zarr_format=2 if spec.zarr_format == 2 else 3)
    image = store.require_group(loc.inner) if loc.inner else store
    name = loc.inner.rpartition("/")[2] or loc.path.stem
    image.attrs.update(ngff_attrs(spec.zarr_format, spec.axes, spec.voxel_size, spec.offset, name=name))
    image.create_array("0", shape=spec.shape, dtype=spec.dtype, chunks=spec.storage_chunks(),
                       attributes=metadata_attrs(spec.axes, spec.voxel_size, spec.offset),
                       dimension_names=list(spec.axes) if spec.zarr_format == 3 else None)
    return ZarrVolume(loc.uri, loc.path, loc.inner)


def _sidecar(loc: VolumeLocation, name: str) -> Path:
    return _target(loc) / name


BACKEND = FormatBackend("zarr", _open, _create, _exists, _delete, _sidecar)
