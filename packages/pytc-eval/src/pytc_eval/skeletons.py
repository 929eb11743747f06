"""Ground-truth skeletons: one node/edge table, loaded from JSON, SWC, a precomputed skeleton
layer, or computed from ground-truth labels with kimimaro.

Positions are in voxels (z, y, x), global coordinates; formats in physical units (SWC and
precomputed layers store nm, x/y/z order) are divided by the voxel size on loading.
"""

from __future__ import annotations

import gc
import json
import os
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np

from pytc_core.errors import UserError

T = TypeVar("T")

__all__ = [
    "KimimaroParams",
    "crop_skeletons",
    "Skeletons",
    "load_skeletons",
    "node_segments",
    "node_voxels",
    "save_skeletons",
    "skeletons_from_labels",
]


@dataclass(frozen=True)
class Skeletons:
    """Nodes and edges of many skeletons.

    ``node_ids`` int64 (N,) unique; ``skeleton_ids`` int64/uint64 (N,), the skeleton of each
    node; ``positions`` float64 (N, 3) in voxels (z, y, x), global; ``edges`` int64 (E, 2)
    pairs of node ids. An edge belongs to the skeleton of its first node (as in funlib).
    """

    node_ids: np.ndarray
    skeleton_ids: np.ndarray
    positions: np.ndarray
    edges: np.ndarray

    def __post_init__(self) -> None:
        n = self.node_ids.shape[0]
        if self.skeleton_ids.shape != (n,) or self.positions.shape != (n, 3):
            raise ValueError("node_ids, skeleton_ids (N,) and positions (N, 3) must agree")
        if self.edges.ndim != 2 or self.edges.shape[1] != 2:
            raise ValueError("edges must have shape (E, 2)")

    @property
    def num_nodes(self) -> int:
        return int(self.node_ids.shape[0])

    @property
    def num_edges(self) -> int:
        return int(self.edges.shape[0])

    @property
    def num_skeletons(self) -> int:
        return int(np.unique(self.skeleton_ids).shape[0])

    def cached(self, key: Hashable, make: Callable[[], T]) -> T:
        """``make()``, computed once per instance and ``key``: a sweep scores many thresholds
        on the same skeletons. Cached arrays must be treated as read-only."""
        cache = self.__dict__.setdefault("_cache", {})  # frozen: __dict__ holds the cache
        if key not in cache:
            cache[key] = make()
        return cache[key]

    def edge_index(self) -> np.ndarray:
        """Edges as (E, 2) row indices into the node arrays, read-only (raises UserError on
        unknown ids). Computed once per instance."""
        def rows() -> np.ndarray:
            out = self._edge_rows()
            out.setflags(write=False)
            return out

        return self.cached("edge_index", rows)

    def _edge_rows(self) -> np.ndarray:
        ids = self.node_ids
        lo = int(ids.min()) if ids.size else 0
        span = int(ids.max()) - lo + 1 if ids.size else 0
        if span <= 4 * ids.size + 1024:  # dense ids (the common case): a direct lookup table
            lut = np.full(span + 1, -1, np.int64)
            lut[ids - lo] = np.arange(ids.size)
            q = self.edges - lo
            rows = lut[np.where((q >= 0) & (q < span), q, span)]
        else:
            from pytc_eval.kernels import rows_of  # numba, imported on first use

            rows = rows_of(np.ascontiguousarray(ids).view(np.uint64),
                           np.ascontiguousarray(self.edges).reshape(-1).view(np.uint64)
                           ).reshape(-1, 2)
        if np.any(rows < 0):
            bad = self.edges[(rows < 0).any(axis=1)][0]
            raise UserError(f"skeleton edge {bad.tolist()} names a node id that does not exist",
                            "every edge must join two listed nodes")
        return rows


