"""Connected components of the affinity graph (Numba union-find over z-slabs, both cores).

Edge convention (identical to :func:`pytc_core.targets.affinities_from_labels`): channel ``c``
of a ``(C, Z, Y, X)`` affinity array at voxel ``v`` is the edge between ``v`` and
``v + offset_c`` with offsets ``(-1, 0, 0), (0, -1, 0), (0, 0, -1)`` for the first three
channels; further (long-range) channels are ignored. Two voxels are joined when their edge is
above the threshold (6-connectivity). A voxel none of whose six edges is above the threshold
is background (0). Labels are consecutive, numbered by each segment's first voxel in C order,
so the same input always gives the same ids.

The kernel is a raster scan (each voxel's own three channels are exactly its backward edges)
with provisional labels and a union-find over them (union by minimum, path halving). The
volume is cut into z-slabs labelled in parallel (nogil Numba kernels in a thread pool); a
serial step merges the slabs across their boundary planes, and a parallel pass writes the
final ids. Because the
root of every set is its smallest provisional label, which is created at the segment's first
voxel in C order, the final ids come out in first-voxel order with no sort.

Memory: the labels (uint32 for volumes under 2**32 voxels, else uint64) plus a provisional
label table that never exceeds the label array and only touches pages it uses.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from numba import njit

from pytc_core.errors import UserError
from pytc_decode.kernels import remap, union, union_pairs

__all__ = ["NO_EXTENSION", "affinity_cc", "apply_sigmoid", "check_counts", "check_value_range",
           "kernel_mask", "label_array", "label_dtype", "label_serial", "label_slab", "label_slabs",
           "merge_slabs", "merge_small", "prepare_affinities", "relabel_consecutive", "slab_bounds",
           "value_scale", "write_final"]

#: no neighbouring block beyond any face (z, y, x): a whole volume
NO_EXTENSION = np.zeros(3, dtype=np.bool_)


@njit(cache=True, nogil=True)
def label_slab(aff, t, hi, mask, use_mask, z0, z1, lo_ext, hi_ext, lab, parent, pbase):
    """Label voxels z in [z0, z1) with provisional labels 1..n stored in ``lab``.

    ``parent[pbase + l]`` is label l's union-find parent. Edges to z0 - 1 are left to the slab
    merge, but still make a voxel foreground. ``lo_ext``/``hi_ext`` (z, y, x) say that a
    neighbouring block lies beyond the array's low/high face (blockwise decoding): a voxel with
    no edge inside the array then becomes a candidate singleton when an edge may leave the
    array there (kept or dropped in the blockwise reduce step). Every affinity is checked
    on the way: NaN/inf, and values outside [0, ``hi``] (logits), are counted.
    Returns (n, NaN count, out-of-range count).
    """
    _, Z, Y, X = aff.shape
    one = lab.dtype.type(1)
    zero = lab.dtype.type(0)
    n = zero
    nan = 0
    outside = 0
    lo = hi - hi  # 0 in the affinities' own dtype (no widening in the range check)
    for z in range(z0, z1):
        for y in range(Y):
            for x in range(X):
                a0 = aff[0, z, y, x]
                a1 = aff[1, z, y, x]
                a2 = aff[2, z, y, x]
                # one range check catches NaN too (every comparison with NaN is false)
                if not (a0 >= lo and a0 <= hi and a1 >= lo and a1 <= hi and a2 >= lo
                        and a2 <= hi):
                    # x - x is 0 for finite x and NaN for NaN and ±inf
                    if a0 - a0 != 0 or a1 - a1 != 0 or a2 - a2 != 0:
                        nan += 1
                    else:
                        outside += 1
                if use_mask and mask[z, y, x] == 0:
                    lab[z, y, x] = zero
                    continue
                lbl = zero
                if x > 0 and a2 > t:
                    lbl = lab[z, y, x - 1]
                if y > 0 and a1 > t:
                    m = lab[z, y - 1, x]
                    if m != zero:
                        if lbl == zero:
                            lbl = m
                        elif m != lbl:
                            lbl = union(parent, pbase, lbl, m)
                if z > z0 and a0 > t:
                    m = lab[z - 1, y, x]
                    if m != zero:
                        if lbl == zero:
                            lbl = m
                        elif m != lbl:
                            lbl = union(parent, pbase, lbl, m)
                if lbl == zero:
                    fg = False
                    if x + 1 < X and aff[2, z, y, x + 1] > t and (not use_mask or mask[z, y, x + 1] != 0):
                        fg = True
                    elif y + 1 < Y and aff[1, z, y + 1, x] > t and (not use_mask or mask[z, y + 1, x] != 0):
                        fg = True
                    elif z + 1 < Z and aff[0, z + 1, y, x] > t and (not use_mask or mask[z + 1, y, x] != 0):
                        fg = True
                    elif z == z0 and z > 0 and a0 > t and (not use_mask or mask[z - 1, y, x] != 0):
                        fg = True
                    elif ((x == 0 and lo_ext[2] and a2 > t) or (y == 0 and lo_ext[1] and a1 > t)
                          or (z == 0 and lo_ext[0] and a0 > t) or (x == X - 1 and hi_ext[2])
                          or (y == Y - 1 and hi_ext[1]) or (z == Z - 1 and hi_ext[0])):
                        fg = True
                    if fg:
                        n += one
                        parent[pbase + n] = n
                        lbl = n
                lab[z, y, x] = lbl
    return n, nan, outside


def slab_bounds(Z: int, nslabs: int) -> np.ndarray:
    return np.array([(s * Z) // nslabs for s in range(nslabs + 1)], dtype=np.int64)


def label_slabs(aff, t, hi, mask, use_mask, lo_ext, hi_ext, bounds, lab, parent):
    """Phase 1 (one thread per slab): label each z-slab on its own.

    Returns (labels per slab, NaN count, out-of-range count). The kernels release the GIL, so a thread pool runs
    them in parallel without OpenMP's busy waiting (which stalls on shared, busy machines).
    """
    plane = lab.shape[1] * lab.shape[2]

    def one(s: int):
        z0, z1 = int(bounds[s]), int(bounds[s + 1])
        return label_slab(aff, t, hi, mask, use_mask, z0, z1, lo_ext, hi_ext, lab, parent,
                           z0 * plane)

    with ThreadPoolExecutor(min(bounds.size - 1, numba.get_num_threads())) as pool:
        results = list(pool.map(one, range(bounds.size - 1)))
    counts = np.array([int(r[0]) for r in results], dtype=np.int64)
    return counts, sum(int(r[1]) for r in results), sum(int(r[2]) for r in results)


@njit(cache=True, nogil=True)
def merge_slabs(aff, t, bounds, counts, lab, parent):
    """Phase 2 (serial): one global label table, unions across slab planes, final ids.

    Returns (per-slab label offsets, number of segments); ``parent[offset + local]`` then
    holds each provisional label's final id.
    """
    _, Z, Y, X = aff.shape
    plane = Y * X
    nslabs = bounds.size - 1
    # compact the slabs' label tables into one: global label = offset[s] + local label
    offsets = np.zeros(nslabs + 1, dtype=np.int64)
    for s in range(nslabs):
        offsets[s + 1] = offsets[s] + counts[s]
    for s in range(nslabs):
        src = bounds[s] * plane
        dst = offsets[s]
        for i in range(1, counts[s] + 1):
            parent[dst + i] = parent[src + i] + dst
    parent[0] = 0
    # union across slab boundary planes (union by minimum keeps the first-voxel order)
    for s in range(1, nslabs):
        z = bounds[s]
        if z == bounds[s + 1] or z == 0:
            continue
        sp = s - 1
        while bounds[sp] == z:  # the slab holding plane z - 1 (skip empty slabs)
            sp -= 1
        for y in range(Y):
            for x in range(X):
                if aff[0, z, y, x] > t:
                    a = lab[z, y, x]
                    b = lab[z - 1, y, x]
                    if a != 0 and b != 0:
                        union(parent, 0, a + offsets[s], b + offsets[sp])
    # final consecutive ids in place: parent[l] < l for every non-root, so one forward pass
    nseg = 0
    for i in range(1, offsets[nslabs] + 1):
        p = parent[i]
        if p == i:
            nseg += 1
            parent[i] = nseg
        else:
            parent[i] = parent[p]
    return offsets, nseg


@njit(cache=True, nogil=True)
def _write_final_slab(z0, z1, off, lab, parent):
    _, Y, X = lab.shape
    for z in range(z0, z1):
        for y in range(Y):
            for x in range(X):
                v = lab[z, y, x]
                if v != 0:
                    lab[z, y, x] = parent[v + off]


def write_final(bounds, offsets, lab, parent):
    """Phase 3 (one thread per slab): replace provisional labels by final ids."""
    def one(s: int) -> None:
        _write_final_slab(int(bounds[s]), int(bounds[s + 1]), int(offsets[s]), lab, parent)

    with ThreadPoolExecutor(min(bounds.size - 1, numba.get_num_threads())) as pool:
        list(pool.map(one, range(bounds.size - 1)))


@njit(cache=True, nogil=True)
def label_serial(aff, t, hi, mask, use_mask, lo_ext, hi_ext, lab, parent):
    """All three phases on one thread, without releasing into a thread pool (for blocks that
    are labelled concurrently). Returns (number of segments, NaN count, out-of-range count)."""
    Z = aff.shape[1]
    n, nan, outside = label_slab(aff, t, hi, mask, use_mask, 0, Z, lo_ext, hi_ext, lab, parent,
                                  0)
    if nan or outside:
        return 0, nan, outside
    bounds = np.array([0, Z], dtype=np.int64)
    counts = np.array([np.int64(n)])
    offsets, nseg = merge_slabs(aff, t, bounds, counts, lab, parent)
    _write_final_slab(0, Z, 0, lab, parent)
    return nseg, nan, outside


@njit(cache=True)
def _contact_strength(lab, aff, is_small):
    """Summed affinity over the 6-contacts between a small segment and each other segment."""
    _, Z, Y, X = aff.shape
    pairs = dict()
    pairs[(np.int64(0), np.int64(0))] = 0.0
    for c in range(3):
        dz = 1 if c == 0 else 0
        dy = 1 if c == 1 else 0
        dx = 1 if c == 2 else 0
        for z in range(dz, Z):
            for y in range(dy, Y):
                for x in range(dx, X):
                    a = np.int64(lab[z, y, x])
                    b = np.int64(lab[z - dz, y - dy, x - dx])
                    if a == b or a == 0 or b == 0:
                        continue
                    w = np.float64(aff[c, z, y, x])
                    if is_small[a]:
                        pairs[(a, b)] = pairs.get((a, b), 0.0) + w
                    if is_small[b]:
                        pairs[(b, a)] = pairs.get((b, a), 0.0) + w
    del pairs[(np.int64(0), np.int64(0))]
    return pairs


def label_dtype(num_voxels: int) -> np.dtype:
    """uint32 when every possible id fits (fewer than 2**32 - 1 voxels), else uint64."""
    return np.dtype(np.uint32) if num_voxels < 2**32 - 1 else np.dtype(np.uint64)


def relabel_consecutive(labels: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Keep the ids where ``keep[id]`` (bool per id, index 0 ignored), renumbered 1..k in id order.

    In place on ``labels``; order is preserved, so first-voxel numbering stays deterministic.
    """
    keep = np.asarray(keep, dtype=bool).copy()
    keep[0] = False
    table = (np.cumsum(keep) * keep).astype(labels.dtype)
    return remap(labels, table, out=labels)


