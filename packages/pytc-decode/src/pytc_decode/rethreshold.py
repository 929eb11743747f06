"""A fragments output segmented block by block (``pytc-decode FRAGMENTS --block-size B``).

The segmentation at threshold t of a fragments volume and its merge history is each
fragment's region at t (the merges scored below t), the regions under ``min_size`` voxels
removed, the rest numbered 1..N by first voxel in C order: what the whole-volume
re-thresholding (:func:`pytc_decode.ws.segment_fragments`) writes, the same ids. Block by
block it takes two passes over the fragments, neither of which holds more than one block of
voxels:

1. each fragment's voxel count and first voxel (global C-order index): per block
   :func:`block_extents` (``np.unique``), added up over blocks by :func:`add_extents`
   (minimum of the first voxels);
2. :func:`threshold_tables` turns them and the history into one fragment → segment table
   per threshold (O(F) memory for F fragments: 8 B per fragment and threshold, plus 16 B per
   fragment for the extents), and each block is written through the tables.

The stage runs them as the three steps of a blockwise decode, so Slurm shares can too:
``label`` writes each block's extents, ``reduce`` adds them up and writes the tables,
``relabel`` writes the blocks.

Coordinates are global voxels (z, y, x) of the fragments volume.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pytc_core.bbox import BBox
from pytc_decode.agglomeration import merge_roots

__all__ = ["add_extents", "block_extents", "threshold_tables"]


def block_extents(labels: np.ndarray, block: BBox, volume_box: BBox
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ids of the (Z, Y, X) ``labels`` of ``block`` (sorted, 0 included when present),
    each one's first voxel in the block (global C-order index in ``volume_box``, int64) and
    its voxel count in the block (int64): one block's share of the fragments' extents."""
    ids, index, counts = np.unique(labels.reshape(-1), return_index=True, return_counts=True)
    coords = np.unravel_index(index, labels.shape)
    origin = [b - v for b, v in zip(block.start, volume_box.start, strict=True)]
    flat = np.ravel_multi_index(tuple(c + o for c, o in zip(coords, origin, strict=True)),
                                volume_box.shape)
    return ids, flat.astype(np.int64), counts.astype(np.int64)


def add_extents(ids: np.ndarray, block_first: np.ndarray, counts: np.ndarray,
                first: np.ndarray, sizes: np.ndarray) -> None:
    """Add one block's :func:`block_extents` to ``first`` (each id's lowest global C-order
    voxel index, ``np.iinfo(int64).max`` where unseen) and ``sizes`` (voxels), in place.
    Ids above ``first.size - 1`` raise ``IndexError``."""
    np.minimum.at(first, ids, block_first)
    np.add.at(sizes, ids, counts)


def threshold_tables(history: np.ndarray, first: np.ndarray, sizes: np.ndarray,
                     thresholds: Sequence[float], min_size: int = 0,
                     dtype: np.dtype = np.dtype(np.uint32)) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per threshold: (fragment → segment table ``(F + 1,)`` of ``dtype``, voxels per segment
    ``(N + 1,)``). The merges of ``history`` (``(M, 3)`` rows ``(absorbed, into, score)``,
    scores non-decreasing) scored below the threshold join fragments; a segment under
    ``min_size`` voxels maps to 0; the others are numbered 1..N by their first voxel
    (``first``, global C-order index; 0 → 0). ``sizes``: voxels per fragment."""
    n = first.size - 1
    out = []
    for t in thresholds:
        parent = merge_roots(history, n, t)
        seg_size = np.bincount(parent, weights=sizes, minlength=n + 1).astype(np.int64)
        seg_first = np.full(n + 1, np.iinfo(np.int64).max, np.int64)
        np.minimum.at(seg_first, parent[1:], first[1:])
        keep = (parent == np.arange(n + 1)) & (seg_size >= max(min_size, 1))
        keep[0] = False
        kept = np.flatnonzero(keep)
        ordered = kept[np.argsort(seg_first[kept], kind="stable")]
        final = np.zeros(n + 1, np.int64)
        final[ordered] = np.arange(1, ordered.size + 1)
        counts = np.zeros(ordered.size + 1, np.int64)
        counts[1:] = seg_size[ordered]
        out.append((final[parent].astype(dtype), counts))
    return out
