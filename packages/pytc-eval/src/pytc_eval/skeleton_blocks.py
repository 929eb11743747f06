"""Ground-truth skeletons in parallel processes: object by object, and block by block for
objects too large for one process.

A blockwise TEASAR cannot reproduce one kimimaro call on the whole region: the call traces
each connected component from a root (a border target, else the point farthest from the
maximum of the distance-to-boundary field) to the farthest point in the penalty-weighted
distance, invalidates a ball of ``scale · DBF + const`` around the path and repeats, so every
path depends on the whole component. Cut into blocks, each piece gets its own root, its own
farthest points and a forced target at the 2D centre of every cross-section on a face; on the
FlyEM medulla (250³, 128³ blocks) that added 13 % cable (441.7 → 501.2 µm; junctions within
2 voxels of the face planes 20 → 206, leaves there 40 → 224, 81 loops where paths of two blocks
meet at fused face vertices; 5 small objects and a few pieces fell under ``dust_threshold``
per block), so the ground truth's ERL rose 23 % and the ERL (NERL) of a segmentation split at
mid-z 29 % (4.5 %); on the 50×100×200 FlyEM volume ERL fell 4.5 %, NERL 2.6 %.

So the unit of work is the object. A first pass reads the region in cubes of ``block`` voxels
and finds each label's bounding box; then each process reads one object's box (plus one voxel
each side) and runs kimimaro's steps on it as the whole-region call does: connected components
(26-connected), the distance-to-boundary field (equal to the region's multi-label transform
inside the component: the padding holds its nearest outside voxels), the region-face targets
(computed on planes of the region's size, so kimimaro's frame-dependent tie-breaks pick the
same pixel, in the same order, so the same root), ``dust_threshold`` per component, and
``kimimaro.trace``. The result equals the whole-region call node for node (tests). Processes
take the objects largest box first.

Objects whose padded box holds more than ``max_object_voxels`` (and every object when
kimimaro options outside :class:`KimimaroParams` are set, ``extra``) are skeletonized in the
scheme of igneous's skeleton forge and merge instead: the region is cut into cubes read with
one extra voxel plane on their high faces, kimimaro runs per block with ``fix_borders`` (each
cross-section on a face gets a vertex at its 2D distance-transform maximum, the same point seen
from either side), vertices of one label at one voxel are fused, and the short branches the
cuts add are pruned (:func:`prune_face_ticks`). These skeletons differ from the whole-region
call's as measured above.

Workers open the volume themselves (from its URI) or attach an array in shared memory, so
nothing large is pickled; results are small node/edge tables.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from multiprocessing import get_context, shared_memory
from typing import Any

import numpy as np

from pytc_core.bbox import BBox
from pytc_core.errors import UserError
from pytc_eval.skeletons import KimimaroParams, Skeletons, make_skeletons, skeletons_from_labels

log = logging.getLogger("pytc.eval.skeletons")

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
    """The labels (z, y, x) of ``box`` (global voxels) from a worker's source."""
    reader = _attach(source)
    if source[0] == "uri":
        labels = np.asarray(reader.read(box))
    else:
        _, arr, origin = reader
        labels = np.ascontiguousarray(_crop(arr, BBox.from_shape(arr.shape[-3:], origin), box))
    if labels.ndim == 4 and labels.shape[0] == 1:
        labels = labels[0]
    return labels


def _scan_block(source: tuple[str, Any], box: BBox) -> tuple[tuple[np.ndarray, np.ndarray,
                                                                    np.ndarray], float]:
    """The labels in ``box`` with their bounding boxes there: (labels (K,) uint64 including 0,
    starts (K, 3), stops (K, 3) global voxels z y x), and the CPU seconds this took."""
    import fastremap
    from scipy import ndimage

    t0 = time_cpu()
    labels = _read(source, box)
    renum, mapping = fastremap.renumber(labels, preserve_zero=False, in_place=False)
    slices = ndimage.find_objects(renum)
    inverse = {v: k for k, v in mapping.items()}
    ids = np.array([inverse[i + 1] for i in range(len(slices))], np.uint64)
    lo = np.array([[s.start for s in sl] for sl in slices], np.int64).reshape(-1, 3)
    hi = np.array([[s.stop for s in sl] for sl in slices], np.int64).reshape(-1, 3)
    off = np.asarray(box.start, np.int64)
    return (ids, lo + off, hi + off), time_cpu() - t0


