"""Neuroglancer precomputed layers through CloudVolume (local ``file://``, ``gs://``, ``s3://``).

CloudVolume stores (x, y, z, c); this module converts to pytc's (c, z, y, x) at the edge.
Local chunk writes are atomic (encode, write to a temporary file, ``os.replace``), so a
killed writer never leaves a partially written chunk visible.
"""

from __future__ import annotations

import gzip
import importlib
import json
import logging
import os
import shutil
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np

from pytc_core.bbox import BBox, grid_boxes, vec3
from pytc_core.errors import UserError
from pytc_core.files import write_atomic
from pytc_core.volume.base import FormatBackend, Volume, VolumeSpec
from pytc_core.volume.location import (
    REMOTE_PREFIXES,
    VolumeLocation,
    local_path,
    mip_uri,
    split_mip,
)

log = logging.getLogger("pytc.volume")

__all__ = ["BACKEND", "PrecomputedVolume", "local_layer_path", "quiet_cloud_libraries",
           "to_cloudpath"]

SUPPORTED_DTYPES = ("uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64",
                    "float32", "float64")


#: the modules of CloudVolume/CloudFiles that ``print`` on stdout, where pytc prints only
#: results: credential warnings, read errors, redirects, placeholder mips, sharding and mesh
#: progress (every module of cloud-volume 12 / cloud-files 6 with a ``print`` call, except the
#: viewer server's, which pytc does not use)
_PRINTING_MODULES = (
    "cloudfiles.compression", "cloudfiles.secrets",
    "cloudvolume.cacheservice", "cloudvolume.lib", "cloudvolume.mesh", "cloudvolume.secrets",
    "cloudvolume.storage.storage", "cloudvolume.frontends.precomputed",
    "cloudvolume.frontends.graphene", "cloudvolume.datasource.precomputed",
    "cloudvolume.datasource.precomputed.image.rx", "cloudvolume.datasource.precomputed.metadata",
    "cloudvolume.datasource.precomputed.sharding",
    "cloudvolume.datasource.precomputed.spatial_index",
    "cloudvolume.datasource.precomputed.mesh.unsharded",
    "cloudvolume.datasource.graphene.mesh.unsharded",
)
_quieted = False
_quiet_guard = threading.Lock()


def _print_to_log(*args: Any, sep: str | None = " ", end: str | None = "\n", file: Any = None,
                  flush: bool = False) -> None:
    """``print`` for the cloud libraries: what would go to stdout is logged at debug level
    (``--verbose``); output to another stream (stderr) goes there unchanged."""
    if file is not None and file is not sys.stdout and file is not sys.__stdout__:
        print(*args, sep=sep, end=end, file=file, flush=flush)
        return
    text = (" " if sep is None else sep).join(str(a) for a in args).strip()
    if text:
        log.debug("%s", text)


def quiet_cloud_libraries() -> None:
    """Route CloudVolume's and CloudFiles' ``print`` calls to pytc's debug log, once per
    process (idempotent, thread-safe).

    Nothing swaps ``sys.stdout``: redirecting it from the reader and writer threads of
    ``run_blocks`` could leave a capture buffer installed when two redirects overlap, and the
    output URI printed at the end would then never reach stdout. Each module's global
    ``print`` is shadowed instead, which affects only those modules' own calls."""
    global _quieted
    if _quieted:
        return
    with _quiet_guard:
        if _quieted:
            return
        for name in _PRINTING_MODULES:
            try:
                module = importlib.import_module(name)
            except Exception:  # another version of the library, or a missing optional extra
                continue
            module.print = _print_to_log  # type: ignore[attr-defined]
        _quieted = True


def to_cloudpath(uri: str) -> str:
    """A CloudVolume path for ``uri``: plain paths become absolute ``file://`` paths
    (``file://`` URIs percent-decoded); a ``@mip=N`` suffix names a scale of the layer, not
    another place, and is dropped."""
    uri = split_mip(uri)[0]
    if uri.startswith("precomputed://"):
        uri = uri[len("precomputed://"):]
    if uri.startswith(REMOTE_PREFIXES):
        return uri.rstrip("/")
    return "file://" + os.path.abspath(local_path(uri))


def local_layer_path(uri: str) -> Path | None:
    """The directory of a local layer, or None for a remote one."""
    path = to_cloudpath(uri)
    return Path(path[len("file://"):]) if path.startswith("file://") else None


