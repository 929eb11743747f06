"""Read a few numbers from a Lightning ``.ckpt`` without torch and without running its pickle.

``status`` needs the step and the best validation score of many runs, fast, on a login node
that may not have torch (pytc-launch needs only pytc-core). A checkpoint written by
``torch.save`` is a zip holding ``<name>/data.pkl`` and one file per tensor storage. This
module unpickles ``data.pkl`` with a restricted unpickler: every class is replaced by an
inert placeholder (no code from the file runs), and tensors are rebuilt as numpy arrays from
their storage files, which is all scalars like ``best_model_score`` need.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["read_checkpoint"]

_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
    "BFloat16Storage": None,  # no numpy dtype: read as float32 from the upper 16 bits
}


class _Placeholder:
    """Stands for any object the checkpoint pickled (an optimizer, a dataclass, ...)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __call__(self, *args: Any, **kwargs: Any) -> _Placeholder:
        return _Placeholder(*args)


class _StorageType:
    def __init__(self, name: str) -> None:
        self.name = name


def _rebuild_tensor(storage: Any, offset: int, size: tuple[int, ...], stride: tuple[int, ...],
                    *args: Any) -> Any:
    """A tensor as a numpy array: ``size`` elements with ``stride`` from ``storage[offset:]``."""
    if not isinstance(storage, np.ndarray):
        return _Placeholder()
    size, stride = tuple(size), tuple(stride)
    if any(s == 0 for s in size):
        return np.zeros(size, storage.dtype)
    last = offset + sum((n - 1) * st for n, st in zip(size, stride, strict=True))
    if offset < 0 or last >= len(storage):
        return _Placeholder()
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=size,
                                           strides=[st * storage.itemsize for st in stride])
    return view.copy()


class _Unpickler(pickle.Unpickler):
    def __init__(self, fh: Any, archive: zipfile.ZipFile, prefix: str) -> None:
        super().__init__(fh)
        self.archive, self.prefix = archive, prefix

    def find_class(self, module: str, name: str) -> Any:
        if module == "collections" and name == "OrderedDict":
            import collections

            return collections.OrderedDict
        if module.startswith("torch") and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch" and name.endswith("Storage"):
            return _StorageType(name)
        if module == "builtins" and name in ("set", "frozenset", "slice", "complex"):
            return {"set": set, "frozenset": frozenset, "slice": slice, "complex": complex}[name]
        return _Placeholder

    def persistent_load(self, pid: Any) -> Any:
        # ("storage", storage_type, key, location, numel)
        if not isinstance(pid, tuple) or len(pid) < 5 or pid[0] != "storage":
            return None
        storage_type, key = pid[1], pid[2]
        name = storage_type.name if isinstance(storage_type, _StorageType) else ""
        if name not in _DTYPES:
            return None
        try:
            raw = self.archive.read(f"{self.prefix}data/{key}")
        except KeyError:
            return None
        if name == "BFloat16Storage":
            upper = np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16
            return upper.view(np.float32)
        return np.frombuffer(raw, dtype=_DTYPES[name])


def read_checkpoint(path: str | Path) -> dict[str, Any] | None:
    """The top-level dict of a ``torch.save`` zip checkpoint, tensors as numpy arrays and
    every other object as an inert placeholder; None when the file is not such a checkpoint
    (missing, being written, or the legacy non-zip format)."""
    try:
        with zipfile.ZipFile(path) as archive:
            pkl = next((n for n in archive.namelist() if n.endswith("/data.pkl")), None)
            if pkl is None:
                return None
            prefix = pkl[: -len("data.pkl")]
            with archive.open(pkl) as fh:
                data = _Unpickler(fh, archive, prefix).load()
    except (OSError, zipfile.BadZipFile, pickle.UnpicklingError, EOFError, ValueError,
            TypeError, AttributeError, IndexError, KeyError):
        return None
    return data if isinstance(data, dict) else None