def _border_targets(mask: np.ndarray, lo: Sequence[int], full: Sequence[int],
                    anisotropy: np.ndarray) -> list[list[int]]:
    """kimimaro's ``compute_border_targets`` for one component: ``mask`` (x, y, z, its tight
    box starting at ``lo`` in the region of shape ``full``, both x y z voxels). On each region
    face the component touches (kimimaro's plane order), the component's cross-section is laid
    on a zero plane of the face's full size, so the frame-dependent tie-breaks (nearest to the
    plane centre, corner, edge) pick the pixel the whole-region call picks. Returns the targets
    (x, y, z, region voxels) in the order kimimaro's set of them iterates."""
    import cc3d
    import edt
    from kimimaro.skeletontricks import find_border_targets

    hi = [a + n for a, n in zip(lo, mask.shape, strict=True)]
    faces = []  # (axis, index in the mask, index in the region)
    for axis in (2, 1, 0):
        if lo[axis] == 0:
            faces.append((axis, 0, 0))
        if hi[axis] == full[axis]:
            faces.append((axis, -1, full[axis] - 1))
    targets: set[tuple[int, int, int]] = set()
    for axis, local, glob in faces:
        dims = [d for d in range(3) if d != axis]
        plane = np.take(mask, local, axis=axis)
        big = np.zeros((full[dims[0]], full[dims[1]]), np.uint8)
        big[lo[dims[0]]:hi[dims[0]], lo[dims[1]]:hi[dims[1]]] = plane
        wx, wy = float(anisotropy[dims[0]]), float(anisotropy[dims[1]])
        cc_plane = cc3d.connected_components(big)
        dt = edt.edt(cc_plane, black_border=True, anisotropy=(wx, wy))
        for pt in find_border_targets(dt, cc_plane, wx, wy).values():
            point = [0, 0, 0]
            point[axis], point[dims[0]], point[dims[1]] = glob, int(pt[0]), int(pt[1])
            targets.add((point[0], point[1], point[2]))
    return [list(t) for t in targets]


