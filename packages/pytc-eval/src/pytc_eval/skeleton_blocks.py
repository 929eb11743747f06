"""Ground-truth skeletons block by block, in parallel processes, merged across block faces.

The scheme of igneous's skeleton forge and merge: the region is cut into cubes; each block is
read with one extra voxel plane on its high faces, so two neighbouring blocks share the plane
on their common face. kimimaro runs per block with ``fix_borders`` (each cross-section of an
object on a block face gets a skeleton vertex at its 2D distance-transform maximum, the same
point seen from either side, because both blocks see the same plane). The merge fuses
vertices of one label at one voxel into a single node, which joins the pieces into one
skeleton per object, and drops duplicate edges.

The skeletons differ from one kimimaro call on the whole region: every cross-section on a face
is a forced target (a path to its 2D centre), a piece of an object poking across a face is
traced on its own (the short ones are pruned, :func:`prune_face_ticks`), and ``dust_threshold``
applies per block. On the FlyEM medulla (250³, 128³ blocks) the ground truth's own ERL is 23 %
higher and NERL of a split segmentation 4.5 % higher than with whole-volume skeletons
(``bench/bench_skeletons.py``); the blockwise run is also 5x faster in one process.

Workers open the volume themselves (from its URI) or attach an array in shared memory, so
nothing large is pickled; results are small node/edge tables.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from multiprocessing import get_context, shared_memory
from typing import Any

import numpy as np

from pytc_core.bbox import BBox
from pytc_core.errors import UserError
from pytc_eval.skeletons import KimimaroParams, Skeletons, make_skeletons, skeletons_from_labels

__all__ = ["default_workers", "face_planes", "merge_block_skeletons", "pool_context",
           "prune_face_ticks", "skeleton_blocks", "skeletonize_blockwise"]

#: one block's skeletons: labels (N,) uint64, positions (N, 3) float64 global voxels (z, y, x),
#: edges (E, 2) int64 row indices into them
BlockPart = tuple[np.ndarray, np.ndarray, np.ndarray]


def default_workers() -> int:
    """The CPU cores this process may use (its affinity mask)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def skeleton_blocks(region: BBox, edge: int) -> list[tuple[BBox, BBox]]:
    """Cut ``region`` (global voxels) into cubes of ``edge`` voxels: (core, read box) pairs.

    The read box is the core plus one voxel plane on each high face (clipped to ``region``),
    the plane the neighbouring block starts with; ``edge <= 0`` is one block of everything.
    """
    from pytc_core.blocks import plan_blocks

    if edge <= 0:
        return [(region, region)]
    out = []
    for core in plan_blocks(region, edge, grid_origin=region.start):
        stop = tuple(min(s + 1, r) for s, r in zip(core.stop, region.stop, strict=True))
        out.append((core, BBox(core.start, stop)))
    return out


def _part(skel: Skeletons) -> BlockPart:
    return (np.asarray(skel.skeleton_ids, np.uint64), skel.positions, skel.edge_index())


