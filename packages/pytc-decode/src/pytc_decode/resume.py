"""The identity of a blockwise run, so a resumed run never reuses blocks of another one.

A blockwise decode keeps its per-block files in a scratch folder beside the output. The
folder belongs to one run: the whole resolved config, the block plan and the identity of the
inputs (affinities and mask). That description is stored in the folder as ``run.json`` by
the first step that creates it; every later step (a resumed run, a Slurm share, the reduce,
the relabel) compares its own description with it and refuses on a difference.

An input's identity is its URI, shape, dtype, voxel size and offset, plus a fingerprint of
what is stored: for a local file, its size and modification time (ns); for a local directory
(precomputed layer, zarr array), the number, total size and latest modification time of its
files. A mask or an affinity volume rewritten at the same URI is therefore a different input.
Remote inputs (gs://, s3://, http) are identified by their metadata only; an HDF5 dataset in
the same file as the output is identified by its metadata and storage layout (writing the
output changes the file's modification time).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pytc_core.errors import UserError
from pytc_core.files import write_atomic
from pytc_core.volume import Volume, parse_uri
from pytc_core.volume.file_lock import file_lock

__all__ = ["RUN_FILE", "check_run", "input_identity", "run_key"]

RUN_FILE = "run.json"


def _local_storage(uri: str) -> Path | None:
    loc = parse_uri(uri)
    if loc.format == "precomputed":
        from pytc_core.volume.precomputed import local_layer_path

        return local_layer_path(uri)
    if loc.format == "zarr" and loc.path is not None:
        return loc.path / loc.inner if loc.inner else loc.path
    return loc.path


def _bookkeeping(name: str) -> bool:
    """pytc's own files in or beside a volume (config, scratch, markers, leases) and
    write_atomic's temporaries: not the volume's data."""
    return name.startswith("pytc_") or ".tmp" in name


def _fingerprint(path: Path) -> dict[str, int]:
    """Size and modification time of a file, or of every file under a directory."""
    if path.is_file():
        st = path.stat()
        return {"files": 1, "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}
    files = size = latest = 0
    for root, dirs, names in os.walk(path):
        dirs[:] = [d for d in dirs if not _bookkeeping(d)]
        for name in names:
            if _bookkeeping(name):
                continue
            st = os.stat(os.path.join(root, name))
            files += 1
            size += st.st_size
            latest = max(latest, st.st_mtime_ns)
    return {"files": files, "bytes": size, "mtime_ns": latest}


def input_identity(vol: Volume, output_uri: str | None = None) -> dict[str, Any]:
    """What identifies the data of ``vol`` (see the module docstring)."""
    ident: dict[str, Any] = {
        "uri": vol.uri, "shape": list(vol.shape), "dtype": str(vol.dtype),
        "voxel_size": [float(v) for v in vol.voxel_size], "offset": [int(v) for v in vol.offset],
    }
    path = _local_storage(vol.uri)
    if path is None or not path.exists():
        return ident
    ident["uri"] = str(path.resolve()) + (f":{parse_uri(vol.uri).inner}"
                                          if parse_uri(vol.uri).format == "hdf5" else "")
    out_path = None if output_uri is None else _local_storage(output_uri)
    shared = out_path is not None and path.is_file() and out_path.resolve() == path.resolve()
    if shared and parse_uri(vol.uri).format == "hdf5":
        import h5py

        with file_lock(path), h5py.File(path, "r") as f:
            dset = f[parse_uri(vol.uri).inner]
            ident["storage"] = {"chunks": list(dset.chunks or ()),
                                "compression": str(dset.compression),
                                "address": int(dset.id.get_offset() or 0)}
        return ident
    ident["storage"] = _fingerprint(path)
    return ident


def run_key(description: dict[str, Any]) -> str:
    """The description as canonical JSON text (the marker files are named by its hash)."""
    return json.dumps(description, sort_keys=True, indent=1)


def check_run(workdir: Path, key: str, *, create: bool) -> None:
    """Make sure the scratch folder ``workdir`` belongs to the run described by ``key``.

    With ``create``, a folder without ``run.json`` gets ours; one of another run is refused
    with a one-line UserError naming the options that differ.
    """
    path = workdir / RUN_FILE
    if not path.exists():
        if create:
            write_atomic(path, key.encode())
        return
    stored = path.read_text()
    if stored == key:
        return
    try:
        old, new = json.loads(stored), json.loads(key)
        diff = _differences(old, new)
    except ValueError:
        diff = [RUN_FILE]
    raise UserError(f"the blockwise scratch folder {workdir} holds blocks of a run with other "
                    f"options or inputs (differs in: {', '.join(diff[:4])})",
                    "pass --overwrite to start afresh, or rerun with the same options and inputs")


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for k in sorted(set(old) | set(new)):
            if k not in old or k not in new:
                out.append(prefix + k)
            else:
                out += _differences(old[k], new[k], prefix + k + ".")
        return out
    return [] if old == new else [prefix.rstrip(".")]