def make_skeletons(node_ids, skeleton_ids, positions, edges) -> Skeletons:
    """Skeletons from node ids, their skeleton ids, positions (nm, z y x) and edges."""
    skel = Skeletons(np.asarray(node_ids, np.int64).reshape(-1),
                     np.asarray(skeleton_ids).reshape(-1),
                     np.asarray(positions, np.float64).reshape(-1, 3),
                     np.asarray(edges, np.int64).reshape(-1, 2))
    if np.unique(skel.node_ids).shape[0] != skel.num_nodes:
        raise UserError("skeleton node ids are not unique", "give every node its own id")
    idx = skel.edge_index()
    if idx.size and np.any(skel.skeleton_ids[idx[:, 0]] != skel.skeleton_ids[idx[:, 1]]):
        bad = skel.edges[skel.skeleton_ids[idx[:, 0]] != skel.skeleton_ids[idx[:, 1]]][0]
        raise UserError(f"skeleton edge {bad.tolist()} joins nodes of two different skeletons",
                        "an edge must stay within one skeleton")
    if not np.all(np.isfinite(skel.positions)):
        raise UserError("skeleton node positions contain NaN or inf", "fix the node positions")
    return skel


def _concat(parts: list[Skeletons]) -> Skeletons:
    """Concatenate skeleton sets, renumbering node ids to stay unique."""
    ids, skel, pos, edges, offset = [], [], [], [], 0
    for part in parts:
        index = part.edge_index()
        ids.append(np.arange(part.num_nodes, dtype=np.int64) + offset)
        skel.append(part.skeleton_ids)
        pos.append(part.positions)
        edges.append(index + offset)
        offset += part.num_nodes
    if not parts:
        return make_skeletons([], np.zeros(0, np.int64), np.zeros((0, 3)), np.zeros((0, 2)))
    return make_skeletons(np.concatenate(ids), np.concatenate(skel), np.concatenate(pos),
                 np.concatenate(edges))


# ---------------------------------------------------------------------------- JSON

def _load_json(path: Path) -> Skeletons:
    # the cyclic GC paused while the nodes are parsed: their many small dicts would otherwise
    # trigger collections that walk every live object (measured: 77-150 ms → 77 ms at 16k
    # nodes beside a large heap); nothing parsed here forms a cycle
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _parse_json(path)
    finally:
        if enabled:
            gc.enable()


def _parse_json(path: Path) -> Skeletons:
    try:
        data = json.loads(path.read_text())
        nodes = data["nodes"]
        ids = [int(n["id"]) for n in nodes]
        skel = [int(n["skeleton_id"]) for n in nodes]
        pos = [(float(n["z"]), float(n["y"]), float(n["x"])) for n in nodes]
        edges = [(int(u), int(v)) for u, v in data.get("edges", [])]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{path}: not a skeleton JSON file ({type(exc).__name__}: {exc})",
                        'write {"nodes": [{"id", "skeleton_id", "z", "y", "x"}], '
                        '"edges": [[u, v]]}') from None
    skel_arr = np.array(skel, dtype=np.uint64 if skel and max(skel) >= 2**63 else np.int64)
    return make_skeletons(ids, skel_arr, np.array(pos).reshape(-1, 3), edges)


def save_skeletons(skeletons: Skeletons, path: str | os.PathLike[str]) -> None:
    """Write ``skeletons`` as the JSON node/edge list (positions in voxels, z, y, x)."""
    nodes = [{"id": int(i), "skeleton_id": int(s), "z": float(p[0]), "y": float(p[1]),
              "x": float(p[2])}
             for i, s, p in zip(skeletons.node_ids, skeletons.skeleton_ids,
                                skeletons.positions, strict=True)]
    from pytc_core.files import write_atomic

    write_atomic(path, json.dumps({"nodes": nodes, "edges": skeletons.edges.tolist()}).encode())


# ---------------------------------------------------------------------------- SWC

def _load_swc(path: Path, skeleton_id: int, voxel_size: np.ndarray) -> Skeletons:
    """One SWC file = one skeleton; columns ``n T x y z R parent``, positions in nm."""
    ids, pos, parents = [], [], []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        cols = line.split()
        try:
            if len(cols) != 7:
                raise ValueError
            n, x, y, z, parent = int(cols[0]), float(cols[2]), float(cols[3]), float(cols[4]), \
                int(cols[6])
        except ValueError:
            raise UserError(f"{path}:{lineno}: not an SWC line: {line!r}",
                            "SWC lines are 'id type x y z radius parent'") from None
        ids.append(n)
        pos.append((z, y, x))
        parents.append(parent)
    known = set(ids)
    for n, parent in zip(ids, parents, strict=True):
        if parent != -1 and parent not in known:
            raise UserError(f"{path}: node {n} has parent {parent}, which is not a node "
                            "of the file", "fix the parent column (-1 marks a root)")
    edges = [(n, p) for n, p in zip(ids, parents, strict=True) if p != -1]
    positions = np.array(pos, np.float64).reshape(-1, 3) / voxel_size
    return make_skeletons(ids, np.full(len(ids), skeleton_id, np.int64), positions, edges)