def merge_block_skeletons(parts: Sequence[BlockPart]) -> Skeletons:
    """Join per-block skeletons into one set: vertices of one label whose positions round to
    the same voxel become one node (the shared face planes), duplicate edges and self-loops
    are dropped. Nodes come out sorted by (label, z, y, x), so the result does not depend on
    the order of ``parts``; node ids are 0..N-1, positions the voxel centres (global, z y x).
    """
    labels = [p[0] for p in parts if p[0].size]
    if not labels:
        return make_skeletons([], np.zeros(0, np.uint64), np.zeros((0, 3)), np.zeros((0, 2)))
    keys, edges, offset = [], [], 0
    for lab, pos, edg in parts:
        if not lab.size:
            continue
        keys.append(np.column_stack([lab.view(np.int64), np.rint(pos).astype(np.int64)]))
        edges.append(edg + offset)
        offset += lab.size
    allkeys = np.concatenate(keys)
    uniq, inverse = np.unique(allkeys, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    e = inverse[np.concatenate(edges)]
    e = np.sort(e[e[:, 0] != e[:, 1]], axis=1)
    e = np.unique(e, axis=0) if e.size else e.reshape(0, 2)
    return make_skeletons(np.arange(uniq.shape[0]), uniq[:, 0].view(np.uint64),
                 uniq[:, 1:].astype(np.float64), e)


def prune_face_ticks(skel: Skeletons, planes: Sequence[Sequence[int]],
                     voxel_size: Sequence[float], max_length: float) -> Skeletons:
    """Drop the short branches that cutting into blocks adds.

    A piece of an object that pokes a little way across a block face is, in its own block, a
    component of its own: kimimaro traces it from the face to its far end, a branch the
    whole-volume run would not have (TEASAR's invalidation spheres of radius
    ``const + scale · DBF`` cover such a piece from the main path). So a terminal branch (leaf
    up to the first node of degree ≥ 3) shorter than ``max_length`` nm whose junction lies on
    a block face plane (``planes``: global voxel coordinates per axis, z y x) is removed.
    One pass; ids are renumbered 0..N-1 in the order kept.
    """
    n = skel.num_nodes
    if n == 0 or not any(len(p) for p in planes):
        return skel
    idx = skel.edge_index()
    vox = np.rint(skel.positions).astype(np.int64)
    on_plane = np.zeros(n, bool)
    for axis, coords in enumerate(planes):
        on_plane |= np.isin(vox[:, axis], np.asarray(coords, np.int64))
    deg = np.bincount(idx.reshape(-1), minlength=n)
    order = np.argsort(np.concatenate([idx[:, 0], idx[:, 1]]), kind="stable")
    nbr = np.concatenate([idx[:, 1], idx[:, 0]])[order]
    start = np.concatenate([[0], np.cumsum(deg)])
    vs = np.asarray(voxel_size, np.float64)
    drop = np.zeros(n, bool)
    for leaf in np.flatnonzero(deg == 1).tolist():
        path, prev, cur, length = [leaf], -1, int(leaf), 0.0
        while True:
            nxt = [int(v) for v in nbr[start[cur]:start[cur + 1]] if v != prev]
            if len(nxt) != 1:
                break
            length += float(np.linalg.norm((skel.positions[nxt[0]] - skel.positions[cur]) * vs))
            prev, cur = cur, nxt[0]
            if deg[cur] != 2:
                break
            path.append(cur)
        if deg[cur] >= 3 and on_plane[cur] and length < max_length:
            drop[path] = True
    if not drop.any():
        return skel
    keep = ~drop
    new = np.cumsum(keep) - 1
    e = idx[keep[idx[:, 0]] & keep[idx[:, 1]]]
    return make_skeletons(np.arange(int(keep.sum())), skel.skeleton_ids[keep], skel.positions[keep],
                 new[e])


def face_planes(region: BBox, edge: int) -> list[list[int]]:
    """The block face planes inside ``region`` (global voxels per axis, z y x)."""
    if edge <= 0:
        return [[], [], []]
    return [list(range(a + edge, b, edge)) for a, b in zip(region.start, region.stop,
                                                          strict=True)]


# ---------------------------------------------------------------------------- workers

_SOURCE: dict[str, Any] = {}


def _attach(source: tuple[str, Any]) -> Any:
    """The worker's reader of the labels: a Volume opened from its URI, or the shared array
    (both cached for the life of the worker process)."""
    kind, spec = source
    key = repr(source)
    if key not in _SOURCE:
        if kind == "uri":
            from pytc_core.output_run import open_input

            uri, fill_missing = spec
            _SOURCE[key] = open_input(uri, fill_missing=fill_missing)
        else:
            name, shape, dtype, origin = spec
            shm = shared_memory.SharedMemory(name=name)
            arr = np.ndarray(shape, dtype=dtype, buffer=shm.buf)
            _SOURCE[key] = (shm, arr, origin)
    return _SOURCE[key]


def _read(source: tuple[str, Any], box: BBox) -> np.ndarray:
    reader = _attach(source)
    if source[0] == "uri":
        return np.asarray(reader.read(box))
    _, arr, origin = reader
    return np.ascontiguousarray(_crop(arr, BBox.from_shape(arr.shape[-3:], origin), box))


def _skeletonize_block(source: tuple[str, Any], read_box: BBox,
                       voxel_size: tuple[float, float, float],
                       params: KimimaroParams) -> tuple[BlockPart, float]:
    """kimimaro on one block (read box) → its part, and the CPU seconds this took."""
    t0 = time_cpu()
    labels = _read(source, read_box)
    if labels.ndim == 4 and labels.shape[0] == 1:
        labels = labels[0]
    part = _part(skeletons_from_labels(labels, voxel_size, params, read_box.start))
    return part, time_cpu() - t0


def time_cpu() -> float:
    """CPU seconds of this process (user + system)."""
    t = os.times()
    return t.user + t.system


def skeletonize_blockwise(source: str | np.ndarray, region: BBox,
                          voxel_size: Sequence[float], params: KimimaroParams | None = None, *,
                          block: int = 128, workers: int | None = None,
                          fill_missing: bool = False,
                          cpu_seconds: list[float] | None = None,
                          prune: bool = True) -> Skeletons:
    """Skeletonize every ground-truth object in ``region`` (global voxels) block by block.

    ``source`` is a volume URI (each worker opens it and reads its own blocks) or a (z, y, x)
    label array whose first voxel is ``region.start``. ``block`` is the cube edge (voxels;
    0: one kimimaro call on the whole region), ``workers`` the processes (default: the cores
    this process may use; 1 runs in this process). ``voxel_size`` in nm (z, y, x); positions
    come back in global voxels (z, y, x), skeleton ids are the labels. ``cpu_seconds``, when
    given, receives each block's CPU time. The result is the same for any ``workers``.
    ``prune`` removes the short branches the cuts add (:func:`prune_face_ticks`, shorter than
    kimimaro's ``const``).
    """
    params = params or KimimaroParams()
    params = replace(params, fix_borders=True, parallel=1)
    vs = tuple(float(v) for v in voxel_size)
    if len(vs) != 3:
        raise UserError(f"voxel size {voxel_size} is not three numbers", "give z, y, x in nm")
    workers = default_workers() if workers is None else int(workers)
    if workers < 1:
        raise UserError(f"--workers {workers} must be at least 1", "give 1 or more processes")
    jobs = skeleton_blocks(region, block)
    workers = min(workers, len(jobs))
    shm = None
    if isinstance(source, np.ndarray):
        if tuple(source.shape[-3:]) != region.shape:
            raise UserError(f"labels of shape {source.shape} do not fill the region {region}",
                            "pass the labels of the region")
        if workers > 1:
            arr = np.ascontiguousarray(source)
            shm = shared_memory.SharedMemory(create=True, size=max(arr.nbytes, 1))
            np.ndarray(arr.shape, arr.dtype, buffer=shm.buf)[...] = arr
            src: tuple[str, Any] = ("array", (shm.name, arr.shape, arr.dtype.str, region.start))
        else:
            src = ("local", None)
    else:
        src = ("uri", (str(source), fill_missing))
    try:
        if workers == 1:
            results = []
            for _, read_box in jobs:
                if isinstance(source, np.ndarray):
                    t0 = time_cpu()
                    part = _part(skeletons_from_labels(_crop(source, region, read_box), vs,
                                                       params, read_box.start))
                    results.append((part, time_cpu() - t0))
                else:
                    results.append(_skeletonize_block(src, read_box, vs, params))
        else:
            ctx = pool_context()
            with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
                futures = [pool.submit(_skeletonize_block, src, read_box, vs, params)
                           for _, read_box in jobs]
                results = [f.result() for f in futures]
    finally:
        if shm is not None:
            shm.close()
            shm.unlink()
    if cpu_seconds is not None:
        cpu_seconds.extend(r[1] for r in results)
    merged = merge_block_skeletons([r[0] for r in results])
    if not prune:
        return merged
    return prune_face_ticks(merged, face_planes(region, block), vs, params.const)


def pool_context() -> Any:
    """The start method of the worker pools: fork while this process runs one thread (workers
    start at once and open their own inputs after the fork), else forkserver (a fork of a
    process with threads, e.g. a remote reader's pool, may deadlock); spawn off Linux."""
    import multiprocessing
    import threading

    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1:
        return get_context("fork")
    return get_context("forkserver" if "forkserver" in methods else "spawn")


def _crop(labels: np.ndarray, region: BBox, box: BBox) -> np.ndarray:
    """The part ``box`` of ``labels`` (z, y, x) whose first voxel is ``region.start``."""
    lo = [a - o for a, o in zip(box.start, region.start, strict=True)]
    hi = [b - o for b, o in zip(box.stop, region.start, strict=True)]
    return labels[..., lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