def skeletonize_object(labels: np.ndarray, label: int, start: Sequence[int], region: BBox,
                       voxel_size: Sequence[float], params: KimimaroParams,
                       black_border: bool = False) -> BlockPart:
    """kimimaro's skeletons of one object, equal to those of one kimimaro call on ``region``.

    ``labels`` (z, y, x) hold the object's bounding box plus one voxel each side (clipped to
    ``region``), first voxel at ``start`` (global voxels). ``voxel_size`` nm (z, y, x);
    ``black_border``: the region is all one label (kimimaro then counts its faces as
    boundary). Returns the part: labels, positions (global voxels z y x), edges.
    """
    import cc3d
    import edt
    import kimimaro.trace
    from osteoid import Skeleton
    from scipy import ndimage

    vs = np.asarray(voxel_size, np.float64)
    anis = np.asarray(vs[::-1], np.float32)  # kimimaro's (x, y, z)
    full = region.shape[::-1]
    off = [a - r for a, r in zip(start[::-1], region.start[::-1], strict=True)]  # region x y z
    mask = np.asfortranarray((np.asarray(labels) == label).T)  # x, y, z
    cc = cc3d.connected_components(mask.view(np.uint8))
    counts = np.bincount(cc.reshape(-1, order="F"))
    boxes = [sl if sl is None else sl[::-1] for sl in ndimage.find_objects(cc.T)]
    skels = []
    for cid, sl in enumerate(boxes, 1):
        if sl is None or counts[cid] <= params.dust_threshold:
            continue
        tlo, thi = [s_.start for s_ in sl], [s_.stop for s_ in sl]
        if int(np.prod([b - a for a, b in zip(tlo, thi, strict=True)])) <= 1:
            continue
        plo = [max(a - 1, 0) for a in tlo]
        phi = [min(b + 1, n) for b, n in zip(thi, cc.shape, strict=True)]
        padded = np.asfortranarray(cc[plo[0]:phi[0], plo[1]:phi[1], plo[2]:phi[2]] == cid)
        dist = edt.edt(padded.view(np.uint8), anisotropy=anis, black_border=black_border,
                       parallel=1)
        inner = tuple(slice(a - q, b - q) for a, b, q in zip(tlo, thi, plo, strict=True))
        comp = padded[inner]
        dbf = np.where(comp, dist[inner], 0.0)
        glo = [a + o for a, o in zip(tlo, off, strict=True)]  # region x y z
        root, before = None, []
        if params.fix_borders:
            before = [[a - g for a, g in zip(t, glo, strict=True)]
                      for t in _border_targets(comp, glo, full, anis)]
            root = before.pop() if before else None
        sk = kimimaro.trace.trace(
            comp, dbf, anisotropy=anis, fix_branching=params.fix_branching,
            manual_targets_before=before, manual_targets_after=[], root=root,
            voxel_graph=None, scale=params.scale, const=params.const,
            pdrf_scale=params.pdrf_scale, pdrf_exponent=params.pdrf_exponent)
        if sk.empty():
            continue
        sk.vertices += np.asarray(glo).astype(sk.vertices.dtype, copy=False)
        sk.vertices = np.multiply(sk.vertices, anis, dtype=np.float32)
        skels.append(sk)
    if not skels:
        return (np.zeros(0, np.uint64), np.zeros((0, 3)), np.zeros((0, 2), np.int64))
    sk = Skeleton.simple_merge(skels).consolidate()
    # as skeletons_from_labels converts kimimaro's (x, y, z) nm vertices
    verts = np.asarray(sk.vertices, np.float64)[:, ::-1] / vs + np.asarray(region.start)
    return (np.full(verts.shape[0], label, np.uint64), verts,
            np.asarray(sk.edges, np.int64).reshape(-1, 2))


def _skeletonize_objects(source: tuple[str, Any], objects: Sequence[tuple[int, BBox]],
                         region: BBox, voxel_size: tuple[float, float, float],
                         params: KimimaroParams, black_border: bool
                         ) -> tuple[list[BlockPart], float]:
    """:func:`skeletonize_object` on each (label, padded box) → the parts, and the CPU seconds
    this took."""
    t0 = time_cpu()
    parts = [skeletonize_object(_read(source, box), label, box.start, region, voxel_size,
                                params, black_border) for label, box in objects]
    return parts, time_cpu() - t0


def _skeletonize_block(source: tuple[str, Any], read_box: BBox,
                       voxel_size: tuple[float, float, float], params: KimimaroParams,
                       only: np.ndarray | None = None) -> tuple[BlockPart, float]:
    """kimimaro on one block (read box), on the labels ``only`` (all when None) → its part,
    and the CPU seconds this took."""
    t0 = time_cpu()
    labels = _read(source, read_box)
    if only is not None:
        labels = np.where(np.isin(labels, only), labels, 0)
    part = _part(skeletons_from_labels(labels, voxel_size, params, read_box.start))
    return part, time_cpu() - t0


def time_cpu() -> float:
    """CPU seconds of this process (user + system)."""
    t = os.times()
    return t.user + t.system


def _call(fn: Any, *args: Any) -> Any:
    return fn(*args)