def _swc_id(path: Path, index: int) -> int:
    return int(path.stem) if path.stem.isdigit() else index + 1


# ---------------------------------------------------------------------------- precomputed

def _load_precomputed(uri: str) -> Skeletons:
    """Every skeleton of a precomputed layer (a skeleton layer or a segmentation's skeletons)."""
    from pytc_core.volume.skeleton_layer import read_skeleton_layer

    parts = []
    for sk in read_skeleton_layer(uri):
        n = sk.vertices.shape[0]
        parts.append(make_skeletons(np.arange(n), np.full(n, sk.segment_id, np.uint64), sk.vertices,
                           sk.edges))
    return _concat(parts)


def load_skeletons(path: str | os.PathLike[str],
                   voxel_size: Sequence[float] | None = None) -> Skeletons:
    """Load skeletons from a JSON node/edge list, an SWC file or a folder of them, or a
    precomputed skeleton layer (``precomputed://…``, ``gs://…``, or a folder with an ``info``).

    ``voxel_size`` (z, y, x nm, default 1) converts SWC positions (nm) to voxels; precomputed
    vertices (nm) are divided by the layer's own resolution; JSON positions are already
    voxels. Bad files raise :class:`UserError`.
    """
    text = str(path)
    vs = None if voxel_size is None else np.asarray(voxel_size, np.float64)
    from pytc_core.volume.skeleton_layer import is_precomputed_layer

    if is_precomputed_layer(text):
        return _load_precomputed(text)
    p = Path(text.removeprefix("file://"))
    if not p.exists():
        raise UserError(f"skeleton file not found: {p}", "check the --skeletons path")
    if p.is_dir():
        files = sorted(p.glob("*.swc"))
        if not files:
            raise UserError(f"{p} holds no .swc files and no precomputed 'info'",
                            "give a JSON/SWC file, a folder of .swc files or a skeleton layer")
        return _concat([_load_swc(f, _swc_id(f, i), vs if vs is not None else np.ones(3))
                        for i, f in enumerate(files)])
    if p.suffix.lower() == ".swc":
        return _load_swc(p, _swc_id(p, 0), vs if vs is not None else np.ones(3))
    if p.suffix.lower() == ".json":
        return _load_json(p)
    raise UserError(f"unknown skeleton format: {p}",
                    "use .json (node/edge list), .swc, a folder of .swc, or a precomputed layer")


# ---------------------------------------------------------------------------- kimimaro

@dataclass(frozen=True)
class KimimaroParams:
    """kimimaro TEASAR parameters (lengths in nm; ``dust_threshold`` in voxels)."""

    scale: float = 1.5
    const: float = 300.0
    pdrf_scale: float = 100000.0
    pdrf_exponent: int = 4
    dust_threshold: int = 1000
    fix_branching: bool = True
    fix_borders: bool = True
    parallel: int = 1
    #: edge of the cubes the labels are scanned in (voxels), and of the cubes an object too
    #: large for one process is skeletonized in, merged across their faces
    #: (:mod:`pytc_eval.skeleton_blocks`); 0: one kimimaro call on everything
    block: int = 128
    #: objects whose bounding box (plus one voxel each side) holds at most this many voxels
    #: are skeletonized whole, one process each, exactly as one kimimaro call on the region
    #: would; larger ones block by block (an approximation, see :mod:`skeleton_blocks`)
    max_object_voxels: int = 2**26
    extra: dict = field(default_factory=dict)