def merge_small(labels: np.ndarray, affinities: np.ndarray, min_size: int) -> np.ndarray:
    """Merge each segment under ``min_size`` voxels into the neighbour it touches most strongly.

    Strength is the summed nearest-neighbour affinity over the shared faces (ties: lower id).
    Small segments touching no other segment, and merged groups still under ``min_size``, become
    background. Ids stay consecutive in first-voxel order. In place on ``labels``.
    """
    sizes = np.bincount(labels.reshape(-1), minlength=1).astype(np.int64)
    n = sizes.size - 1
    is_small = sizes < min_size
    is_small[0] = False
    if not is_small.any():
        return labels
    pairs = _contact_strength(labels, affinities, is_small)
    best: dict[int, tuple[float, int]] = {}
    for (a, b), w in pairs.items():
        cur = best.get(a)
        if cur is None or w > cur[0] or (w == cur[0] and b < cur[1]):
            best[a] = (w, b)
    parent = np.arange(n + 1, dtype=np.int64)
    small_ids = np.array(sorted(best), dtype=np.int64)
    targets = np.array([best[a][1] for a in small_ids], dtype=np.int64)
    union_pairs(parent, small_ids, targets)
    roots = parent
    group_size = np.bincount(roots, weights=sizes, minlength=n + 1)
    keep_root = (roots == np.arange(n + 1)) & (group_size >= min_size)
    keep_root[0] = False
    new_id = np.cumsum(keep_root) * keep_root
    table = new_id[roots].astype(labels.dtype)
    return remap(labels, table, out=labels)