def skeletonize_blockwise(source: str | np.ndarray, region: BBox,
                          voxel_size: Sequence[float], params: KimimaroParams | None = None, *,
                          block: int = 128, workers: int | None = None,
                          fill_missing: bool = False,
                          cpu_seconds: list[float] | None = None,
                          prune: bool = True) -> Skeletons:
    """Skeletonize every ground-truth object in ``region`` (global voxels) in parallel.

    ``source`` is a volume URI (each worker opens it and reads its own boxes) or a (z, y, x)
    label array whose first voxel is ``region.start``. Objects are skeletonized whole, one per
    task, equal to one kimimaro call on the region; those whose padded box exceeds
    ``params.max_object_voxels`` (all of them when ``params.extra`` is set) block by block in
    cubes of ``block`` voxels, merged across faces (``prune``: without the short branches the
    cuts add, :func:`prune_face_ticks`). ``block`` is also the edge of the cubes the labels are
    scanned in; ``block <= 0`` is one kimimaro call on the whole region. ``workers`` are the
    processes (default: the cores this process may use; 1 runs in this process).
    ``voxel_size`` in nm (z, y, x); positions come back in global voxels (z, y, x), skeleton
    ids are the labels. ``cpu_seconds``, when given, receives each task's CPU time. The result
    is the same for any ``workers``.
    """
    params = params or KimimaroParams()
    vs = tuple(float(v) for v in voxel_size)
    if len(vs) != 3:
        raise UserError(f"voxel size {voxel_size} is not three numbers", "give z, y, x in nm")
    workers = default_workers() if workers is None else int(workers)
    if workers < 1:
        raise UserError(f"--workers {workers} must be at least 1", "give 1 or more processes")
    if isinstance(source, np.ndarray) and tuple(source.shape[-3:]) != region.shape:
        raise UserError(f"labels of shape {source.shape} do not fill the region {region}",
                        "pass the labels of the region")
    if block <= 0:  # the reference: one kimimaro call
        labels = (source if isinstance(source, np.ndarray)
                  else _read(("uri", (str(source), fill_missing)), region))
        t0 = time_cpu()
        whole = skeletons_from_labels(np.asarray(labels).reshape(region.shape), vs,
                                      replace(params, parallel=1), region.start)
        if cpu_seconds is not None:
            cpu_seconds.append(time_cpu() - t0)
        return whole
    with (sources := _sources(source, region, fill_missing, workers)) as (src, run):
        scans = run([(_scan_block, src, core) for core, _ in skeleton_blocks(region, block)])
        ids, lo, hi = (np.concatenate([s[0][i] for s in scans]) for i in range(3))
        present = np.unique(ids)
        black_border = present.size == 1 and int(present[0]) != 0
        objects, big = _plan_objects(ids, lo, hi, region, params)
        tasks: list[tuple[Any, ...]] = [(_skeletonize_objects, src, batch, region, vs, params,
                                         black_border) for batch in _batches(objects, block)]
        n_object_tasks = len(tasks)
        block_params = replace(params, fix_borders=True, parallel=1)
        if big.size:
            in_block = [np.isin(s[0][0], big).any() for s in scans]
            tasks += [(_skeletonize_block, src, read_box, vs, block_params, big)
                      for (core, read_box), has in zip(skeleton_blocks(region, block), in_block,
                                                       strict=True) if has]
        t0 = time.perf_counter()
        results = run(tasks)
        log.debug("kimimaro: %d objects whole in %d tasks, %d objects in %d blocks; %.1f s, "
                  "%.1f CPU s in the tasks (largest %.1f s), %d processes (%s)", len(objects),
                  n_object_tasks, big.size, len(tasks) - n_object_tasks,
                  time.perf_counter() - t0, sum(r[1] for r in results),
                  max((r[1] for r in results), default=0.0), workers, sources.method)
    if cpu_seconds is not None:
        cpu_seconds.extend(s[1] for s in scans)
        cpu_seconds.extend(r[1] for r in results)
    parts = [p for r in results[:n_object_tasks] for p in r[0]]
    if big.size:
        merged = merge_block_skeletons([r[0] for r in results[n_object_tasks:]])
        if prune:
            merged = prune_face_ticks(merged, face_planes(region, block), vs, params.const)
        parts.append(_part(merged))
    return _join(parts)


