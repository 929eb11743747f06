"""What is stored at a volume URI, whether it can be created there, and deleting only that.

- :func:`inspect_output` recognises what is at a URI: nothing, a volume of the URI's own
  format that pytc can read (a precomputed layer: a directory whose ``info`` parses plus its
  chunk and ``pytc_*`` files; a ``.npy`` file; one HDF5 dataset; one zarr array or OME-Zarr
  image group; a TIFF file),
  or anything else ("foreign": a text file, a directory of other files, an HDF5 group, a zarr
  group ...), which pytc never replaces.
- :func:`check_creatable` checks, creating nothing, that a volume can be written at a URI.
- :func:`remove_volume` deletes only the recognised volume: the layer's files (never other
  files in the directory), one HDF5 dataset (never the whole file), one zarr array.

Files whose names start with ``pytc_`` belong to pytc (the layers above keep their records
there); this module knows them only by that prefix.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pytc_core.errors import UserError
from pytc_core.volume.backends import backend, sidecar_path
from pytc_core.volume.file_lock import file_lock
from pytc_core.volume.location import VolumeLocation, parse_uri
from pytc_core.volume.ngff import level_paths
from pytc_core.volume.npy import npy_sidecar
from pytc_core.volume.precomputed import local_layer_path

__all__ = [
    "OutputState",
    "check_creatable",
    "inspect_output",
    "local_base",
    "remove_volume",
    "write_problem",
]

Kind = Literal["absent", "volume", "foreign"]
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


@dataclass(frozen=True)
class OutputState:
    """What is at an output URI: ``absent``, a recognised ``volume``, or ``foreign``.

    ``what`` describes it for messages (e.g. ``"a regular file"``); ``pytc_only`` is true for
    a directory holding only pytc's own ``pytc_*`` files and no volume.
    """

    uri: str
    kind: Kind
    what: str
    pytc_only: bool = False


def local_base(loc: VolumeLocation) -> Path | None:
    """The file or directory an output lives in (the layer dir, zarr store, file), if local."""
    if loc.format == "precomputed":
        return local_layer_path(loc.uri)
    return loc.path


def _file(loc: VolumeLocation) -> Path:
    """The local path of a file-based location (HDF5, zarr store, TIFF, .npy)."""
    assert loc.path is not None, loc
    return loc.path


def _is_pytc_entry(name: str) -> bool:
    return name.startswith("pytc_") or (name.startswith(".") and ".tmp" in name)


def _listing(names: Iterable[str], limit: int = 4) -> str:
    names = sorted(names)
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _precomputed_parts(info: dict) -> set[str]:
    """The entries of a layer directory that belong to the layer named by its ``info``."""
    parts = {"info", "provenance"}
    for scale in info.get("scales", []):
        if isinstance(scale, dict) and scale.get("key"):
            parts.add(str(scale["key"]).split("/")[0])
    for extra in ("mesh", "skeletons"):
        if isinstance(info.get(extra), str):
            parts.add(info[extra].split("/")[0])
    return parts


def _read_info(path: Path) -> dict | None:
    try:
        info = json.loads(path.read_text())
        if isinstance(info, dict) and isinstance(info.get("scales"), list) and info["scales"]:
            return info
    except (OSError, ValueError):
        pass
    return None


def _inspect_precomputed(uri: str, path: Path | None) -> OutputState:
    if path is None:  # remote: an info file marks a layer
        exists = backend("precomputed").exists(parse_uri(uri))
        return OutputState(uri, "volume", "a precomputed layer") if exists \
            else OutputState(uri, "absent", "nothing")
    if not path.exists() and not path.is_symlink():
        return OutputState(uri, "absent", "nothing")
    if not path.is_dir():
        return OutputState(uri, "foreign", f"{path} is a file, not a precomputed layer")
    entries = {e.name for e in os.scandir(path)}
    own = {e for e in entries if _is_pytc_entry(e)}
    if "info" in entries:
        info = _read_info(path / "info")
        if info is None:
            return OutputState(uri, "foreign", f"{path} holds an 'info' file that is not a "
                               "precomputed layer's")
        others = entries - own - _precomputed_parts(info)
        if others:
            return OutputState(uri, "foreign", f"{path} is a precomputed layer but also holds "
                               f"other files ({_listing(others)})")
        return OutputState(uri, "volume", "a precomputed layer")
    others = entries - own
    if others:
        return OutputState(uri, "foreign", f"{path} is a directory that is not a precomputed layer "
                           f"(it holds {_listing(others)})")
    return OutputState(uri, "absent", "nothing", pytc_only=bool(own))


def _inspect_file(uri: str, path: Path, fmt: str) -> OutputState:
    if not path.exists() and not path.is_symlink():
        return OutputState(uri, "absent", "nothing")
    if path.is_dir():
        return OutputState(uri, "foreign", f"{path} is a directory, not a .{fmt} file")
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        return OutputState(uri, "foreign", f"{path} cannot be read ({exc.strerror})")
    if fmt == "npy" and head.startswith(b"\x93NUMPY"):
        return OutputState(uri, "volume", "a .npy array")
    if fmt == "tiff" and head[:4] in _TIFF_MAGIC:
        return OutputState(uri, "volume", "a TIFF file")
    kind = "a .npy array" if fmt == "npy" else "a TIFF file"
    return OutputState(uri, "foreign", f"{path} is a file that is not {kind}")


def _inspect_hdf5(uri: str, path: Path, dataset: str) -> OutputState:
    if not path.exists() and not path.is_symlink():
        return OutputState(uri, "absent", "nothing")
    if path.is_dir():
        return OutputState(uri, "foreign", f"{path} is a directory, not an HDF5 file")
    import h5py  # heavy: only when an HDF5 output is inspected

    try:
        if not h5py.is_hdf5(path):
            return OutputState(uri, "foreign", f"{path} is a file that is not HDF5")
        with file_lock(path), h5py.File(path, "r") as fh:
            if not dataset:
                return OutputState(uri, "foreign", f"{path} is a whole HDF5 file, not one dataset")
            parts = dataset.split("/")
            for i in range(1, len(parts)):
                prefix = "/".join(parts[:i])
                if prefix in fh and isinstance(fh[prefix], h5py.Dataset):
                    return OutputState(uri, "foreign", f"{path}:{prefix} is a dataset, so it cannot "
                                       f"hold {dataset}")
            if dataset not in fh:
                return OutputState(uri, "absent", "nothing")
            node = fh[dataset]
            if isinstance(node, h5py.Dataset):
                return OutputState(uri, "volume", "an HDF5 dataset")
            names = list(node.keys())
            return OutputState(uri, "foreign", f"{path}:{dataset} is an HDF5 group"
                               + (f" (holding {_listing(names)})" if names else ""))
    except OSError as exc:
        return OutputState(uri, "foreign", f"{path} cannot be opened as HDF5 "
                           f"({' '.join(str(exc).split())[:100]})")


def _zarr_node(path: Path) -> str | None:
    """``array``, ``group`` or None for a directory that is no zarr node."""
    if (path / ".zarray").is_file():
        return "array"
    if (path / ".zgroup").is_file():
        return "group"
    meta = path / "zarr.json"
    if meta.is_file():
        try:
            return "array" if json.loads(meta.read_text()).get("node_type") == "array" else "group"
        except (OSError, ValueError):
            return "unreadable"
    return None


_ZARR_META = ("zarr.json", ".zgroup", ".zattrs")


def _ome_levels(group: Path) -> list[str]:
    """The level paths of the OME-Zarr image group ``group`` (empty when it is none)."""
    for name, key in (("zarr.json", "attributes"), (".zattrs", None)):
        try:
            meta = json.loads((group / name).read_text())
        except (OSError, ValueError):
            continue
        attrs = meta.get(key, {}) if key else meta
        if isinstance(attrs, dict):
            return [p.split("/")[0] for p in level_paths(attrs) if p]
    return []


def _inspect_zarr(uri: str, root: Path, inner: str) -> OutputState:
    parts = [p for p in inner.split("/") if p]
    node = root
    for i in range(len(parts) + 1):
        name = str(root) + ("/" + "/".join(parts[:i]) if i else "")
        if not node.exists() and not node.is_symlink():
            return OutputState(uri, "absent", "nothing")
        if not node.is_dir():
            return OutputState(uri, "foreign", f"{name} is a file, not a zarr store")
        if i < len(parts):
            if _zarr_node(node) == "array":
                return OutputState(uri, "foreign", f"{name} is a zarr array, so it cannot hold "
                                   f"an array {'/'.join(parts[i:])}")
            node = node / parts[i]
    kind = _zarr_node(node)
    if kind == "array":
        return OutputState(uri, "volume", "a zarr array")
    entries = {e.name for e in os.scandir(node)}
    levels = _ome_levels(node) if kind == "group" else []
    if levels:  # an OME-Zarr image (what pytc writes): its levels, metadata and pytc's files
        others = {e for e in entries if not _is_pytc_entry(e)} - set(levels) - set(_ZARR_META)
        if not others:
            return OutputState(uri, "volume", "an OME-Zarr image")
        return OutputState(uri, "foreign", f"{node} is an OME-Zarr image but also holds {_listing(others)}")
    if kind == "group":
        arrays = [e for e in entries if (node / e).is_dir() and _zarr_node(node / e)]
        return OutputState(uri, "foreign", f"{node} is a zarr group"
                           + (f" (holding {_listing(arrays)})" if arrays else ""))
    if kind == "unreadable":
        return OutputState(uri, "foreign", f"{node} holds a zarr.json that cannot be read")
    others = {e for e in entries if not _is_pytc_entry(e)}
    if others:
        return OutputState(uri, "foreign", f"{node} is a directory that is not a zarr array "
                           f"(it holds {_listing(others)})")
    return OutputState(uri, "absent", "nothing", pytc_only=bool(entries))


def inspect_output(uri: str) -> OutputState:
    """Recognise what is at ``uri`` (see the module docstring); reads no voxel data."""
    loc = parse_uri(uri)
    if loc.format == "precomputed":
        return _inspect_precomputed(uri, local_base(loc))
    if loc.format == "hdf5":
        return _inspect_hdf5(uri, _file(loc), loc.inner)
    if loc.format == "zarr":
        return _inspect_zarr(uri, _file(loc), loc.inner)
    return _inspect_file(uri, _file(loc), loc.format)


def write_problem(path: Path) -> str | None:
    """Why nothing can be created in the existing directory ``path``, or None when it can."""
    try:
        if os.statvfs(path).f_flag & os.ST_RDONLY:
            return f"{path} is on a read-only filesystem"
    except OSError:
        pass
    if not os.access(path, os.W_OK | os.X_OK):
        return f"{path} is not writable"
    return None


def check_creatable(uri: str) -> None:
    """UserError unless the output at ``uri`` can be created (or written) here, checked
    without creating anything: no regular file on its path, writable directories, no
    read-only filesystem. Remote URIs are not checked."""
    loc = parse_uri(uri)
    if loc.mip:
        raise UserError(f"cannot create {uri}: @mip= names a scale of an existing layer, "
                        "which pytc only reads", "give an output URI without @mip=")
    base = local_base(loc)
    if base is None:
        return
    base = Path(os.path.abspath(base))
    probe = base
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe != base and not probe.is_dir():
        raise UserError(f"cannot create {uri}: {probe} is a file, not a directory",
                        "choose an output path whose parent is a directory")
    directory = probe if probe != base or base.is_dir() else base.parent
    problem = write_problem(directory)
    if problem is None and probe == base and base.is_file() and not os.access(base, os.W_OK):
        problem = f"{base} is read-only"
    if problem is not None:
        raise UserError(f"cannot write {uri}: {problem}",
                        "choose an output in a writable directory")


def _remove_entries(directory: Path, names: Iterable[str], keep: Collection[str]) -> None:
    for name in names:
        if name in keep:
            continue
        p = directory / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)


def _file_sidecars(path: Path, stem: str) -> list[Path]:
    return [p for p in path.parent.glob(f"{stem}.pytc_*")] if path.parent.exists() else []


def remove_volume(uri: str, *, keep: Collection[str] = (), remove_empty_file: bool = False) -> None:
    """Delete the recognised volume at ``uri`` and pytc's files about it, nothing else.

    UserError when something other than a recognised volume is there. A precomputed layer
    loses its info, scales and ``pytc_*`` files (the directory goes when empty); an HDF5
    output loses its dataset (the file, only with ``remove_empty_file`` and when no dataset
    is left); a zarr output its array. The ``pytc_*`` files named in ``keep`` stay (inside a
    directory output ``<name>``, beside a file output ``<file>[.<dataset>].<name>``).
    """
    if parse_uri(uri).mip:
        raise UserError(f"refusing to delete {uri}: @mip= names one scale of a layer",
                        "give the layer's URI without @mip= to delete the whole layer")
    state = inspect_output(uri)
    if state.kind == "foreign":
        raise UserError(f"refusing to delete {uri}: {state.what}",
                        "pytc deletes only volumes it recognises; remove it yourself if you mean to")
    loc = parse_uri(uri)
    base = local_base(loc)
    if loc.format == "precomputed":
        if base is None:
            backend("precomputed").delete(loc)
            return
        if base.is_dir():
            _remove_entries(base, [e.name for e in os.scandir(base)], keep)
            if not any(base.iterdir()):
                base.rmdir()
        return
    path = _file(loc)
    if loc.format == "zarr":
        target = path / loc.inner if loc.inner else path
        if target.is_dir():
            _remove_entries(target, [e.name for e in os.scandir(target)], keep)
            if not any(target.iterdir()):
                target.rmdir()
                if loc.inner and remove_empty_file:
                    _remove_empty_zarr_parents(path, loc.inner)
        return
    sidecar = sidecar_path(uri, "x")
    assert sidecar is not None
    stem = sidecar.name[:-2]  # "<file>[.<dataset>]"
    for p in _file_sidecars(sidecar, stem):
        if any(p.name == f"{stem}.{name}" for name in keep):
            continue
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)
    if loc.format == "hdf5":
        if state.kind == "volume":
            backend("hdf5").delete(loc)
        if remove_empty_file and path.exists() and _hdf5_is_empty(path):
            path.unlink()
        return
    if path.exists():
        path.unlink()
    if loc.format == "npy":
        npy_sidecar(path).unlink(missing_ok=True)


def _hdf5_is_empty(path: Path) -> bool:
    import h5py  # heavy: only when an HDF5 output is removed

    try:
        with file_lock(path), h5py.File(path, "r") as fh:
            return len(fh.keys()) == 0 and len(fh.attrs) == 0
    except OSError:
        return False


def _remove_empty_zarr_parents(root: Path, inner: str) -> None:
    """Remove the groups a fresh run created for ``inner`` when they hold nothing else."""
    parts = [p for p in inner.split("/") if p][:-1]
    for i in range(len(parts), -1, -1):
        node = root.joinpath(*parts[:i])
        if not node.is_dir():
            continue
        rest = [e.name for e in os.scandir(node) if e.name not in _ZARR_META]
        if rest:
            return
        _remove_entries(node, [e.name for e in os.scandir(node)], set())
        node.rmdir()