def _read_info(uri: str) -> dict:
    from cloudfiles import CloudFiles  # heavy: only for precomputed I/O
    quiet_cloud_libraries()

    cloudpath = to_cloudpath(uri)
    local = local_layer_path(uri)
    if local is not None and not local.exists():
        raise UserError(f"no such volume: {uri}", "check the path (a precomputed layer is a directory with an 'info' file)")
    try:
        raw = CloudFiles(cloudpath).get("info")
    except Exception as exc:  # network or permission problems
        raise UserError(f"cannot reach {uri}: {' '.join(str(exc).split())[:200]}",
                        "check the URI and your credentials") from None
    if raw is None:
        raise UserError(f"{uri} is not a precomputed layer: its 'info' file is missing",
                        "point at a layer directory, or at a .h5/.zarr/.tif/.npy file")
    try:
        info = json.loads(raw)
        scale = info["scales"][0]
        _ = (info["num_channels"], info["data_type"], scale["size"], scale["resolution"])
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise UserError(f"{uri}: the precomputed 'info' file is corrupt ({type(exc).__name__}: {exc})",
                        "recreate the layer, or restore its info file") from None
    return info


def scale_line(info: dict) -> str:
    """The scales of a layer's info as ``mip 0 (4x4x4 nm), mip 1 (8x8x8 nm)`` (z, y, x)."""
    parts = []
    for i, scale in enumerate(info.get("scales", [])):
        rx, ry, rz = (float(v) for v in scale["resolution"])
        parts.append(f"mip {i} ({rz:g}x{ry:g}x{rx:g} nm)")
    return ", ".join(parts)


def _zyx(resolution: Any) -> tuple[float, float, float]:
    rx, ry, rz = (float(v) for v in resolution)
    return (rz, ry, rx)


