"""The blockwise ws reduce as an octree of agglomerations (abiss's freezing, every level).

Level 0 is each block on its own (the label step: :func:`pytc_decode.ws_blockwise.
ws_fragment_block` with ``max_threshold``): its fragments on faces shared with another block
are frozen, the merges it makes are the whole graph's (:func:`pytc_decode.agglomeration.
agglomerate_frozen`), and only its frozen regions and their edges go on. A group of level L
is a 2×2×2 cube of level L - 1 groups on the block grid (block index >> L); once all its
blocks are in, it joins its children's residual graphs and the edges across the faces between
them, freezes the regions on its own outer faces that have a neighbour, and agglomerates
again. The group covering the whole grid freezes nothing: its agglomeration ends the history.

Every level makes the flat agglomeration's merges, with the same rows (the agglomeration
names a region by its lowest fragment and breaks ties by the lowest fragment pair of an
edge: both depend only on which fragments the regions hold). Memory at a level: the residual
graphs of the groups not yet complete, which in octree (Morton) order of the blocks is a few
groups per level; regions left for the top are those on its three mid-planes, not all those
on block faces. Per fragment the reduce keeps its size, first voxel and region (24 B) and per
merge a row (24 B).

Names: a fragment's *global id* is the block's offset plus its local id (blocks in the order
read); a region is named by the global id of its fragment with the lowest first voxel (global
C-order index). Keys of edges are pairs of first voxels (lowest fragment pair of the edge).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pytc_core.bbox import BBox
from pytc_decode.agglomeration import (
    RegionGraph,
    agglomerate,
    agglomerate_frozen,
    join_seed_pieces,
    merge_roots,
    sum_groups,
)

__all__ = ["OctreeReduce", "morton_order"]

#: one block's face plane as the reduce keeps it: global fragment ids, their first voxels,
#: the affinities leaving through it (low planes only) and the fragments' seeds
_Plane = tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]


def morton_order(indices: Sequence[Sequence[int]]) -> list[int]:
    """Positions of block grid ``indices`` (z, y, x) sorted in octree (Morton) order."""
    def code(idx: Sequence[int]) -> int:
        out = 0
        for bit in range(max(int(i).bit_length() for i in idx) + 1):
            for a in range(3):
                out |= ((int(idx[a]) >> bit) & 1) << (3 * bit + (2 - a))
        return out

    return sorted(range(len(indices)), key=lambda k: code(indices[k]))


class _Grow:
    """A growable int64 array (amortised doubling)."""

    def __init__(self, fill: int = 0) -> None:
        self.data = np.full(1024, fill, np.int64)
        self.size = 0
        self.fill = fill

    def extend(self, values: np.ndarray) -> None:
        need = self.size + values.size
        if need > self.data.size:
            new = np.full(max(need, 2 * self.data.size), self.fill, np.int64)
            new[:self.size] = self.data[:self.size]
            self.data = new
        self.data[self.size:need] = values
        self.size = need

    def view(self) -> np.ndarray:
        return self.data[:self.size]


@dataclass
class _Edges:
    """Edges between regions or fragments (global ids), their sums, counts and keys (the
    lowest fragment pair they join, as first voxels)."""

    u: list[np.ndarray] = field(default_factory=list)
    v: list[np.ndarray] = field(default_factory=list)
    sums: list[np.ndarray] = field(default_factory=list)
    counts: list[np.ndarray] = field(default_factory=list)
    klo: list[np.ndarray] = field(default_factory=list)
    khi: list[np.ndarray] = field(default_factory=list)

    def add(self, other: _Edges) -> None:
        for name in ("u", "v", "sums", "counts", "klo", "khi"):
            getattr(self, name).extend(getattr(other, name))

    def append(self, u: np.ndarray, v: np.ndarray, sums: np.ndarray, counts: np.ndarray,
               klo: np.ndarray, khi: np.ndarray) -> None:
        self.u.append(u)
        self.v.append(v)
        self.sums.append(sums)
        self.counts.append(counts)
        self.klo.append(klo)
        self.khi.append(khi)

    def arrays(self) -> tuple[np.ndarray, ...]:
        def cat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
            return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)

        return (cat(self.u, np.int64), cat(self.v, np.int64), cat(self.sums, np.float64),
                cat(self.counts, np.int64), cat(self.klo, np.int64), cat(self.khi, np.int64))


@dataclass
class _Group:
    """A group of blocks in progress: what its complete children left."""

    expected: int
    arrived: int = 0
    edges: _Edges = field(default_factory=_Edges)
    #: frozen regions' names of the children (global ids)
    regions: list[np.ndarray] = field(default_factory=list)
    #: fragments on the blocks' outer faces, with the level at which each face is joined
    faces: list[tuple[int, np.ndarray]] = field(default_factory=list)


class OctreeReduce:
    """Feed level-0 block summaries (:meth:`add`, any order; octree order keeps the fewest
    groups open), then :meth:`finish` for the fragments and the history."""

    def __init__(self, volume_box: BBox, block_shape: Sequence[int], max_threshold: float
                 ) -> None:
        self.box = volume_box
        self.block = tuple(int(b) for b in block_shape)
        self.grid = tuple(-(-s // b) for s, b in zip(volume_box.shape, self.block, strict=True))
        self.top = max((g - 1).bit_length() for g in self.grid)
        self.threshold = max_threshold
        self.first = _Grow(fill=np.iinfo(np.int64).max)
        self.sizes = _Grow()
        self.parent = _Grow()  # region of each fragment (union-find over the rows)
        self.parent.extend(np.zeros(1, np.int64))
        self.first.extend(np.zeros(1, np.int64))
        self.sizes.extend(np.zeros(1, np.int64))
        self.offsets: dict[tuple[int, int, int], int] = {}
        self.counts: dict[tuple[int, int, int], int] = {}
        self.rows: list[np.ndarray] = []
        self.groups: dict[tuple[int, ...], _Group] = {}
        # one block's face plane waiting for the block on its other side (a _Plane)
        self.pending: dict[tuple[int, ...], _Plane] = {}
        self.peak_regions = 0
        self.peak_edges = 0

    # -- geometry ---------------------------------------------------------------------------

    def _index(self, start: Sequence[int]) -> tuple[int, int, int]:
        return tuple((s - o) // b for s, o, b in  # type: ignore[return-value]
                     zip(start, self.box.start, self.block, strict=True))

    def _expected(self, level: int, g: tuple[int, ...]) -> int:
        """How many children (groups of ``level - 1``, or blocks) group ``g`` of ``level``
        has inside the grid."""
        n = 1
        for a in range(3):
            n *= sum(1 for c in (2 * g[a], 2 * g[a] + 1) if (c << (level - 1)) < self.grid[a])
        return n

    def _group(self, level: int, idx: Sequence[int]) -> tuple[int, ...]:
        return (level, *(i >> level for i in idx))

    def _join_level(self, idx: Sequence[int], other: Sequence[int]) -> int:
        level = 1
        while any((a >> level) != (b >> level) for a, b in zip(idx, other, strict=True)):
            level += 1
        return level

    # -- union-find ---------------------------------------------------------------------------

    def _find(self, ids: np.ndarray) -> np.ndarray:
        parent = self.parent.data
        out = ids.copy()
        while True:
            nxt = parent[out]
            if np.array_equal(nxt, out):
                break
            out = nxt
        parent[ids] = out  # path compression for the ids asked
        return out

    # -- input ----------------------------------------------------------------------------------

    def add(self, s: Any) -> None:
        """One block's level-0 summary (a :class:`pytc_decode.ws_blockwise.WsBlockSummary`
        with ``threshold``; not imported here: that module builds on this one)."""
        if s.threshold is None or s.rows is None or s.key is None:
            raise ValueError(f"block {s.bbox}: its own agglomeration is not done")
        if s.threshold != self.threshold:
            raise ValueError(f"block {s.bbox} was agglomerated up to {s.threshold}, the reduce "
                             f"runs up to {self.threshold}")
        k = s.num_labels
        o = self.sizes.size - 1  # global id = o + local id
        start = s.bbox.start
        self.offsets[start] = o
        self.counts[start] = k
        self.first.extend(s.first[1:].astype(np.int64))
        self.sizes.extend(s.sizes[1:].astype(np.int64))
        roots = merge_roots(s.rows, k, np.inf)
        glob = roots + o
        glob[0] = 0
        self.parent.extend(glob[1:])
        if s.rows.size:
            rows = s.rows.copy()
            rows[:, :2] += o
            self.rows.append(rows)
        # the block's residual: frozen regions and their edges (keys as first voxels)
        edges = _Edges()
        edges.append(s.u.astype(np.int64) + o, s.v.astype(np.int64) + o,
                     s.affinity_sum.astype(np.float64), s.edge_count.astype(np.int64),
                     s.first[s.key // (k + 1)].astype(np.int64),
                     s.first[s.key % (k + 1)].astype(np.int64))
        names = np.unique(np.concatenate([s.u, s.v]).astype(np.int64)) + o
        idx = self._index(start)
        faces: list[tuple[int, np.ndarray]] = []
        joined: list[tuple[int, _Edges]] = []
        for axis in range(3):
            for side in (0, 1):
                step = 1 if side else -1
                other = list(idx)
                other[axis] += step
                if not 0 <= other[axis] < self.grid[axis]:
                    continue
                labels = (s.high_labels if side else s.low_labels)[axis].astype(np.int64)
                frag = np.where(labels != 0, labels + o, 0)
                level = self._join_level(idx, other)
                faces.append((level, np.unique(frag[frag != 0])))
                key = (axis, *(idx if side else other))  # the face: the lower block's high side
                mine = (frag, np.where(labels != 0, s.first[labels], 0),
                        None if side else s.low_affinities[axis], s.plane_seeds(labels))
                if key in self.pending:
                    theirs = self.pending.pop(key)
                    low, high = (theirs, mine) if side else (mine, theirs)
                    joined.append((level, self._face_edges(low, high)))
                else:
                    self.pending[key] = mine
        self._arrive(0, idx, edges, names, faces, joined)

    @staticmethod
    def _face_edges(low: _Plane, high: _Plane) -> _Edges:
        """Fragment pairs across one face (``low``: the upper block's low plane with its
        affinities; ``high``: the lower block's high plane), one entry per pair; pieces of
        one seed joined (:func:`pytc_decode.agglomeration.join_seed_pieces`)."""
        fa, pa, aff, sa = low
        fb, pb, _, sb = high
        assert aff is not None
        on = (fa != 0) & (fb != 0)
        a, b, pa, pb = fa[on], fb[on], pa[on], pb[on]
        w = join_seed_pieces(sa[on], sb[on], aff[on].astype(np.float64))
        # a fragment pair's key is itself (as first voxels); sort by it
        lo_f, hi_f = np.where(pa < pb, a, b), np.where(pa < pb, b, a)
        lo, hi = np.minimum(pa, pb), np.maximum(pa, pb)
        order = np.lexsort((hi, lo))
        lo, hi = lo[order], hi[order]
        starts = (np.flatnonzero(np.r_[True, (lo[1:] != lo[:-1]) | (hi[1:] != hi[:-1])])
                  if lo.size else np.zeros(0, np.int64))
        edges = _Edges()
        edges.append(lo_f[order][starts], hi_f[order][starts], sum_groups(w[order], starts),
                     np.diff(np.append(starts, order.size)).astype(np.int64),
                     lo[starts], hi[starts])
        return edges

    def _arrive(self, level: int, idx: Sequence[int], edges: _Edges, regions: np.ndarray,
                faces: list[tuple[int, np.ndarray]],
                joined: list[tuple[int, _Edges]]) -> None:
        """A complete child (a block, or a group of ``level``) goes into its parent; face
        edges joined at a higher level go to that level's group."""
        if level >= self.top:
            return
        for jl, face_edges in joined:
            self._open(jl, idx).edges.add(face_edges)
        parent = self._open(level + 1, idx)
        parent.arrived += 1
        parent.edges.add(edges)
        parent.regions.append(regions)
        parent.faces.extend(faces)
        if parent.arrived == parent.expected:
            self._complete(level + 1, idx)

    def _open(self, level: int, idx: Sequence[int]) -> _Group:
        g = self._group(level, idx)
        group = self.groups.get(g)
        if group is None:
            group = _Group(self._expected(level, g[1:]))
            self.groups[g] = group
        return group

    def _complete(self, level: int, idx: Sequence[int]) -> None:
        g = self._group(level, idx)
        group = self.groups.pop(g)
        u, v, sums, counts, klo, khi = group.edges.arrays()
        group.edges = _Edges()
        u, v = self._find(u), self._find(v)
        if np.any(u == v):
            raise AssertionError("an edge inside one region reached a group")
        # frozen: regions on this group's outer faces that have a neighbour (a node even
        # where no edge of this group reaches them)
        outer = [f for jl, f in group.faces if jl > level]
        on = self._find(np.unique(np.concatenate(outer))) if outer else np.zeros(0, np.int64)
        regions = np.unique(np.concatenate([*group.regions, u, v, on]))
        regions = regions[regions != 0]
        # compact node ids in the order of the regions' first voxels (names by lowest)
        by_first = regions[np.argsort(self.first.data[regions], kind="stable")]
        order_idx = np.argsort(by_first)  # name -> node: searchsorted in the sorted names
        sorted_names = by_first[order_idx]
        cu = order_idx[np.searchsorted(sorted_names, u)] + 1
        cv = order_idx[np.searchsorted(sorted_names, v)] + 1
        a, b = np.minimum(cu, cv), np.maximum(cu, cv)
        vals = np.unique(np.concatenate([klo, khi]))
        key = (np.searchsorted(vals, klo) * (vals.size + 1) + np.searchsorted(vals, khi))
        n = int(by_first.size)
        pair = a * (n + 1) + b
        order = np.lexsort((key, pair))
        pair = pair[order]
        starts = (np.flatnonzero(np.r_[True, pair[1:] != pair[:-1]]) if pair.size
                  else np.zeros(0, np.int64))
        # one edge per region pair: sums and counts added, the lowest key
        edge_sum = sum_groups(sums[order], starts)
        edge_count = sum_groups(counts[order], starts)
        graph = RegionGraph(n, pair[starts] // (n + 1), pair[starts] % (n + 1), edge_sum,
                            edge_count, 1.0 - edge_sum / np.maximum(edge_count, 1),
                            key[order][starts])
        self.peak_regions = max(self.peak_regions, n)
        self.peak_edges = max(self.peak_edges, int(graph.u.size))
        frozen = np.zeros(n + 1, bool)
        frozen[order_idx[np.searchsorted(sorted_names, on)] + 1] = True
        if level == self.top:  # the whole grid: nothing to defer
            rows = agglomerate(graph, self.threshold)
            frozen_end = np.zeros(n + 1, bool)
            residual = RegionGraph(n, *(np.zeros(0, np.int64),) * 2, np.zeros(0),
                                   np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.int64))
        else:
            rows, _, frozen_end, residual = agglomerate_frozen(graph, frozen, self.threshold)
        names = np.concatenate([np.zeros(1, np.int64), by_first])
        if rows.size:
            named = rows.copy()
            named[:, :2] = names[rows[:, :2].astype(np.int64)]
            self.rows.append(named)
            self.parent.data[named[:, 0].astype(np.int64)] = named[:, 1].astype(np.int64)
        assert residual.key is not None
        out = _Edges()
        if residual.u.size:
            # residual keys are in this group's key space: back to first-voxel pairs
            kk = residual.key
            out.append(names[residual.u], names[residual.v], residual.affinity_sum,
                       residual.edge_count, vals[kk // (vals.size + 1)],
                       vals[kk % (vals.size + 1)])
        left = names[np.flatnonzero(frozen_end)]
        faces = [(jl, f) for jl, f in group.faces if jl > level]
        self._arrive(level, idx, out, left, faces, [])

    def finish(self) -> tuple[dict, dict, np.ndarray, np.ndarray, np.ndarray]:
        """(offsets, counts per block, first voxels, sizes, history in global ids)."""
        if self.groups or self.pending:
            raise ValueError("the summaries of every block are needed "
                             f"({len(self.groups)} groups incomplete)")
        rows = (np.concatenate(self.rows) if self.rows else np.zeros((0, 3)))
        return (self.offsets, self.counts, self.first.view().copy(), self.sizes.view().copy(),
                rows)
