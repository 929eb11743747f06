"""A blockwise decode's per-block scratch files: block-local labels, compressed.

The label step keeps each block's local labels until the relabel step maps them to final ids.
They are stored one compressed ``.npz`` file per block, in the smallest unsigned dtype that
holds the block's largest local id (a 64³ block never needs more than uint32, usually uint16),
never as an uncompressed copy of the output: a segmentation's scratch is a small fraction of a
byte per voxel (``bench/bench_decode_scale.py`` measures it). Both the cc and ws blockwise
steps write and read them through :func:`save_block_labels` / :func:`load_block_labels`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import overload

import numpy as np

from pytc_core.bbox import BBox
from pytc_core.files import write_atomic

__all__ = ["LABELS_SUFFIX", "BlockFiles", "load_block_labels", "save_block_labels", "smallest_label_dtype"]

#: the file suffix of a block's scratch labels
LABELS_SUFFIX = ".npz"


def smallest_label_dtype(max_id: int) -> np.dtype:
    """The smallest unsigned integer dtype that holds ids 0..``max_id``."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if max_id <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.uint64)


def save_block_labels(path: Path, labels: np.ndarray) -> None:
    """Write a block's (Z, Y, X) local labels to ``path`` atomically, compressed, in the
    smallest dtype that holds them."""
    labels = np.asarray(labels)
    if labels.dtype.kind not in "ui" or (labels.size and labels.min() < 0):
        raise ValueError(f"block labels must be non-negative integers, got {labels.dtype}")
    small = labels.astype(smallest_label_dtype(int(labels.max()) if labels.size else 0),
                         copy=False)
    write_atomic(path, lambda fh: np.savez_compressed(fh, labels=small))


def load_block_labels(path: Path, dtype: np.dtype | None = None) -> np.ndarray:
    """A block's local labels written by :func:`save_block_labels` (as ``dtype`` if given)."""
    with np.load(path) as f:
        labels = f["labels"]
    return labels if dtype is None else labels.astype(dtype, copy=False)


class BlockFiles(Sequence[bytes]):
    """Blocks' summary files as a sequence of their bytes, each file read when indexed: a
    reduce step that takes one item at a time holds one summary in memory."""

    def __init__(self, blocks: Sequence[BBox], paths: Sequence[Path]) -> None:
        if len(blocks) != len(paths):
            raise ValueError("one summary file per block")
        #: the block of each file, global voxels (z, y, x)
        self.blocks = list(blocks)
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    @overload
    def __getitem__(self, index: int) -> bytes: ...

    @overload
    def __getitem__(self, index: slice) -> list[bytes]: ...

    def __getitem__(self, index: int | slice) -> bytes | list[bytes]:
        if isinstance(index, slice):
            return [p.read_bytes() for p in self.paths[index]]
        return self.paths[index].read_bytes()
