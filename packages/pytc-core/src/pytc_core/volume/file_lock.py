"""One lock per file for the single-file formats (HDF5, TIFF, ``.npy``) within a process.

Read-ahead and write-behind threads of one run, or an input and an output that are two
datasets of one HDF5 file, must not open the file at the same time (h5py refuses to open a
file ``r+`` that another handle holds read-only). Every read, write, create and delete of such
a file holds its lock, keyed by the resolved path, so they run one after another. This is
within one process only: HDF5 file locking is not relied on (many clusters turn it off), and
separate processes writing one such file are refused by the runs layer
(:func:`pytc_core.output.check_shareable`).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

__all__ = ["file_lock"]

_LOCKS: dict[str, threading.RLock] = {}
_GUARD = threading.Lock()


def file_lock(path: str | os.PathLike[str] | Path) -> threading.RLock:
    """The process-wide re-entrant lock of the file at ``path`` (symlinks resolved)."""
    key = os.path.realpath(path)
    with _GUARD:
        lock = _LOCKS.get(key)
        if lock is None:
            lock = _LOCKS[key] = threading.RLock()
        return lock
