"""Atomic, durable file writes: write a temporary file beside the target, fsync it, then
``os.replace`` it and fsync the folder.

A reader (or a resumed run) sees either the old file or the complete new one, never a
partial write, also when several processes (Slurm array tasks) write beside each other.

Durability (after a node crash or power loss, not only a killed process): the data is
fsynced before the rename, so a marker written after a block's data never survives without
the data; on a local file system (ext4, xfs, btrfs, tmpfs...) the folder is fsynced after the
rename, so the new name itself is on disk when ``write_atomic`` returns. On network file
systems (NFS, SMB/CIFS, Lustre, GPFS, BeeGFS, CephFS...) the folder fsync is skipped: the
server commits a rename before it replies (NFS metadata operations are synchronous; the
parallel file systems journal them on their metadata servers), and the data fsync still
reaches the server before the rename. What a network file system promises beyond that (for
example NFS's close-to-open consistency for readers on other hosts) is its own.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["is_network_fs", "write_atomic"]

#: file system types (as in /proc/self/mounts) whose folders are not fsynced
NETWORK_FS = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "gpfs", "beegfs", "ceph", "glusterfs",
    "fuse.glusterfs", "fuse.sshfs", "fuse.cephfs", "fuse.s3fs", "fuse.gcsfuse", "9p", "afs",
    "panfs", "wekafs", "pvfs2", "orangefs", "ocfs2", "gfs2",
})
_NETWORK_BY_DEVICE: dict[int, bool] = {}


def _unescape(field: str) -> str:
    """A /proc/mounts path field with its octal escapes (``\\040`` for a space) decoded."""
    return field.encode().decode("unicode_escape") if "\\" in field else field


def is_network_fs(path: str | os.PathLike[str], mounts: str = "/proc/self/mounts") -> bool:
    """Whether ``path`` (an existing file or folder) lies on a network file system, from the
    longest mount point in ``mounts`` that contains it. False when that cannot be read."""
    real = os.path.realpath(path)
    best, fstype = "", ""
    try:
        with open(mounts) as fh:
            for line in fh:
                fields = line.split()
                if len(fields) < 3:
                    continue
                point = _unescape(fields[1])
                inside = real == point or real.startswith(point.rstrip("/") + "/")
                if inside and len(point) >= len(best):
                    best, fstype = point, fields[2]
    except OSError:
        return False
    return fstype in NETWORK_FS


def _fsync_folder(folder: Path) -> None:
    """fsync ``folder`` where its file system is local (see the module docstring)."""
    try:
        device = folder.stat().st_dev
        network = _NETWORK_BY_DEVICE.get(device)
        if network is None:
            network = _NETWORK_BY_DEVICE[device] = is_network_fs(folder)
        if network:
            return
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # a file system that cannot fsync a folder (EINVAL): nothing more to do
        pass
    finally:
        os.close(fd)


def write_atomic(path: str | os.PathLike[str], data: bytes | Callable[[BinaryIO], object]) -> Path:
    """Write ``data`` (bytes, or a function that writes to a binary file) to ``path`` atomically
    and durably (the data fsynced before the rename, the folder after it where local).

    Parent folders are created. Returns the path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.{threading.get_ident()}")
    try:
        with open(tmp, "wb") as fh:
            if callable(data):
                data(fh)
            else:
                fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_folder(path.parent)
    return path
