"""Blockwise affinity connected components, identical to decoding the whole volume at once.

Three steps, each over the same block plan (:func:`pytc_core.plan_blocks`), so a local loop
and Slurm array tasks run the same per-block functions:

1. **label** (:func:`label_block`): each block is labelled on its own with
   :func:`pytc_decode.cc` kernels; it records a :class:`BlockSummary`: sizes and first voxel
   (global C-order index) of its local segments, its labels on all six faces and which of its
   low-face edges (its own channels at local index 0, linking to the previous block) are on.
   A voxel whose only edges may cross a face becomes a one-voxel "candidate" segment.
2. **reduce** (:func:`reduce_blocks_streaming`, one summary at a time): a union-find joins the local segments across
   every face, drops candidates that nothing joined and segments under ``min_size``, and
   numbers the rest by first voxel in C order, as the whole-volume decode does.
3. **relabel** (:func:`relabel_block`): each block's local ids are mapped to the final ids.

Coordinates are global voxels (z, y, x); affinities are channels first.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit

from pytc_core.bbox import BBox
from pytc_core.blocks import plan_blocks
from pytc_decode.cc import (
    check_counts,
    kernel_mask,
    label_array,
    label_dtype,
    label_slab,
    merge_slabs,
    prepare_affinities,
    value_scale,
)
from pytc_decode.kernels import map_workers, remap, thread_map, union_pairs

__all__ = [
    "BlockSummary",
    "BlockTables",
    "affinity_cc_blockwise",
    "label_block",
    "reduce_blocks",
    "reduce_blocks_streaming",
    "relabel_block",
]


@dataclass
class BlockSummary:
    """What the reduce step needs from one labelled block (all planes in local ids)."""

    bbox: BBox
    #: voxels per local id (index 0 = background), int64
    sizes: np.ndarray
    #: global C-order index of each local segment's first voxel (index 0 unused), int64
    first: np.ndarray
    #: labels on the low faces: z (Y, X), y (Z, X), x (Z, Y)
    low_labels: tuple[np.ndarray, np.ndarray, np.ndarray]
    #: labels on the high faces, same shapes
    high_labels: tuple[np.ndarray, np.ndarray, np.ndarray]
    #: low-face edges above the threshold (the edges to the previous block), same shapes
    low_edges: tuple[np.ndarray, np.ndarray, np.ndarray]

    @property
    def num_labels(self) -> int:
        return self.sizes.size - 1

    def to_bytes(self) -> bytes:
        """Serialise as compressed .npz bytes (one file per block in the scratch folder)."""
        buf = io.BytesIO()
        arrays: dict[str, Any] = {"start": np.array(self.bbox.start), "stop": np.array(self.bbox.stop),
                                  "sizes": self.sizes, "first": self.first}
        for name in ("low_labels", "high_labels", "low_edges"):
            for axis, plane in zip("zyx", getattr(self, name), strict=True):
                arrays[f"{name}_{axis}"] = plane
        np.savez_compressed(buf, **arrays)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> BlockSummary:
        with np.load(io.BytesIO(data)) as f:
            planes = {name: tuple(f[f"{name}_{axis}"] for axis in "zyx")
                      for name in ("low_labels", "high_labels", "low_edges")}
            return cls(BBox(tuple(f["start"]), tuple(f["stop"])), f["sizes"], f["first"], **planes)


@njit(cache=True, nogil=True)
def _sizes_and_first(lab, num, origin, vol_shape):
    """Voxel count and global C-order first voxel per local id (ids are in first-voxel order)."""
    sizes = np.zeros(num + 1, dtype=np.int64)
    first = np.full(num + 1, -1, dtype=np.int64)
    Z, Y, X = lab.shape
    nxt = 1
    for z in range(Z):
        for y in range(Y):
            for x in range(X):
                v = np.int64(lab[z, y, x])
                sizes[v] += 1
                if v == nxt:
                    first[v] = ((origin[0] + z) * vol_shape[1] + origin[1] + y) * vol_shape[2] \
                        + origin[2] + x
                    nxt += 1
    return sizes, first


@njit(cache=True, nogil=True)
def _label_block_serial(aff, t, hi, mask, use_mask, lo_ext, hi_ext, lab, parent, origin,
                        vol_shape):
    """Label a block on one thread; the final-id pass also counts sizes and first voxels.

    Returns (number of segments, NaN count, out-of-range count, sizes, first) as
    :func:`_sizes_and_first`.
    """
    _, Z, Y, X = aff.shape
    n, nan, outside = label_slab(aff, t, hi, mask, use_mask, 0, Z, lo_ext, hi_ext, lab, parent,
                                  0)
    bounds = np.array([0, Z], dtype=np.int64)
    _, num = merge_slabs(aff, t, bounds, np.array([np.int64(n)]), lab, parent)
    sizes = np.zeros(num + 1, dtype=np.int64)
    first = np.full(num + 1, -1, dtype=np.int64)
    nxt = 1
    for z in range(Z):
        for y in range(Y):
            for x in range(X):
                v = lab[z, y, x]
                if v != 0:
                    f = parent[v]
                    lab[z, y, x] = f
                    sizes[f] += 1
                    if f == nxt:
                        first[f] = ((origin[0] + z) * vol_shape[1] + origin[1] + y) \
                            * vol_shape[2] + origin[2] + x
                        nxt += 1
    sizes[0] = Z * Y * X - sizes[1:].sum()
    return num, nan, outside, sizes, first


def label_block(affinities: np.ndarray, threshold: float, bbox: BBox, volume_box: BBox,
                mask: np.ndarray | None = None, *, threads: int | None = None,
                out: np.ndarray | None = None) -> tuple[np.ndarray, BlockSummary]:
    """Label one block's (C, Z, Y, X) affinities with local ids; return (labels, summary).

    ``bbox`` is the block and ``volume_box`` the whole decoded box, global voxels (z, y, x);
    faces inside ``volume_box`` may carry edges to neighbouring blocks. ``threads=1`` labels
    on the calling thread only (for blocks labelled concurrently in a thread pool); ``out``
    (uint32, the block's shape) receives the labels instead of a new array.
    """
    aff, t = prepare_affinities(np.asarray(affinities)[:3], threshold)
    if aff.shape[1:] != bbox.shape:
        raise ValueError(f"block data {aff.shape[1:]} does not match block {bbox}")
    lo_ext = np.array([a > b for a, b in zip(bbox.start, volume_box.start, strict=True)])
    hi_ext = np.array([a < b for a, b in zip(bbox.stop, volume_box.stop, strict=True)])
    origin = np.array([a - b for a, b in zip(bbox.start, volume_box.start, strict=True)])
    vol_shape = np.array(volume_box.shape)
    if threads == 1 and label_dtype(bbox.size) == np.uint32:
        lab = out if out is not None and out.dtype == np.uint32 else np.empty(bbox.shape, np.uint32)
        parent = np.empty(bbox.size + 1, np.uint32)
        m, use_mask = kernel_mask(mask, bbox.shape)
        num, nan, outside, sizes, first = _label_block_serial(
            aff, t, aff.dtype.type(value_scale(aff.dtype)), m, use_mask, lo_ext, hi_ext, lab, parent, origin,
            vol_shape)
        del parent
        check_counts(nan, outside)
    else:
        lab, num = label_array(aff, t, mask, lo_ext, hi_ext)
        sizes, first = _sizes_and_first(lab, num, origin, vol_shape)
        if out is not None:
            out[...] = lab
    low_edges = (aff[0, 0] > t, aff[1, :, 0] > t, aff[2, :, :, 0] > t)
    summary = BlockSummary(
        bbox, sizes, first,
        low_labels=(lab[0].copy(), lab[:, 0].copy(), lab[:, :, 0].copy()),
        high_labels=(lab[-1].copy(), lab[:, -1].copy(), lab[:, :, -1].copy()),
        low_edges=low_edges,
    )
    return lab, summary


@dataclass
class BlockTables:
    """The reduce step's result: per block, local id → final id (index 0 → 0)."""

    #: one table per block start (z, y, x)
    tables: dict[tuple[int, ...], np.ndarray]
    num_segments: int
    #: voxels per final id (index 0 = background)
    sizes: np.ndarray

    def table(self, bbox: BBox) -> np.ndarray:
        return self.tables[tuple(bbox.start)]


def reduce_blocks(summaries: Sequence[BlockSummary], volume_box: BBox, min_size: int = 0,
                  dtype: np.dtype | None = None) -> BlockTables:
    """Resolve the equivalences across block faces and number the segments globally.

    Segments are joined across a face where the higher block's low-face edge is on and both
    voxels are labelled; one-voxel candidates that nothing joined become background, as do
    segments under ``min_size`` voxels. Final ids are 1..N by first voxel in C order of the
    whole ``volume_box``, so the result equals the whole-volume decode. The summaries in
    memory are streamed as :func:`reduce_blocks_streaming` does.
    """
    return reduce_blocks_streaming([s.bbox for s in summaries], summaries.__getitem__,
                                   volume_box, min_size, dtype)


def reduce_blocks_streaming(blocks: Sequence[BBox], load: Callable[[int], BlockSummary],
                            volume_box: BBox, min_size: int = 0,
                            dtype: np.dtype | None = None) -> BlockTables:
    """:func:`reduce_blocks` reading one summary at a time: ``load(i)`` is block ``blocks[i]``'s.

    Each summary is loaded once, in C order of the block starts, and dropped after use except
    for its high-face label planes, which wait for the one block above them (at most one slab
    of blocks' planes at a time). Union-find runs over the segments touching a face only.

    Memory: with S segments in all blocks, F of them touching a face on a joined pair and P
    distinct face pairs, about 24 B x S (per segment: voxel count, first voxel, final id;
    numbering by first voxel in C order of the volume needs them all) + 40 B x F + 16 B x P,
    plus one slab of blocks' face planes (4 B per face voxel) and one block's summary.
    """
    order = sorted(range(len(blocks)), key=lambda i: tuple(blocks[i].start))
    n = len(order)
    offsets = np.zeros(n + 1, dtype=np.int64)  # provisional global id = offset + local id
    sizes_parts: list[np.ndarray] = []
    first_parts: list[np.ndarray] = []
    waiting: dict[tuple[int, ...], tuple[np.ndarray, int]] = {}  # high planes not yet used
    pairs: list[np.ndarray] = []
    for k, i in enumerate(order):
        s = load(i)
        if tuple(s.bbox.start) != tuple(blocks[i].start):
            raise ValueError(f"summary of block {s.bbox} given for block {blocks[i]}")
        o = int(offsets[k])
        offsets[k + 1] = o + s.num_labels
        sizes_parts.append(np.asarray(s.sizes[1:], np.int64))
        first_parts.append(np.asarray(s.first[1:], np.int64))
        for axis in range(3):
            if s.bbox.start[axis] > volume_box.start[axis]:
                key = (axis, s.bbox.start[axis],
                       *(s.bbox.start[j] for j in range(3) if j != axis))
                below = waiting.pop(key, None)
                if below is None:
                    raise ValueError(f"block {s.bbox} has no neighbour below on axis {axis}: "
                                     "the summaries of every block are needed")
                theirs, o_below = below
                mine = s.low_labels[axis]
                on = s.low_edges[axis] & (mine != 0) & (theirs != 0)
                if on.any():
                    ab = np.stack([mine[on].astype(np.int64) + o,
                                   theirs[on].astype(np.int64) + o_below], axis=1)
                    pairs.append(np.unique(ab, axis=0))
            if s.bbox.stop[axis] < volume_box.stop[axis]:
                key = (axis, s.bbox.stop[axis], *(s.bbox.start[j] for j in range(3) if j != axis))
                waiting[key] = (s.high_labels[axis], o)
        del s
    total = int(offsets[-1])
    sizes = np.zeros(total + 1, dtype=np.int64)
    first = np.zeros(total + 1, dtype=np.int64)
    if sizes_parts:
        sizes[1:] = np.concatenate(sizes_parts)
        first[1:] = np.concatenate(first_parts)
    del sizes_parts, first_parts
    ab = np.concatenate(pairs) if pairs else np.zeros((0, 2), np.int64)
    del pairs
    # union-find over the F face segments only (compact ids 0..F-1)
    face_ids, compact = np.unique(ab, return_inverse=True)
    compact = compact.reshape(ab.shape)
    parent = np.arange(face_ids.size, dtype=np.int64)
    union_pairs(parent, compact[:, 0].copy(), compact[:, 1].copy())
    face_size = np.bincount(parent, weights=sizes[face_ids],
                            minlength=face_ids.size).astype(np.int64)
    face_first = np.full(face_ids.size, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(face_first, parent, first[face_ids])
    # a segment's component: itself, or the root of its face component (a global id)
    comp_size, comp_first = sizes, first  # updated in place for face components
    is_root = np.ones(total + 1, dtype=bool)
    is_root[face_ids] = parent == np.arange(face_ids.size)
    comp_size[face_ids] = face_size  # valid at roots only
    comp_first[face_ids] = face_first
    linked = np.zeros(total + 1, dtype=bool)
    linked[face_ids] = True
    keep = is_root & (comp_size >= max(min_size, 1))
    keep &= ~((comp_size == 1) & ~linked)  # unjoined candidates are background
    keep[0] = False
    kept = np.flatnonzero(keep)
    ranked = kept[np.argsort(comp_first[kept], kind="stable")]
    out_dtype = np.dtype(dtype) if dtype is not None else label_dtype(volume_box.size)
    global_table = np.zeros(total + 1, dtype=out_dtype)
    global_table[ranked] = np.arange(1, ranked.size + 1)
    global_table[face_ids] = global_table[face_ids[parent]]
    final_sizes = np.zeros(ranked.size + 1, dtype=np.int64)
    final_sizes[1:] = comp_size[ranked]
    tables: dict[tuple[int, ...], np.ndarray] = {}
    for k, i in enumerate(order):
        t = np.zeros(int(offsets[k + 1] - offsets[k]) + 1, dtype=out_dtype)
        t[1:] = global_table[offsets[k] + 1:offsets[k + 1] + 1]
        tables[tuple(blocks[i].start)] = t
    return BlockTables(tables, int(ranked.size), final_sizes)


def relabel_block(labels: np.ndarray, table: np.ndarray) -> np.ndarray:
    """A block's (Z, Y, X) local ids mapped to final ids through ``table`` (a new array)."""
    return remap(labels, table)


def affinity_cc_blockwise(affinities: np.ndarray, threshold: float = 0.5, min_size: int = 0,
                          block_size: Sequence[int] | int = 64, *,
                          mask: np.ndarray | None = None) -> np.ndarray:
    """In-memory twin of the blockwise decode: same result as :func:`affinity_cc`.

    ``block_size`` in voxels (z, y, x). Used by tests and benchmarks; the CLI runs the same
    three steps on volumes block by block.
    """
    aff, _ = prepare_affinities(np.asarray(affinities)[:3], threshold)
    volume_box = BBox.from_shape(aff.shape[1:])
    blocks = plan_blocks(volume_box, block_size)
    labels = np.zeros(aff.shape[1:], dtype=label_dtype(volume_box.size))
    workers = map_workers(len(blocks))

    def label_one(block: BBox) -> BlockSummary:
        m = None if mask is None else mask[block.slices]
        return label_block(aff[(slice(None), *block.slices)], threshold, block, volume_box, m,
                           threads=1 if workers > 1 else None, out=labels[block.slices])[1]

    def relabel_one(block: BBox) -> None:
        view = labels[block.slices]
        remap(view, tables.table(block), out=view)

    # the kernels release the GIL
    summaries = thread_map(label_one, blocks, name="pytc-cc-label")
    tables = reduce_blocks(summaries, volume_box, min_size, labels.dtype)
    thread_map(relabel_one, blocks, name="pytc-cc-relabel")
    return labels
