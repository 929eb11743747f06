"""The one volume interface every format implements.

Axis order is stated once: spatial axes are (z, y, x); a channel axis, when present, comes
first, so arrays are ``(Z, Y, X)`` or ``(C, Z, Y, X)``. Voxel size is in nm, (z, y, x).
Offsets and bounding boxes are global voxel coordinates (z, y, x); a channel axis is never
offset.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pytc_core.bbox import BBox, Vec3
from pytc_core.errors import UserError
from pytc_core.volume.location import VolumeLocation

__all__ = ["FormatBackend", "Volume", "VolumeSpec", "cast_losslessly", "require_channels",
           "require_finite", "require_integer_labels"]


class Volume(ABC):
    """A lazily read 3D (Z, Y, X) or channels-first 4D (C, Z, Y, X) volume behind a URI."""

    #: the URI as given by the user (normalised)
    uri: str
    #: full array shape, (Z, Y, X) or (C, Z, Y, X)
    shape: tuple[int, ...]
    dtype: np.dtype
    #: voxel size in nm, (z, y, x)
    voxel_size: tuple[float, float, float]
    #: global voxel coordinate of the first voxel, (z, y, x)
    offset: Vec3
    #: storage chunk size in voxels, (z, y, x)
    chunk_size: Vec3
    #: short format name: precomputed, hdf5, zarr, tiff, npy
    format: str = ""
    #: the scales of a multiscale volume (precomputed mips, OME-Zarr levels) as (URI, voxel
    #: size in nm, z y x), finest first; empty for a single-scale volume
    levels: Sequence[tuple[str, tuple[float, float, float]]] = ()

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def spatial_shape(self) -> Vec3:
        return tuple(self.shape[-3:])  # type: ignore[return-value]

    @property
    def num_channels(self) -> int | None:
        """Number of channels for a 4D volume, None for a 3D one."""
        return self.shape[0] if len(self.shape) == 4 else None

    @property
    def bbox(self) -> BBox:
        """The volume's extent in global voxel coordinates."""
        return BBox.from_shape(self.spatial_shape, self.offset)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.uri!r}, shape={self.shape}, dtype={self.dtype}, "
                f"voxel_size={self.voxel_size}, offset={self.offset})")

    def read(self, bbox: BBox | None = None) -> np.ndarray:
        """Read ``bbox`` (global voxel coordinates; default: everything) as a numpy array.

        Returns ``(Z, Y, X)`` or ``(C, Z, Y, X)`` data of the volume's dtype.
        """
        box = self.bbox if bbox is None else bbox
        if not self.bbox.contains(box):
            raise UserError(f"requested box {box} lies outside {self.uri} (extent {self.bbox})",
                            "request a box inside the volume")
        out = self._read(box)
        expected = ((self.shape[0],) if self.ndim == 4 else ()) + box.shape
        assert out.shape == expected, (out.shape, expected)
        return out

    def write(self, array: np.ndarray, offset: Sequence[int] | None = None) -> None:
        """Write ``array`` with its first voxel at global ``offset`` (z, y, x; default: volume start).

        ``array`` is ``(Z, Y, X)`` or ``(C, Z, Y, X)`` matching the volume; values are cast to
        the volume's dtype when that is lossless for them, else ValueError. Formats with chunked
        storage require chunk-aligned boxes (see :func:`pytc_core.plan_blocks`).
        """
        array = np.asarray(array)
        if array.ndim != self.ndim:
            raise ValueError(f"array has {array.ndim} dims, volume {self.uri} has {self.ndim}")
        if self.ndim == 4 and array.shape[0] != self.shape[0]:
            raise ValueError(f"array has {array.shape[0]} channels, volume has {self.shape[0]}")
        start = self.offset if offset is None else tuple(int(v) for v in offset)
        box = BBox.from_shape(array.shape[-3:], start)
        if not self.bbox.contains(box):
            raise ValueError(f"write box {box} lies outside {self.uri} (extent {self.bbox})")
        if box.empty:
            return
        self._write(np.ascontiguousarray(cast_losslessly(array, self.dtype, self.uri)), box)

    def array_index(self, bbox: BBox) -> tuple[slice, ...]:
        """Index of ``bbox`` (global voxels) into the stored array, channels kept whole."""
        spatial = bbox.relative_to(self.offset)
        return (slice(None), *spatial) if self.ndim == 4 else spatial

    @abstractmethod
    def _read(self, bbox: BBox) -> np.ndarray: ...

    @abstractmethod
    def _write(self, array: np.ndarray, bbox: BBox) -> None: ...