def value_scale(dtype: np.dtype) -> float:
    """The stored value that means affinity 1.0: 1 for floats, the maximum of unsigned ints
    (uint8 affinities are read as value / 255)."""
    dtype = np.dtype(dtype)
    return float(np.iinfo(dtype).max) if dtype.kind == "u" else 1.0


def prepare_affinities(affinities: np.ndarray, threshold: float) -> tuple[np.ndarray, float]:
    """Check a (C, Z, Y, X) affinity array and the threshold; return (array, kernel threshold).

    Float arrays are used as they are (float16 is widened to float32, every channel); unsigned
    integer arrays are read as fractions of their dtype's maximum (uint8 255 = 1.0), so the
    threshold is scaled instead.
    """
    aff = np.asarray(affinities)
    if aff.ndim != 4:
        raise UserError(f"affinities have shape {aff.shape}, need 4D (C, Z, Y, X) with C >= 3",
                        "pass channels-first z, y, x nearest-neighbour affinities")
    if aff.shape[0] < 3:
        raise UserError(f"affinities have {aff.shape[0]} channel(s), need at least 3 "
                        "(z, y, x nearest-neighbour affinities first)",
                        "pass the 3 (or more) channel output of an affinity model")
    t = float(threshold)
    if not 0.0 <= t <= 1.0:
        raise UserError(f"threshold {threshold} is outside [0, 1]", "use e.g. --threshold 0.5")
    if aff.dtype == np.float16:
        aff = aff.astype(np.float32)
    elif aff.dtype.kind == "u":
        t = t * value_scale(aff.dtype)
    elif aff.dtype not in (np.float32, np.float64):
        raise UserError(f"affinities have dtype {aff.dtype}",
                        "use float32/float64 in [0, 1] or unsigned integers scaled to their maximum")
    return aff, t


