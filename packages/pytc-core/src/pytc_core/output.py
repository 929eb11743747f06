"""What is at an output path, whether pytc may create or replace it, and removing only that.

Every stage writes its outputs through these rules (see :mod:`pytc_core.output_run` for a
run's whole life: lease, run record, completion, cleanup):

- :func:`inspect_output` recognises what is at a URI: nothing, a volume of the URI's own
  format that pytc can read (a precomputed layer: a directory whose ``info`` parses plus its
  chunk and ``pytc_*`` files; a ``.npy`` file; one HDF5 dataset; one zarr array or OME-Zarr
  image group; a TIFF file),
  or anything else ("foreign": a text file, a directory of other files, an HDF5 group, a zarr
  group ...), which pytc never replaces, ``--overwrite`` or not.
- :func:`check_output_target` runs before any input data is read: the output must not be (or
  lie inside, or contain) an input, its directory must be creatable and writable, and what is
  there must be absent or a recognised volume.
- :func:`remove_output` deletes only the recognised volume: the layer's files (never other
  files in the directory), one HDF5 dataset (never the whole file), one zarr array.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pytc_core.errors import UserError
from pytc_core.volume import VolumeLocation, backend, parse_uri, sidecar_path

__all__ = [
    "LEASE_NAME",
    "RECORD_NAME",
    "OutputState",
    "check_creatable",
    "check_not_an_input",
    "check_output_target",
    "check_file_target",
    "inspect_output",
    "remove_output",
]

#: the lease file (:mod:`pytc_core.lease`) and run record (:mod:`pytc_core.output_run`) names
LEASE_NAME = "pytc_lease"
RECORD_NAME = "pytc_run.json"

Kind = Literal["absent", "volume", "foreign"]
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


@dataclass(frozen=True)
class OutputState:
    """What is at an output URI: ``absent``, a recognised ``volume``, or ``foreign``.

    ``what`` describes it for messages (e.g. ``"a regular file"``); ``pytc_only`` is true for
    a directory holding only pytc's own files (a lease, a run record, scratch) and no volume.
    """

    uri: str
    kind: Kind
    what: str
    pytc_only: bool = False


def _local_base(loc: VolumeLocation) -> Path | None:
    """The file or directory an output lives in (the layer dir, zarr store, file), if local."""
    if loc.format == "precomputed":
        from pytc_core.volume.precomputed import local_layer_path

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
    import h5py

    try:
        if not h5py.is_hdf5(path):
            return OutputState(uri, "foreign", f"{path} is a file that is not HDF5")
        with h5py.File(path, "r") as fh:
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
    from pytc_core.volume.ngff import level_paths

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
        return _inspect_precomputed(uri, _local_base(loc))
    if loc.format == "hdf5":
        return _inspect_hdf5(uri, _file(loc), loc.inner)
    if loc.format == "zarr":
        return _inspect_zarr(uri, _file(loc), loc.inner)
    return _inspect_file(uri, _file(loc), loc.format)


def _write_problem(path: Path) -> str | None:
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
    base = _local_base(loc)
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
    problem = _write_problem(directory)
    if problem is None and probe == base and base.is_file() and not os.access(base, os.W_OK):
        problem = f"{base} is read-only"
    if problem is not None:
        raise UserError(f"cannot write {uri}: {problem}",
                        "choose an output in a writable directory")


def _identity(loc: VolumeLocation) -> tuple[str, Path | None, tuple[str, ...]]:
    base = _local_base(loc)
    if base is None:
        return ("remote", None, (loc.uri.rstrip("/"),))
    real = Path(os.path.realpath(base))
    inner = tuple(p for p in loc.inner.split("/") if p) if loc.format in ("hdf5", "zarr") else ()
    return ("local", real, inner)


def check_not_an_input(output_uri: str, input_uris: Sequence[str | None]) -> None:
    """UserError when the output is one of the inputs, lies inside one, or contains one."""
    out = _identity(parse_uri(output_uri))
    for in_uri in input_uris:
        if not in_uri:
            continue
        inp = _identity(parse_uri(in_uri))
        if out[0] == "remote" or inp[0] == "remote":
            if out == inp:
                raise UserError(f"output {output_uri} is the input {in_uri}",
                                "write the result to another output")
            continue
        o, i = out[1], inp[1]
        assert o is not None and i is not None
        if o == i:
            k = min(len(out[2]), len(inp[2]))
            if out[2][:k] == inp[2][:k]:  # same dataset/array, or one inside the other
                if out[2] == inp[2]:
                    raise UserError(f"output {output_uri} is the input {in_uri}",
                                    "write the result to another output")
                raise UserError(f"output {output_uri} overlaps the input {in_uri}",
                                "write the result to another output")
            continue
        if i in o.parents:
            raise UserError(f"output {output_uri} lies inside the input {in_uri}",
                            "write the result to another output")
        if o in i.parents:
            raise UserError(f"output {output_uri} contains the input {in_uri}",
                            "write the result to another output")


def check_output_target(uri: str, *, inputs: Sequence[str | None] = (),
                        overwrite: bool = False) -> OutputState:
    """The checks every stage runs on its output before it reads any input data.

    UserError when the output is an input, cannot be created, or holds anything pytc does
    not recognise as a volume of its format; with ``overwrite`` False also when it holds a
    volume (see :class:`pytc_core.output_run.OutputRun` for resuming a pytc run instead).
    Returns what is there.
    """
    check_creatable(uri)
    check_not_an_input(uri, inputs)
    state = inspect_output(uri)
    if state.kind == "foreign":
        raise UserError(f"output {uri} is not a volume pytc can replace: {state.what}",
                        "choose another output; pytc never deletes files it did not write")
    if state.kind == "volume" and not overwrite:
        raise UserError(f"output {uri} already exists ({state.what})",
                        "pass --overwrite to replace it, or choose another output")
    return state


def check_file_target(path: str | os.PathLike[str], *, overwrite: bool = False,
                      what: str = "output file", inputs: Sequence[str | None] = (),
                      recognise: Callable[[Path], bool] | None = None) -> Path:
    """Checks for a plain output file (a CSV, a JSON) before any compute: not an input, not a
    directory, a creatable writable parent, and an existing file only with ``overwrite`` and,
    given ``recognise``, only when ``recognise(path)`` says pytc wrote it. Creates nothing."""
    p = Path(os.path.abspath(os.path.expanduser(path)))
    if p.is_dir():
        raise UserError(f"{what} {path} is a directory", "give a file name")
    probe = p.parent
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"cannot create {what} {path}: {probe} is a file, not a directory",
                        "choose a path whose parent is a directory")
    problem = _write_problem(probe)
    if problem is None and p.exists() and not os.access(p, os.W_OK):
        problem = f"{p} is read-only"
    if problem is not None:
        raise UserError(f"cannot write {what} {path}: {problem}", "choose a writable location")
    check_not_an_input(str(p), inputs)
    if p.exists():
        if not overwrite:
            raise UserError(f"{what} {path} already exists", "pass --overwrite to replace it")
        if recognise is not None and not recognise(p):
            raise UserError(f"{path} exists and was not written by pytc as {what}",
                            "choose another path; --overwrite replaces only pytc's own file")
    return p


def _remove_entries(directory: Path, names: Iterable[str], keep: set[str]) -> None:
    import shutil

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


def remove_output(uri: str, *, keep_lease: bool = True, remove_empty_file: bool = False) -> None:
    """Delete the recognised volume at ``uri`` and pytc's files about it, nothing else.

    UserError when something other than a recognised volume is there. A precomputed layer
    loses its info, scales and ``pytc_*`` files (the directory goes when empty); an HDF5
    output loses its dataset (the file, only with ``remove_empty_file`` and when no dataset
    is left); a zarr output its array. The lease file stays unless ``keep_lease`` is False.
    """
    state = inspect_output(uri)
    if state.kind == "foreign":
        raise UserError(f"refusing to delete {uri}: {state.what}",
                        "pytc deletes only volumes it recognises; remove it yourself if you mean to")
    loc = parse_uri(uri)
    keep = {LEASE_NAME} if keep_lease else set()
    base = _local_base(loc)
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
        if keep_lease and p.name.endswith("." + LEASE_NAME):
            continue
        if p.is_dir():
            import shutil

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
        from pytc_core.volume.npy import npy_sidecar

        npy_sidecar(path).unlink(missing_ok=True)


def _hdf5_is_empty(path: Path) -> bool:
    import h5py

    try:
        with h5py.File(path, "r") as fh:
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
