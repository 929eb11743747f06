"""The compiled watershed kernels against plain reference implementations: the padded
block-queue flood against the unpadded linked-list flood it replaced, the seeds' distance
transform against edt, the seed components against pytc's CC kernel, the counting-sort
region graph against the sorted one, and the one-pass relabelling against np.unique (the
agglomeration's oracle test is test_agglomeration.py)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit

from pytc_decode.agglomeration import (
    RegionGraph,
    agglomerate,
    boundary_edges,
    group_pairs,
    merge_roots,
    number_by_first_voxel,
    region_graph,
    segmentations_at,
    sum_groups,
)
from pytc_decode.fragments import _label_mask, _unit_edt, flood


@njit(cache=True)
def reference_flood(aff, seeds, mask, use_mask, levels):
    """Seeded watershed on the affinity graph (a minimum spanning forest grown from the seeds).

    Seeds are final at level 0. A final voxel offers each neighbour its label at the level
    ``round((1 - a) * (levels - 1))`` of the edge between them (a = its affinity; never below
    the level being processed); a voxel keeps its lowest offer (the first, among equal ones)
    and becomes final when that offer is taken from the bucket queue. So every voxel joins the
    seed it is linked to through the highest-affinity path, FIFO within a level: deterministic.
    Voxels outside the mask and voxels no seed reaches stay 0.
    """
    _, Z, Y, X = aff.shape
    n = Z * Y * X
    lab = seeds.copy().reshape(n)
    best = np.full(n, levels, np.int32)  # lowest level offered; -1 once final
    flat_mask = mask.reshape(n)
    head = np.full(levels, -1, np.int64)
    tail = np.full(levels, -1, np.int64)
    # the queue entries (a voxel, the next entry of its level), grown when full
    ent_voxel = np.empty(n + 64, np.int64)
    ent_next = np.empty(n + 64, np.int64)
    size = 0
    for v in range(n):  # every seed voxel at level 0, in C order
        if lab[v] != 0:
            best[v] = 0
            ent_voxel[size] = v
            ent_next[size] = -1
            if tail[0] < 0:
                head[0] = size
            else:
                ent_next[tail[0]] = size
            tail[0] = size
            size += 1
    YX = Y * X
    scale = levels - 1
    for level in range(levels):
        while head[level] >= 0:
            e = head[level]
            head[level] = ent_next[e]
            if head[level] < 0:
                tail[level] = -1
            v = ent_voxel[e]
            if best[v] != level:
                continue  # final already, or offered a lower level since this entry
            best[v] = -1
            z = v // YX
            r = v - z * YX
            y = r // X
            x = r - y * X
            for d in range(6):
                if d == 0:
                    if z == 0:
                        continue
                    u = v - YX
                    a = aff[0, z, y, x]
                elif d == 1:
                    if z + 1 >= Z:
                        continue
                    u = v + YX
                    a = aff[0, z + 1, y, x]
                elif d == 2:
                    if y == 0:
                        continue
                    u = v - X
                    a = aff[1, z, y, x]
                elif d == 3:
                    if y + 1 >= Y:
                        continue
                    u = v + X
                    a = aff[1, z, y + 1, x]
                elif d == 4:
                    if x == 0:
                        continue
                    u = v - 1
                    a = aff[2, z, y, x]
                else:
                    if x + 1 >= X:
                        continue
                    u = v + 1
                    a = aff[2, z, y, x + 1]
                if best[u] < 0 or (use_mask and not flat_mask[u]):
                    continue
                q = int((1.0 - a) * scale + 0.5)
                if q < level:
                    q = level
                elif q > scale:
                    q = scale
                if q >= best[u]:
                    continue
                best[u] = q
                lab[u] = lab[v]
                if size == ent_voxel.size:
                    grown = np.empty(2 * size, np.int64)
                    grown[:size] = ent_voxel
                    ent_voxel = grown
                    grown = np.empty(2 * size, np.int64)
                    grown[:size] = ent_next
                    ent_next = grown
                ent_voxel[size] = u
                ent_next[size] = -1
                if tail[q] < 0:
                    head[q] = size
                else:
                    ent_next[tail[q]] = size
                tail[q] = size
                size += 1
    return lab.reshape((Z, Y, X))




def _graph(seed: int, n: int, m: int, ties: bool) -> RegionGraph:
    rng = np.random.default_rng(seed)
    a, b = rng.integers(1, n + 1, m), rng.integers(1, n + 1, m)
    keep = a != b
    a, b = np.minimum(a, b)[keep], np.maximum(a, b)[keep]
    _, _, u, v = group_pairs(a, b, n)
    counts = rng.integers(1, 20, u.size).astype(np.int64)
    mean = rng.integers(0, 5, u.size) / 4.0 if ties else rng.random(u.size)
    sums = mean * counts
    return RegionGraph(n, u, v, sums, counts, 1.0 - sums / counts)


def test_agglomerate_by_hand():
    # 1-2 (0.1), 2-3 (0.2), 1-3 (0.9): merge 1-2 (2 kept: more neighbours? equal, the lower
    # id 1 is kept), then the two edges to 3 combine: mean of (0.8*1 + 0.1*1) / 2 = 0.45 ->
    # score 0.55
    graph = RegionGraph(3, np.array([1, 1, 2]), np.array([2, 3, 3]),
                        np.array([0.9, 0.1, 0.8]), np.array([1, 1, 1]),
                        np.array([0.1, 0.9, 0.2]))
    rows = agglomerate(graph, 1.0)
    np.testing.assert_allclose(rows, [[2, 1, 0.1], [3, 1, 0.55]])
    assert agglomerate(graph, 0.5).tolist() == [[2.0, 1.0, 0.1]]


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), shape=st.tuples(st.integers(1, 9), st.integers(1, 9),
                                                        st.integers(1, 9)),
       masked=st.booleans(), coarse=st.booleans())
def test_flood_equals_the_reference(seed, shape, masked, coarse):
    rng = np.random.default_rng(seed)
    aff = rng.random((3, *shape)).astype(np.float32)
    if coarse:  # many equal levels: the FIFO order decides
        aff = np.round(aff * 3) / 3
    seeds = np.zeros(shape, np.uint32)
    k = max(1, seeds.size // 10)
    seeds.reshape(-1)[rng.choice(seeds.size, k, replace=False)] = np.arange(1, k + 1)
    mask = rng.random(shape) > 0.2 if masked else np.ones(shape, bool)
    for levels in (256, 7):
        np.testing.assert_array_equal(flood(aff, seeds, mask, masked, levels),
                                      reference_flood(aff, seeds, mask, masked, levels))


def test_flood_queue_grows_past_its_first_storage():
    # a 1-voxel-wide tube of 5000 voxels: every voxel queued, more than a queue block
    aff = np.zeros((3, 1, 1, 5000), np.float32)
    aff[2] = np.linspace(1.0, 0.0, 5000)
    seeds = np.zeros((1, 1, 5000), np.uint32)
    seeds[0, 0, 0] = 7
    out = flood(aff, seeds, np.ones(seeds.shape, bool), False, 256)
    assert (out == 7).all()


def test_segmentations_equal_unique_numbering():
    rng = np.random.default_rng(3)
    fragments = rng.integers(0, 40, (6, 7, 8)).astype(np.uint32)
    graph = _graph(5, 39, 300, True)
    history = agglomerate(graph, 1.01)
    thresholds = [0.0, 0.3, 0.6, 1.01, 0.3, 0.05]  # one replay, in any order
    for t, seg in zip(thresholds, segmentations_at(fragments, history, thresholds),
                      strict=True):
        expected = number_by_first_voxel(merge_roots(history, 39, t)[fragments]
                                         .astype(np.uint32))
        np.testing.assert_array_equal(seg, expected)


def test_flood_storage_grows_and_resumes():
    # 64³ voxels, 20 seeds, 2 levels, 40 % of the edges at level 0: level 0 floods the
    # percolating cluster while most other voxels wait on level 1, more than the first
    # storage (n / 4 entries) holds: the loop stops, the storage doubles (twice) and it
    # resumes
    rng = np.random.default_rng(11)
    shape = (64, 64, 64)
    aff = (rng.random((3, *shape)) < 0.4).astype(np.float32)
    seeds = np.zeros(shape, np.uint32)
    seeds.reshape(-1)[rng.choice(seeds.size, 20, replace=False)] = np.arange(1, 21)
    ones = np.ones(shape, bool)
    np.testing.assert_array_equal(flood(aff, seeds, ones, False, 2),
                                  reference_flood(aff, seeds, ones, False, 2))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), shape=st.tuples(st.integers(1, 7), st.integers(1, 30),
                                                        st.integers(1, 30)),
       fill=st.sampled_from([0.0, 0.3, 0.9, 0.995, 1.0]))
def test_unit_edt_equals_edt(seed, shape, fill):
    import edt

    interior = np.random.default_rng(seed).random(shape) < fill
    np.testing.assert_array_equal(
        _unit_edt(interior, False),
        edt.edt(interior, anisotropy=(1.0, 1.0, 1.0), black_border=False))
    per_section = np.stack([edt.edt(np.ascontiguousarray(s), anisotropy=(1.0, 1.0),
                                    black_border=False) for s in interior])
    np.testing.assert_array_equal(_unit_edt(interior, True), per_section)


def reference_label_mask(mask: np.ndarray, in_plane: bool) -> np.ndarray:
    """pytc's CC kernel with every edge on (single voxels left as background), then the single
    voxels numbered after it in C order."""
    from pytc_decode.cc import affinity_cc

    edges = np.full((3, *mask.shape), 255, np.uint8)
    if in_plane:
        edges[0] = 0
    labels = affinity_cc(edges, 0.5, mask=mask).astype(np.uint32)
    single = mask & (labels == 0)
    start = int(labels.max()) + 1
    labels[single] = np.arange(start, start + int(single.sum()), dtype=np.uint32)
    return labels


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), shape=st.tuples(st.integers(1, 6), st.integers(1, 12),
                                                        st.integers(1, 12)),
       fill=st.sampled_from([0.05, 0.3, 0.6, 1.0]), in_plane=st.booleans())
def test_label_mask_numbering(seed, shape, fill, in_plane):
    mask = np.random.default_rng(seed).random(shape) < fill
    np.testing.assert_array_equal(_label_mask(mask, in_plane),
                                  reference_label_mask(mask, in_plane))


def sorted_mean_graph(fragments: np.ndarray, aff: np.ndarray) -> RegionGraph:
    """The mean region graph by sorting every boundary edge by (pair, affinity) and summing
    each pair's run (NumPy's reduceat)."""
    a, b, w = boundary_edges(fragments, aff)
    n = int(fragments.max())
    order, starts, u, v = group_pairs(a, b, n, tiebreak=w + np.float32(0.0))
    w = (w + np.float32(0.0))[order].astype(np.float64)
    sums = sum_groups(w, starts)
    counts = sum_groups(np.ones(w.size, np.int64), starts)
    return RegionGraph(n, u, v, sums, counts, 1.0 - sums / np.maximum(counts, 1))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), ids=st.integers(1, 30),
       tiny=st.sampled_from([None, 0.0, 1e-30, 1e-3]), scale=st.sampled_from([1.0, 3.0]))
def test_counting_sort_graph_equals_the_sorted_one(seed, ids, tiny, scale):
    rng = np.random.default_rng(seed)
    fragments = rng.integers(0, ids + 1, (5, 9, 11)).astype(np.uint32)
    aff = (rng.random((3, 5, 9, 11)) * scale).astype(np.float32)
    if tiny is not None:  # 1e-30: sums that are not exact, the sorted path decides
        aff[rng.random(aff.shape) < 0.1] = tiny
    got = region_graph(fragments, aff)
    want = sorted_mean_graph(fragments, aff)
    assert got.num_fragments == want.num_fragments
    for field in ("u", "v", "affinity_sum", "edge_count", "score"):
        np.testing.assert_array_equal(getattr(got, field), getattr(want, field))
        assert getattr(got, field).dtype == getattr(want, field).dtype


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**31), st.integers(1, 6), st.booleans())
def test_one_pass_numbering_and_measures_equal_np_unique(seed, top, strided):
    """number_and_measure (ids by first voxel, in place, one pass) against np.unique: the
    same numbering, each new id's first voxel and size, the old → new table; also on a
    non-contiguous view, which it writes back."""
    from pytc_decode.agglomeration import number_and_measure
    from pytc_decode.ws_blockwise import seed_keys

    rng = np.random.default_rng(seed)
    base = rng.integers(0, top + 1, (5, 6, 14)).astype(np.uint32) * 7  # gaps between ids
    labels = base[:, :, ::2] if strided else base.copy()
    before = labels.copy()
    ids, first, sizes = np.unique(before.reshape(-1), return_index=True, return_counts=True)
    nz = ids != 0
    order = np.argsort(first[nz])
    expected = np.zeros(int(ids[-1]) + 1, np.int64)
    expected[ids[nz][order]] = np.arange(1, order.size + 1)
    out, table, got_first, got_sizes = number_and_measure(labels)
    assert out is labels
    np.testing.assert_array_equal(labels, expected[before])
    np.testing.assert_array_equal(table, expected)
    np.testing.assert_array_equal(got_first[1:], np.sort(first[nz]))
    np.testing.assert_array_equal(got_sizes[1:], sizes[nz][order])
    assert got_first[0] == -1 and got_sizes[0] == (before == 0).sum()
    # seed keys: each id's first voxel as a global index (context at (1, 2, 3) of 10x10x20)
    from pytc_core.bbox import BBox

    keys = seed_keys(before, BBox((1, 2, 3), (6, 8, 3 + before.shape[2])),
                     BBox((0, 0, 0), (10, 10, 20)))
    for i, f in zip(ids[nz], first[nz], strict=True):
        z, y, x = np.unravel_index(f, before.shape)
        assert keys[i] == np.ravel_multi_index((z + 1, y + 2, x + 3), (10, 10, 20))
    absent = np.setdiff1d(np.arange(keys.size), ids[nz])
    assert np.all(keys[absent] == -1)


def test_one_pass_numbering_of_all_background():
    from pytc_decode.agglomeration import number_and_measure

    labels = np.zeros((2, 3, 4), np.uint32)
    _, table, first, sizes = number_and_measure(labels)
    assert table.tolist() == [0] and first.tolist() == [-1] and sizes.tolist() == [24]