def apply_sigmoid(logits: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-x))`` as float32 (for ``--logits``: a model output without its sigmoid)."""
    x = np.asarray(logits)
    if x.dtype.kind != "f":
        raise UserError(f"--logits needs float affinities, got {x.dtype}",
                        "integer affinities are already probabilities: drop --logits")
    out = np.negative(x, dtype=np.float32)
    with np.errstate(over="ignore"):  # exp(large) = inf gives 0, as it should
        np.exp(out, out=out)
    out += 1.0
    np.reciprocal(out, out=out)
    return out


def _range_error(count: int, where: str = "the first three channels") -> UserError:
    return UserError(f"affinities have {count} value(s) outside [0, 1] in {where} (logits, or "
                     "a model output without its sigmoid)",
                     "apply a sigmoid first, or pass --logits to have pytc-decode apply it")


def check_value_range(values: np.ndarray, where: str) -> None:
    """UserError when float ``values`` leave [0, 1] (unsigned ints are in range by definition)."""
    v = np.asarray(values)
    if v.dtype.kind != "f" or v.size == 0:
        return
    with np.errstate(invalid="ignore"):
        outside = int(np.count_nonzero((v < 0) | (v > 1)))
    if outside:
        raise _range_error(outside, where)


def kernel_mask(mask: np.ndarray | None, shape: tuple[int, ...]) -> tuple[np.ndarray, bool]:
    """The mask as a uint8 array for the kernels (a dummy when None), and whether to use it."""
    if mask is None:
        return np.ones((1, 1, 1), dtype=np.uint8), False
    m = np.asarray(mask)
    m = m.view(np.uint8) if m.dtype == np.bool_ else (m != 0).view(np.uint8)
    if m.shape != tuple(shape):
        raise UserError(f"mask has shape {m.shape}, affinities have spatial shape {tuple(shape)}",
                        "pass a mask covering the same (Z, Y, X) box")
    return m, True


def _nan_error(count: int) -> UserError:
    return UserError(f"affinities contain {count} voxel(s) with NaN/inf in the first three "
                     "channels",
                     "fix the producing step (e.g. a diverged model) or clean the volume")


def check_counts(nan: int, outside: int) -> None:
    """The kernels' NaN and out-of-range counts as the one-line error they call for."""
    if nan:
        raise _nan_error(nan)
    if outside:
        raise _range_error(outside)