def cast_losslessly(array: np.ndarray, dtype: np.dtype, uri: str = "the volume") -> np.ndarray:
    """``array`` as ``dtype``, or ValueError when a value would change on the way.

    Safe casts pass as they are. Integers into a narrower integer type (uint64 ids into a
    uint32 volume, negative values into an unsigned one) pass only when every value fits, and
    integers into floats only up to the float's exact range (2^24 for float32): the value range
    is checked, which costs one pass next to the write. Floats narrow to a smaller float
    (float64 to float32) unless a value overflows to inf. Floats never go into integers.
    """
    dtype = np.dtype(dtype)
    src = array.dtype
    if src == dtype:
        return array
    if np.can_cast(src, dtype, casting="safe"):
        return array.astype(dtype)
    what = f"{src} data in {dtype} volume {uri}"
    if src.kind in "biu" and dtype.kind in "iuf":
        if array.size:
            lo, hi = int(array.min()), int(array.max())
            if dtype.kind == "f":
                exact = 2 ** (np.finfo(dtype).nmant + 1)
                bounds = (-exact, exact)
            else:
                bounds = (int(np.iinfo(dtype).min), int(np.iinfo(dtype).max))
            if lo < bounds[0] or hi > bounds[1]:
                raise ValueError(f"cannot store {what}: its values {lo}..{hi} do not fit "
                                 f"{dtype} ({bounds[0]}..{bounds[1]}); they would wrap or round")
        return array.astype(dtype)
    if src.kind == "f" and dtype.kind == "f":
        with np.errstate(over="raise"):
            try:
                return array.astype(dtype)
            except FloatingPointError:
                raise ValueError(f"cannot store {what}: values overflow {dtype}") from None
    raise ValueError(f"cannot store {what}")


@dataclass(frozen=True)
class VolumeSpec:
    """What :func:`pytc_core.create_volume` asks a format to create (validated there).

    ``shape`` (Z, Y, X) or (C, Z, Y, X); ``voxel_size`` nm and ``offset`` voxels, (z, y, x);
    ``chunk_size`` voxels (z, y, x).
    """

    shape: tuple[int, ...]
    dtype: np.dtype
    voxel_size: tuple[float, float, float]
    offset: Vec3
    chunk_size: Vec3
    layer_type: str = "image"  # image or segmentation (precomputed)
    compress: str | None = "auto"  # auto, gzip or None (precomputed)
    zarr_format: int = 3

    @property
    def axes(self) -> str:
        return "czyx" if len(self.shape) == 4 else "zyx"

    def metadata(self) -> dict[str, Any]:
        """pytc's own attributes: axes, voxel size (nm), offset (voxels)."""
        return {"axes": self.axes, "voxel_size": [float(v) for v in self.voxel_size],
                "offset": [int(v) for v in self.offset]}

    def storage_chunks(self) -> tuple[int, ...]:
        """Chunk shape of the stored array: spatial chunks capped by the shape, one channel."""
        chunks = tuple(min(c, s) for c, s in zip(self.chunk_size, self.shape[-3:], strict=True))
        return (1, *chunks) if len(self.shape) == 4 else chunks


@dataclass(frozen=True)
class FormatBackend:
    """One volume format: how to open, create, find, delete a volume and place its sidecars.

    :mod:`pytc_core.volume` keeps the one table from format names to these.
    """

    name: str
    #: open lazily; the flag reads missing chunks as zeros (precomputed; others ignore it)
    open: Callable[[VolumeLocation, bool], Volume]
    create: Callable[[VolumeLocation, VolumeSpec], Volume]
    exists: Callable[[VolumeLocation], bool]
    delete: Callable[[VolumeLocation], None]
    sidecar: Callable[[VolumeLocation, str], Path | None]


def file_exists(loc: VolumeLocation) -> bool:
    """Exists check for single-file formats."""
    assert loc.path is not None
    return loc.path.exists()


def file_sidecar(loc: VolumeLocation, name: str) -> Path:
    """A file called ``name`` beside a single-file volume: ``<file>.<name>``."""
    assert loc.path is not None
    return loc.path.with_name(f"{loc.path.name}.{name}")


def require_finite(array: np.ndarray, uri: str) -> None:
    """UserError if a float array holds NaN or inf."""
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        bad = int(np.count_nonzero(~np.isfinite(array)))
        raise UserError(f"{uri} contains {bad} NaN/inf values",
                        "fix the producing step (e.g. a diverged model) or clean the volume")


def require_integer_labels(volume: Volume) -> None:
    """UserError unless ``volume`` is a 3D integer label volume."""
    if volume.ndim != 3:
        raise UserError(f"{volume.uri} has shape {volume.shape}, a label volume must be 3D (Z, Y, X)",
                        "pass a segmentation, not an affinity or image volume")
    if not (np.issubdtype(volume.dtype, np.integer) or volume.dtype == np.bool_):
        raise UserError(f"{volume.uri} has dtype {volume.dtype}, labels must be integers",
                        "pass a segmentation with an integer dtype (uint32/uint64)")


def require_channels(volume: Volume, min_channels: int, what: str = "affinity") -> None:
    """UserError unless ``volume`` is channels-first 4D with at least ``min_channels`` channels."""
    if volume.ndim != 4:
        raise UserError(f"{volume.uri} has shape {volume.shape} with no channel axis; an {what} "
                        f"volume must be (C, Z, Y, X) with C >= {min_channels}",
                        "pass the channels-first output of pytc-infer")
    if volume.shape[0] < min_channels:
        raise UserError(f"{volume.uri} has {volume.shape[0]} channels; an {what} volume needs "
                        f"at least {min_channels} (z, y, x nearest-neighbour affinities first)",
                        "pass a volume with the nearest-neighbour affinity channels")