def skeletons_from_labels(labels: np.ndarray, voxel_size: Sequence[float] = (1, 1, 1),
                          params: KimimaroParams | None = None,
                          offset: Sequence[int] = (0, 0, 0)) -> Skeletons:
    """Skeletonize every ground-truth object of ``labels`` (z, y, x) with kimimaro.

    ``voxel_size`` (z, y, x nm) sets kimimaro's anisotropy; skeleton ids are the label ids,
    positions come back in voxels (z, y, x) shifted by ``offset`` (global voxel start).
    """
    import sys

    import kimimaro

    # kimimaro's (disabled) progress bars would start tqdm's monitor thread, which lives on
    # and makes every later worker pool of this process a slow forkserver one (pool_context)
    if "tqdm" in sys.modules:
        sys.modules["tqdm"].tqdm.monitor_interval = 0
    params = params or KimimaroParams()
    labels = np.asarray(labels)
    if labels.ndim != 3 or not np.issubdtype(labels.dtype, np.integer):
        raise UserError(f"skeletonization needs 3D integer labels, got {labels.dtype} "
                        f"{labels.shape}", "pass the ground-truth segmentation")
    vs = np.asarray(voxel_size, np.float64)
    # kimimaro reads axis 0 as x: hand it the (x, y, z) transpose (a free Fortran view)
    skels = kimimaro.skeletonize(
        labels.T,
        teasar_params={"scale": params.scale, "const": params.const,
                       "pdrf_scale": params.pdrf_scale, "pdrf_exponent": params.pdrf_exponent},
        anisotropy=tuple(float(v) for v in vs[::-1]),
        dust_threshold=params.dust_threshold, fix_branching=params.fix_branching,
        fix_borders=params.fix_borders, parallel=params.parallel, progress=False,
        **params.extra)
    parts = []
    for label in sorted(skels):
        sk = skels[label]
        verts = np.asarray(sk.vertices, np.float64)[:, ::-1] / vs + np.asarray(offset)
        n = verts.shape[0]
        parts.append(make_skeletons(np.arange(n), np.full(n, label, np.uint64), verts,
                           np.asarray(sk.edges, np.int64)))
    return _concat(parts)


# ---------------------------------------------------------------------------- lookup

def node_voxels(skeletons: Skeletons, shape: Sequence[int],
                offset: Sequence[int] = (0, 0, 0)) -> np.ndarray:
    """Each node's nearest voxel (``numpy.rint``, clipped to the volume) as global (z, y, x).

    The volume has ``shape`` voxels starting at global ``offset``. Nodes outside it (more than
    half a voxel beyond a face) raise :class:`UserError`.
    """
    off = np.asarray(offset, np.int64)
    pos = skeletons.positions - off
    size = np.asarray(shape[-3:], np.int64)
    outside = np.any((pos < -0.5) | (pos > size - 0.5), axis=1)
    if np.any(outside):
        first = skeletons.positions[np.argmax(outside)]
        raise UserError(f"{int(outside.sum())} of {skeletons.num_nodes} skeleton nodes lie "
                        f"outside the volume (e.g. node at z,y,x={first.round(2).tolist()}, "
                        f"volume {tuple(int(s) for s in size)} at offset "
                        f"{tuple(int(o) for o in off)})",
                        "check that the skeletons and the volume share voxel size and offset")
    return np.clip(np.rint(pos).astype(np.int64), 0, size - 1) + off


def node_segments(skeletons: Skeletons, segmentation: np.ndarray,
                  offset: Sequence[int] = (0, 0, 0)) -> np.ndarray:
    """The label of ``segmentation`` (z, y, x, first voxel at global ``offset``) at each node.

    A node takes the voxel nearest to its position (``numpy.rint``, clipped to the volume).
    Nodes outside the volume (more than half a voxel beyond a face) raise :class:`UserError`.
    """
    idx = node_voxels(skeletons, segmentation.shape, offset) - np.asarray(offset, np.int64)
    return segmentation[idx[:, 0], idx[:, 1], idx[:, 2]]


def crop_skeletons(skeletons: Skeletons, start: Sequence[int], stop: Sequence[int]
                   ) -> Skeletons:
    """The nodes whose nearest voxel (``numpy.rint``) lies in the box ``[start, stop)``
    (global voxels, z y x) and the edges between two of them; ids are kept."""
    vox = np.rint(skeletons.positions)
    inside = np.all((vox >= np.asarray(start)) & (vox < np.asarray(stop)), axis=1)
    if inside.all():
        return skeletons
    idx = skeletons.edge_index()
    keep_edge = inside[idx[:, 0]] & inside[idx[:, 1]] if idx.size else np.zeros(0, bool)
    return Skeletons(skeletons.node_ids[inside], skeletons.skeleton_ids[inside],
                     skeletons.positions[inside], skeletons.edges[keep_edge])