def label_array(aff: np.ndarray, t: float, mask: np.ndarray | None, lo_ext: np.ndarray,
                 hi_ext: np.ndarray, slabs: int | None = None) -> tuple[np.ndarray, int]:
    """Run the kernel on channels 0-2 in ``slabs`` z-slabs (default 2 per thread); returns
    (labels, segments).

    Raises UserError on NaN/inf affinities and on values outside [0, 1].
    """
    shape = aff.shape[1:]
    nvox = int(np.prod(shape, dtype=np.int64))
    dtype = label_dtype(nvox)
    kernel_dtype = np.uint32 if dtype == np.uint32 else np.int64
    lab = np.empty(shape, dtype=kernel_dtype)
    parent = np.empty(nvox + 1, dtype=kernel_dtype)  # pages are touched only as labels are made
    nslabs = max(1, min(slabs or numba.get_num_threads() * 2, shape[0]))
    m, use_mask = kernel_mask(mask, shape)
    hi = aff.dtype.type(value_scale(aff.dtype))
    if nslabs == 1:  # one thread: no parallel region (blocks may run in a thread pool)
        nseg, nan, outside = label_serial(aff, t, hi, m, use_mask, lo_ext, hi_ext, lab, parent)
    else:
        bounds = slab_bounds(shape[0], nslabs)
        counts, nan, outside = label_slabs(aff, t, hi, m, use_mask, lo_ext, hi_ext, bounds, lab,
                                            parent)
    check_counts(nan, outside)
    if nslabs > 1:
        offsets, nseg = merge_slabs(aff, t, bounds, counts, lab, parent)
        write_final(bounds, offsets, lab, parent)
    del parent
    if kernel_dtype == np.int64:
        lab = lab.view(np.uint64)
    return lab, int(nseg)


def affinity_cc(
    affinities: np.ndarray,
    threshold: float = 0.5,
    min_size: int = 0,
    *,
    mask: np.ndarray | None = None,
    small: str = "remove",
) -> np.ndarray:
    """Segment a (C, Z, Y, X) affinity array by connected components of its above-threshold edges.

    ``threshold`` in [0, 1]: an edge joins its two voxels when its affinity is strictly above it.
    ``min_size`` (voxels): smaller segments are removed (``small="remove"``) or merged into the
    neighbour they touch most strongly (``small="merge"``). ``mask`` (Z, Y, X), when given,
    restricts the segmentation to its non-zero voxels (edges into the mask's zeros are cut).
    Returns uint32 labels (uint64 for volumes of 2**32 voxels or more), (Z, Y, X), consecutive
    1..N numbered by first voxel in C order, 0 = background.
    """
    if small not in ("remove", "merge"):
        from pytc_core.errors import unknown_name_error

        raise unknown_name_error("small-segment policy", small, ["remove", "merge"])
    if min_size < 0:
        raise UserError(f"min_size {min_size} is negative", "use 0 to keep every segment")
    aff, t = prepare_affinities(np.asarray(affinities)[:3], threshold)
    lab, _ = label_array(aff, t, mask, NO_EXTENSION, NO_EXTENSION)
    if min_size > 1:
        if small == "merge":
            merge_small(lab, aff, min_size)
        else:
            sizes = np.bincount(lab.reshape(-1))
            relabel_consecutive(lab, sizes >= min_size)
    return lab