class PrecomputedVolume(Volume):
    """A precomputed layer at one of its scales (``mip``; URI ``layer@mip=N``, default 0)."""

    format = "precomputed"

    def __init__(self, uri: str, info: dict | None = None, *, fill_missing: bool = False,
                 mip: int | None = None) -> None:
        self.uri = uri
        #: read missing chunks as zeros (layers sparse on purpose) instead of a UserError
        self.fill_missing = fill_missing
        self.cloudpath = to_cloudpath(uri)
        self.info = info if info is not None else _read_info(uri)
        self.mip = (split_mip(uri)[1] or 0) if mip is None else int(mip)
        scales = self.info["scales"]
        if not 0 <= self.mip < len(scales):
            raise UserError(f"{uri}: the layer has no mip {self.mip}; it has {scale_line(self.info)}",
                            f"name one of them, e.g. {mip_uri(uri, len(scales) - 1)}")
        scale = scales[self.mip]
        if len(scales) > 1:
            self.levels = [(mip_uri(uri, i), _zyx(sc["resolution"])) for i, sc in enumerate(scales)]
        try:
            _ = (scale["size"], scale["resolution"], scale["key"], scale["chunk_sizes"][0])
        except (KeyError, IndexError, TypeError) as exc:
            raise UserError(f"{uri}: mip {self.mip} of the precomputed 'info' file is corrupt "
                            f"({type(exc).__name__}: {exc})",
                            "recreate the layer, or restore its info file") from None
        self.key = scale["key"]
        self.encoding = scale.get("encoding", "raw")
        x, y, z = (int(v) for v in scale["size"])
        c = int(self.info["num_channels"])
        axes = self.info.get("pytc_axes", "czyx" if c > 1 else "zyx")
        self.shape = (c, z, y, x) if axes == "czyx" else (z, y, x)
        if axes == "zyx" and c != 1:
            raise UserError(f"{uri}: info says {c} channels but pytc_axes 'zyx'", "fix the info file")
        self.dtype = np.dtype(self.info["data_type"])
        rx, ry, rz = (float(v) for v in scale["resolution"])
        self.voxel_size = (rz, ry, rx)
        ox, oy, oz = (int(v) for v in scale.get("voxel_offset", (0, 0, 0)))
        self.offset = (oz, oy, ox)
        cx, cy, cz = (int(v) for v in scale["chunk_sizes"][0])
        self.chunk_size = (cz, cy, cx)
        self.compress = self.info.get("pytc_compress", "gzip")
        self._cv = None

    @property
    def layer_type(self) -> str:
        return self.info.get("type", "image")

    @property
    def cv(self):
        if self._cv is None:
            from cloudvolume import CloudVolume  # heavy: only for precomputed I/O
            quiet_cloud_libraries()

            self._cv = CloudVolume(self.cloudpath, mip=self.mip, fill_missing=self.fill_missing, bounded=True,
                                   progress=False, info=self.info, parallel=1,
                                   non_aligned_writes=False, cache=False)
        return self._cv

    def _missing_chunk_error(self, name: str) -> UserError:
        return UserError(f"{self.uri} is missing chunk {self.key}/{name}",
                         "restore it, or pass --fill-missing if the layer is sparse on purpose "
                         "(missing chunks then read as zeros)")

    def _read(self, bbox: BBox) -> np.ndarray:
        if not self.fill_missing and local_layer_path(self.uri) is not None:
            for box in self._covering_chunks(bbox):
                if not self.chunk_exists(box):
                    raise self._missing_chunk_error(self._chunk_name(box))
        from cloudvolume.exceptions import EmptyVolumeException  # as above

        try:
            data = self._read_xyzc(bbox)
        except EmptyVolumeException as exc:
            raise self._missing_chunk_error(str(exc)) from None
        except UserError:
            raise
        except Exception as exc:  # CloudVolume/CloudFiles raise many types for a bad chunk
            raise UserError(f"cannot read {bbox} of {self.uri}: {self._bad_chunk(bbox)}"
                            f"({type(exc).__name__}: {' '.join(str(exc).split())[:160]})",
                            "recreate the layer or restore the chunk") from None
        data = np.transpose(data, (3, 2, 1, 0))  # (c, z, y, x)
        if self.ndim == 3:
            data = data[0]
        return np.ascontiguousarray(data)

    def _read_xyzc(self, bbox: BBox) -> np.ndarray:
        (z0, y0, x0), (z1, y1, x1) = bbox.start, bbox.stop
        return np.asarray(self.cv[x0:x1, y0:y1, z0:z1])  # (x, y, z, c)

    def _bad_chunk(self, bbox: BBox) -> str:
        """'chunk <key>/<name> does not decode ' for the first chunk of ``bbox`` that fails to
        read alone (local layers; only on the error path), else ''."""
        if local_layer_path(self.uri) is None:
            return ""
        for box in self._covering_chunks(bbox):
            try:
                self._read_xyzc(box)
            except Exception:
                return f"chunk {self.key}/{self._chunk_name(box)} does not decode "
        return ""

    def _check_aligned(self, bbox: BBox) -> None:
        vol = self.bbox
        for a, b, o, s, e in zip(bbox.start, bbox.stop, vol.start, self.chunk_size, vol.stop, strict=True):
            if (a - o) % s or ((b - o) % s and b != e):
                raise ValueError(f"write box {bbox} of {self.uri} is not aligned to chunks "
                                 f"{self.chunk_size} from {vol.start}; plan blocks with plan_blocks()")

    def chunk_boxes(self, bbox: BBox) -> list[BBox]:
        return grid_boxes(bbox, self.chunk_size, grid_origin=self.offset)

    def _covering_chunks(self, bbox: BBox) -> list[BBox]:
        """The whole storage chunks (clipped to the volume) that ``bbox`` touches."""
        vol = self.bbox
        start = tuple(o + ((a - o) // s) * s for a, o, s in zip(bbox.start, vol.start, self.chunk_size, strict=True))
        stop = tuple(min(e, o + -(-(b - o) // s) * s)
                     for b, o, s, e in zip(bbox.stop, vol.start, self.chunk_size, vol.stop, strict=True))
        return self.chunk_boxes(BBox(vec3(start, "start"), vec3(stop, "stop")))

    def _chunk_name(self, box: BBox) -> str:
        (z0, y0, x0), (z1, y1, x1) = box.start, box.stop
        return f"{x0}-{x1}_{y0}-{y1}_{z0}-{z1}"

    def _write(self, array: np.ndarray, bbox: BBox) -> None:
        self._check_aligned(bbox)
        local = local_layer_path(self.uri)
        if local is None:
            (z0, y0, x0), (z1, y1, x1) = bbox.start, bbox.stop
            data = array if self.ndim == 4 else array[None]
            self.cv[x0:x1, y0:y1, z0:z1] = np.transpose(data, (3, 2, 1, 0))
            return
        if self.encoding != "raw":
            raise ValueError(f"{self.uri}: pytc writes only raw-encoded layers, not {self.encoding}")
        key_dir = local / self.key
        key_dir.mkdir(parents=True, exist_ok=True)
        for box in self.chunk_boxes(bbox):
            sl = box.relative_to(bbox.start)
            chunk = array[(slice(None), *sl)] if self.ndim == 4 else array[sl][None]
            payload = np.asfortranarray(np.transpose(chunk, (3, 2, 1, 0))).tobytes("F")
            name = self._chunk_name(box)
            final = key_dir / (name + (".gz" if self.compress == "gzip" else ""))
            if self.compress == "gzip":
                payload = gzip.compress(payload, compresslevel=1, mtime=0)
            write_atomic(final, payload)
            stale = key_dir / (name if self.compress == "gzip" else name + ".gz")
            if stale.exists():
                stale.unlink()

    def chunk_exists(self, box: BBox) -> bool:
        """Whether the chunk starting at ``box.start`` has been written (local layers)."""
        local = local_layer_path(self.uri)
        if local is None:
            raise NotImplementedError("chunk_exists is for local layers")
        name = self._chunk_name(box)
        return (local / self.key / name).exists() or (local / self.key / (name + ".gz")).exists()


def _exists(loc: VolumeLocation) -> bool:
    """True when the URI holds anything: a local non-empty directory, or a remote info file."""
    local = local_layer_path(loc.uri)
    if local is not None:
        return local.exists() and (not local.is_dir() or any(local.iterdir()))
    from cloudfiles import CloudFiles  # heavy: only for precomputed I/O
    quiet_cloud_libraries()

    try:
        return CloudFiles(to_cloudpath(loc.uri)).exists("info")
    except Exception as exc:
        raise UserError(f"cannot reach {loc.uri}: {' '.join(str(exc).split())[:200]}",
                        "check the URI and your credentials") from None


def _delete(loc: VolumeLocation) -> None:
    _refuse_scale(loc, "delete")
    local = local_layer_path(loc.uri)
    if local is not None:
        if local.is_dir():
            shutil.rmtree(local)
        elif local.exists():
            local.unlink()
        return
    from cloudfiles import CloudFiles  # heavy: only for precomputed I/O
    quiet_cloud_libraries()

    cf = CloudFiles(to_cloudpath(loc.uri))
    cf.delete(cf.list())


def _refuse_scale(loc: VolumeLocation, what: str) -> None:
    if loc.mip:
        raise UserError(f"cannot {what} {loc.uri}: @mip= names a scale of an existing layer, "
                        "which pytc only reads", "give a layer URI without @mip=")


def _create(loc: VolumeLocation, spec: VolumeSpec) -> PrecomputedVolume:
    from cloudvolume import CloudVolume  # heavy: only for precomputed I/O
    quiet_cloud_libraries()

    _refuse_scale(loc, "create")

    uri, dtype = loc.uri, spec.dtype
    if dtype.name not in SUPPORTED_DTYPES:
        raise UserError(f"precomputed layers cannot store {dtype}",
                        f"use one of {', '.join(SUPPORTED_DTYPES)}")
    compress = spec.compress
    if compress == "auto":
        compress = "gzip" if np.issubdtype(dtype, np.integer) else None
    c = spec.shape[0] if len(spec.shape) == 4 else 1
    z, y, x = spec.shape[-3:]
    cz, cy, cx = spec.chunk_size
    (vz, vy, vx), (oz, oy, ox) = spec.voxel_size, spec.offset
    info = CloudVolume.create_new_info(
        num_channels=c, layer_type=spec.layer_type, data_type=dtype.name, encoding="raw",
        resolution=[vx, vy, vz], voxel_offset=[ox, oy, oz], volume_size=[x, y, z],
        chunk_size=[cx, cy, cz])
    info["pytc_axes"] = spec.axes
    info["pytc_compress"] = compress or "none"
    local = local_layer_path(uri)
    if local is not None:
        write_atomic(local / "info", json.dumps(info, indent=2).encode())
    else:
        from cloudfiles import CloudFiles  # heavy: only for precomputed I/O
        quiet_cloud_libraries()

        CloudFiles(to_cloudpath(uri)).put_json("info", info)
    return PrecomputedVolume(uri, info, fill_missing=True)  # a new layer reads as zeros


def _sidecar(loc: VolumeLocation, name: str) -> Path | None:
    layer = local_layer_path(loc.uri)
    return None if layer is None else layer / name


def _open(loc: VolumeLocation, fill_missing: bool = False) -> PrecomputedVolume:
    return PrecomputedVolume(loc.uri, fill_missing=fill_missing, mip=loc.mip)


BACKEND = FormatBackend("precomputed", _open, _create, _exists, _delete, _sidecar)