def _plan_objects(ids: np.ndarray, lo: np.ndarray, hi: np.ndarray, region: BBox,
                  params: KimimaroParams) -> tuple[list[tuple[int, BBox]], np.ndarray]:
    """Each label's box (the union of its boxes per block) plus one voxel each side, clipped
    to ``region``: (label, box) of the objects skeletonized whole, largest box first, and the
    labels (uint64) skeletonized block by block."""
    keep = ids != 0
    ids, lo, hi = ids[keep], lo[keep], hi[keep]
    if not ids.size:
        return [], np.zeros(0, np.uint64)
    uniq, inv = np.unique(ids, return_inverse=True)
    inv = inv.reshape(-1)
    start = np.full((uniq.size, 3), np.iinfo(np.int64).max, np.int64)
    stop = np.full((uniq.size, 3), np.iinfo(np.int64).min, np.int64)
    np.minimum.at(start, inv, lo)
    np.maximum.at(stop, inv, hi)
    start = np.maximum(start - 1, np.asarray(region.start))
    stop = np.minimum(stop + 1, np.asarray(region.stop))
    size = np.prod(stop - start, axis=1)
    whole = (size <= params.max_object_voxels) & (not params.extra)
    order = np.lexsort((uniq, -size))  # largest box first, then by label
    objects = [(int(uniq[i]), BBox(tuple(start[i].tolist()), tuple(stop[i].tolist())))
               for i in order if whole[i]]
    return objects, uniq[~whole]


def _batches(objects: Sequence[tuple[int, BBox]], block: int
             ) -> list[list[tuple[int, BBox]]]:
    """Objects (largest first) in tasks: one each, but small ones together up to a block's
    voxels, so many small objects do not cost a task each."""
    out: list[list[tuple[int, BBox]]] = []
    room = 0
    for label, box in objects:
        if out and box.size <= room:
            out[-1].append((label, box))
            room -= box.size
        else:
            out.append([(label, box)])
            room = max(block**3 - box.size, 0)
    return out


def _join(parts: Sequence[BlockPart]) -> Skeletons:
    """Parts of distinct labels as one set, nodes by label (each part's order kept)."""
    parts = sorted((p for p in parts if p[0].size), key=lambda p: int(p[0].min()))
    if not parts:
        return make_skeletons([], np.zeros(0, np.uint64), np.zeros((0, 3)), np.zeros((0, 2)))
    offsets = np.cumsum([0] + [p[0].size for p in parts])
    labels = np.concatenate([p[0] for p in parts])
    order = np.argsort(labels, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    edges = np.concatenate([p[2] + o for p, o in zip(parts, offsets, strict=False)])
    return make_skeletons(np.arange(labels.size), labels[order],
                          np.concatenate([p[1] for p in parts])[order], rank[edges])


class _sources:
    """Context: (the workers' source of the labels, a function running tasks in order on
    ``workers`` processes or in this one). An array goes to shared memory for workers."""

    def __init__(self, source: str | np.ndarray, region: BBox, fill_missing: bool,
                 workers: int) -> None:
        self.source, self.region, self.fill_missing = source, region, fill_missing
        self.workers = workers
        self.shm: shared_memory.SharedMemory | None = None
        self.pool: ProcessPoolExecutor | None = None
        self.key = ""
        #: how the workers start (fork, forkserver, spawn), or "this one" without workers
        self.method = "this one"

    def __enter__(self) -> tuple[tuple[str, Any], Any]:
        source, region = self.source, self.region
        if isinstance(source, np.ndarray):
            arr = np.ascontiguousarray(source)
            if self.workers > 1:
                self.shm = shared_memory.SharedMemory(create=True, size=max(arr.nbytes, 1))
                np.ndarray(arr.shape, arr.dtype, buffer=self.shm.buf)[...] = arr
                src: tuple[str, Any] = ("array", (self.shm.name, arr.shape, arr.dtype.str,
                                                  region.start))
            else:
                src = ("local", (id(arr), region.start))
                self.key = repr(src)
                _SOURCE[self.key] = (None, arr, region.start)
        else:
            src = ("uri", (str(source), self.fill_missing))
        if self.workers > 1:
            ctx = pool_context()
            self.method = ctx.get_start_method()
            self.pool = ProcessPoolExecutor(self.workers, mp_context=ctx)
        return src, self.run

    def run(self, tasks: Sequence[tuple[Any, ...]]) -> list[Any]:
        if self.pool is None:
            return [_call(*t) for t in tasks]
        futures = [self.pool.submit(_call, *t) for t in tasks]
        return [f.result() for f in futures]

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)
        _SOURCE.pop(self.key, None)
        if self.shm is not None:
            self.shm.close()
            self.shm.unlink()


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
