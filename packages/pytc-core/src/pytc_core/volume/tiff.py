"""TIFF stacks (``.tif``/``.tiff``): one page per z slice (per z and channel for 4D).

pytc writes uncompressed TIFFs through ``tifffile.memmap`` so blocks are written in place.
The voxel size goes where ImageJ/Fiji look for it:

- uint8, uint16 and float32 volumes (the types ImageJ can hold) are ImageJ hyperstacks: x/y
  pixel size in the XResolution/YResolution tags (pixels per unit), z in ``spacing=``,
  ``unit=nm``, the offset as ImageJ's ``zorigin``/``yorigin``/``xorigin`` (minus the offset in
  voxels, as ImageJ's calibration origin is). Channels are stored in ImageJ's Z, C order and
  read back channels first.
- other types (uint32/uint64 labels) are BigTIFFs with tifffile's JSON description holding
  ``voxel_size`` (nm) and ``voxel_offset`` (voxels), and the x/y size in the resolution tags
  (pixels per cm, so Bio-Formats/Fiji show the right x/y size).

Read: pytc's JSON description, else ImageJ metadata (spacing, unit, resolution tags,
origins); without either the voxel size is 1 nm. TIFFs that are compressed or not contiguous
are read whole on first access.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from pytc_core.bbox import BBox
from pytc_core.errors import UserError
from pytc_core.volume.base import FormatBackend, Volume, VolumeSpec, file_exists, file_sidecar
from pytc_core.volume.file_lock import file_lock
from pytc_core.volume.location import VolumeLocation
from pytc_core.volume.metadata import metadata_from_attrs, nm_per_unit

__all__ = ["BACKEND", "IMAGEJ_DTYPES", "TiffVolume"]

#: dtypes stored as ImageJ hyperstacks
IMAGEJ_DTYPES = ("uint8", "uint16", "float32")
_IMAGEJ_MAX_BYTES = 2**32 - 2**26  # ImageJ files are classic (not Big) TIFFs


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:160]


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(" ".join(record.getMessage().split()))


@contextlib.contextmanager
def _tifffile_warnings() -> Iterator[list[str]]:
    """tifffile logs what it finds wrong in a file (and then reads what it can): collect those
    messages instead of letting them reach stderr."""
    logger = logging.getLogger("tifffile")
    handler, propagate = _Collect(), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


_DAMAGE = ("corrupt", "invalid", "truncat", "beyond", "offset")


def _imagej_attrs(meta: dict[str, Any], resolution: tuple[float, float] | None, uri: str) -> dict:
    """pytc attributes from ImageJ metadata: spacing/unit/resolution → voxel size (nm);
    zorigin/yorigin/xorigin → offset (voxels)."""
    unit = meta.get("unit")
    if isinstance(unit, str) and unit.lower().startswith("\\u00b5"):
        unit = "µ" + unit[6:]
    attrs: dict[str, Any] = {}
    if unit is not None and str(unit).lower() not in ("pixel", "pixels", ""):
        scale = nm_per_unit(unit, uri)
        xres, yres = resolution if resolution else (1.0, 1.0)
        if not xres or not yres:
            xres, yres = 1.0, 1.0
        size = (float(meta.get("spacing", 1.0)), 1.0 / float(yres), 1.0 / float(xres))
        attrs["voxel_size"] = [round(s * scale, 6) for s in size]
    origin = [meta.get(f"{a}origin") for a in "zyx"]
    if any(o is not None for o in origin):
        attrs["voxel_offset"] = [-int(round(float(o or 0))) for o in origin]
    return attrs


class TiffVolume(Volume):
    format = "tiff"

    def __init__(self, uri: str, path: Path) -> None:
        import tifffile  # only when a TIFF file is used

        self.uri, self.path = uri, path
        if not path.exists():
            raise UserError(f"no such file: {path}", "check the path")
        try:
            with _tifffile_warnings() as problems, tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                shape = tuple(int(s) for s in series.shape)
                dtype = np.dtype(series.dtype)
                axes = series.axes.upper()
                if tif.is_imagej:
                    page = tif.pages[0]
                    attrs = _imagej_attrs(tif.imagej_metadata or {}, page.resolution, uri)
                else:
                    attrs = dict(tif.shaped_metadata[0]) if tif.shaped_metadata else {}
        except (tifffile.TiffFileError, ValueError, OSError, IndexError, KeyError) as exc:
            raise UserError(f"cannot read {path} as TIFF ({_short(exc)})",
                            "check that the file is a complete TIFF stack") from None
        damage = [m for m in problems if any(word in m.lower() for word in _DAMAGE)]
        if damage:
            raise UserError(f"cannot read {path}: the TIFF is damaged or truncated ({damage[0][:160]})",
                            "recreate or restore the file")
        attrs.pop("shape", None)
        # channels stored after z (ImageJ's order) are read channels first
        self._zc = len(shape) == 4 and axes.endswith("ZCYX")
        if self._zc:
            shape = (shape[1], shape[0], *shape[2:])
        if isinstance(attrs.get("axes"), str) and attrs["axes"].upper() in ("ZYX", "CZYX"):
            attrs["axes"] = attrs["axes"].lower()
        elif "axes" in attrs and not isinstance(attrs.get("voxel_size"), list):
            attrs.pop("axes")  # tifffile's own axes codes (e.g. 'QYX'), not pytc's
        self.shape, self.dtype = shape, dtype
        meta = metadata_from_attrs(attrs, shape, uri)
        self.voxel_size, self.offset = meta["voxel_size"], meta["offset"]
        self.chunk_size = (1, shape[-2], shape[-1])
        self._data: np.ndarray | None = None

    def _as_pytc(self, data: np.ndarray) -> np.ndarray:
        """The stored array viewed as (Z, Y, X) / (C, Z, Y, X)."""
        if self._zc:
            data = data.reshape(self.shape[1], self.shape[0], *self.shape[2:]).transpose(1, 0, 2, 3)
            return data
        return data.reshape(self.shape)

    def _array(self) -> np.ndarray:
        import tifffile  # only when a TIFF file is used

        if self._data is None:
            data: np.ndarray
            try:
                try:
                    data = tifffile.memmap(self.path, mode="r")
                except ValueError:  # compressed or not contiguous: read it whole
                    data = tifffile.imread(self.path)
            except (tifffile.TiffFileError, ValueError, OSError) as exc:
                raise UserError(f"cannot read {self.path}: the TIFF is damaged or truncated ({_short(exc)})",
                                "recreate or restore the file") from None
            self._data = self._as_pytc(data)
        return self._data

    def _read(self, bbox: BBox) -> np.ndarray:
        with file_lock(self.path):  # one file: reads and writes of this process in turn
            return np.array(self._array()[self.array_index(bbox)])

    def _write(self, array: np.ndarray, bbox: BBox) -> None:
        import tifffile  # only when a TIFF file is used

        with file_lock(self.path):
            mm = tifffile.memmap(self.path, mode="r+")
            view = self._as_pytc(mm)
            view[self.array_index(bbox)] = array
            mm.flush()
            del mm, view
            self._data = None


def _open(loc: VolumeLocation, fill_missing: bool = False) -> TiffVolume:
    assert loc.path is not None
    return TiffVolume(loc.uri, loc.path)


def _delete(loc: VolumeLocation) -> None:
    assert loc.path is not None
    with file_lock(loc.path):
        loc.path.unlink()


def _create(loc: VolumeLocation, spec: VolumeSpec) -> TiffVolume:
    import tifffile  # only when a TIFF file is used

    assert loc.path is not None
    loc.path.parent.mkdir(parents=True, exist_ok=True)
    vz, vy, vx = spec.voxel_size
    nbytes = int(np.prod(spec.shape, dtype=np.int64)) * spec.dtype.itemsize
    metadata: dict[str, Any]
    with file_lock(loc.path):
        if spec.dtype.name in IMAGEJ_DTYPES and nbytes <= _IMAGEJ_MAX_BYTES:
            shape = spec.shape if len(spec.shape) == 3 else (spec.shape[1], spec.shape[0], *spec.shape[2:])
            oz, oy, ox = spec.offset
            metadata = {"axes": "ZYX" if len(spec.shape) == 3 else "ZCYX", "spacing": float(vz), "unit": "nm",
                        "zorigin": -oz, "yorigin": -oy, "xorigin": -ox}
            mm = tifffile.memmap(loc.path, shape=shape, dtype=spec.dtype, imagej=True,
                                 resolution=(1.0 / vx, 1.0 / vy), metadata=metadata)
        else:
            metadata = {"axes": spec.axes.upper(), "voxel_size": list(spec.voxel_size),
                        "voxel_offset": list(spec.offset)}
            mm = tifffile.memmap(loc.path, shape=spec.shape, dtype=spec.dtype, photometric="minisblack",
                                 metadata=metadata, bigtiff=True, resolution=(1e7 / vx, 1e7 / vy),
                                 resolutionunit="CENTIMETER")
        mm.flush()
        del mm
    return TiffVolume(loc.uri, loc.path)


BACKEND = FormatBackend("tiff", _open, _create, file_exists, _delete, file_sidecar)
