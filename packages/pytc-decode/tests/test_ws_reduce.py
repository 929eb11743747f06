"""The two-level ws reduce (:func:`pytc_decode.ws_blockwise.block_history`): each block
agglomerated on its own with its face fragments frozen, then one agglomeration of what is left,
gives the flat agglomeration's merges (the same rows, the same segmentation at every
threshold), on hand-made graphs, on hypothesis-generated affinities full of ties and on real
(FlyEM) defective affinities."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytc_core.bbox import BBox
from pytc_core.blocks import plan_blocks
from pytc_decode.agglomeration import RegionGraph, agglomerate, agglomerate_frozen, merge_roots
from pytc_decode.ws_blockwise import block_history, quantised_affinities, ws_fragment_block

DATA = Path(__file__).resolve().parents[3] / "examples" / "data" / "flyem_medulla_250.h5"


def graph(n: int, edges: list[tuple[int, int, float]]) -> RegionGraph:
    u, v, score = (np.array(c) for c in zip(*edges, strict=True))
    return RegionGraph(n, u.astype(np.int64), v.astype(np.int64), 1.0 - score,
                       np.ones(len(edges), np.int64), score.astype(np.float64))


def test_a_merge_next_to_a_frozen_node_waits_and_an_inner_one_is_made():
    # 1-2 (0.125) is the lowest edge of both: made. 3's lowest edge leads to frozen 4: 3
    # freezes, and then so does region {1, 2}, whose lowest edge leads to 3.
    g = graph(4, [(1, 2, 0.125), (2, 3, 0.25), (3, 4, 0.1875)])
    rows, roots, frozen, residual = agglomerate_frozen(g, np.array([0, 0, 0, 0, 1], bool), 1.0)
    assert rows.tolist() == [[2.0, 1.0, 0.125]]
    assert roots.tolist() == [0, 1, 1, 3, 4]
    assert frozen.tolist() == [False, True, False, True, True]
    edges = zip(residual.u.tolist(), residual.v.tolist(), residual.score.tolist(), strict=True)
    assert sorted(edges) == [(1, 3, 0.25), (3, 4, 0.1875)]
    # the whole graph's agglomeration (4's other edges included) makes that merge first too
    assert agglomerate(g, 1.0)[0].tolist() == [2.0, 1.0, 0.125]


def test_a_tie_is_merged_unless_it_reaches_a_frozen_node():
    # 1-2 and 1-3 tie at 0.125; 3-4 (frozen 4) scores more: the tie's order is the piece's
    # own, both merges are made; 3-4 waits
    g = graph(4, [(1, 2, 0.125), (1, 3, 0.125), (3, 4, 0.5)])
    rows, _, frozen, _ = agglomerate_frozen(g, np.array([0, 0, 0, 0, 1], bool), 1.0)
    assert rows.tolist() == [[2.0, 1.0, 0.125], [3.0, 1.0, 0.125]]
    assert frozen.tolist() == [False, True, False, False, True]
    # the tie reaches frozen 4 (3-4 at 0.125 too): whether 4's region, named by an id from
    # outside the piece, goes first is not known here, so nothing is merged
    g = graph(4, [(1, 2, 0.125), (1, 3, 0.125), (3, 4, 0.125)])
    rows, roots, frozen, residual = agglomerate_frozen(g, np.array([0, 0, 0, 0, 1], bool), 1.0)
    assert rows.shape == (0, 3) and roots.tolist() == [0, 1, 2, 3, 4]
    assert frozen[1:].all() and residual.u.size == 3


def test_a_region_never_frozen_is_finished():
    # 1-2 merge; {1, 2} - 3 scores 0.75, above the threshold: {1, 2} never freezes, and is
    # not in the residual graph; 3 and frozen 4 are
    g = graph(4, [(1, 2, 0.0), (2, 3, 0.75), (3, 4, 0.25)])
    rows, _, frozen, residual = agglomerate_frozen(g, np.array([0, 0, 0, 0, 1], bool), 0.5)
    assert rows.tolist() == [[2.0, 1.0, 0.0]]
    assert frozen.tolist() == [False, False, False, True, True]
    assert list(zip(residual.u.tolist(), residual.v.tolist(), strict=True)) == [(3, 4)]


def summaries(aff: np.ndarray, block: tuple[int, int, int], halo: int = 4,
              max_threshold: float | None = None) -> tuple[list, BBox]:
    box = BBox.from_shape(aff.shape[1:])
    out = []
    for b in plan_blocks(box, block):
        context = b.grow(halo).intersect(box)
        out.append(ws_fragment_block(aff[(slice(None), *context.slices)], context, b, box,
                                     max_threshold=max_threshold)[1])
    return out, box


def assert_same_history(summ: list, box: BBox, max_threshold: float,
                        done: list | None = None) -> int:
    """The flat reduce on ``summ`` vs the two levels on ``summ`` and on ``done`` (the same
    blocks, each agglomerated on its own by the label step)."""
    flat_fragments, flat = block_history(summ, box, max_threshold, flat=True)
    fragments, history = block_history(summ, box, max_threshold)
    if done is not None:
        assert all(s.threshold == max_threshold for s in done)
        again = block_history([type(s).from_bytes(s.to_bytes()) for s in done], box,
                              max_threshold)[1]
        np.testing.assert_array_equal(again, history)
    np.testing.assert_array_equal(fragments.canon, flat_fragments.canon)
    # the same merges (equal scores may be listed in another order) ...
    order = np.lexsort((flat[:, 0], flat[:, 2]))
    np.testing.assert_array_equal(history[np.lexsort((history[:, 0], history[:, 2]))],
                                  flat[order])
    assert np.all(np.diff(history[:, 2]) >= 0)
    # ... so the same regions at every threshold
    for t in (0.0, 0.25, 0.5, 0.75, max_threshold):
        np.testing.assert_array_equal(merge_roots(history, fragments.total, t),
                                      merge_roots(flat, fragments.total, t))
    return len(history)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), levels=st.sampled_from((2, 4, 255)),
       block=st.tuples(*(st.integers(3, 9) for _ in range(3))),
       max_threshold=st.sampled_from((0.3, 0.6, 1.0)))
def test_two_levels_make_the_flat_merges_on_affinities_full_of_ties(seed, levels, block,
                                                                    max_threshold):
    rng = np.random.default_rng(seed)
    # smooth random affinities on a coarse set of values: many equal scores
    raw = rng.random((3, 4, 5, 5))
    aff = np.kron(raw, np.ones((1, 3, 3, 3)))[:, :10, :13, :12]
    aff = np.round(aff * levels) / levels
    aff = np.clip(aff + (rng.random(aff.shape) < 0.1) * 0.5, 0, 1).astype(np.float32)
    summ, box = summaries(quantised_affinities(aff), block, halo=2)
    done, _ = summaries(quantised_affinities(aff), block, halo=2, max_threshold=max_threshold)
    assert_same_history(summ, box, max_threshold, done)


def test_two_levels_make_the_flat_merges_on_real_defective_affinities():
    from pytc_core.synthetic import defective_affinities
    from pytc_core.targets import affinities_from_labels

    with h5py.File(DATA) as f:
        labels = f["labels"][100:148, :96, :96].astype(np.uint32)
    aff = quantised_affinities(
        defective_affinities(affinities_from_labels(labels)[0], seed=0, missing=(10,)))
    for block in ((16, 32, 32), (24, 48, 48)):
        summ, box = summaries(aff, block)
        done, _ = summaries(aff, block, max_threshold=0.9)
        assert assert_same_history(summ, box, 0.9, done) > 500
        # the level-0 summaries hold fewer edges than the block graphs
        assert sum(s.u.size for s in done) < sum(s.u.size for s in summ)
    with pytest.raises(ValueError, match="agglomerated up to 0.9"):
        block_history(done, box, 0.5)
    with pytest.raises(ValueError, match="lacks the edges"):
        block_history(done, box, 0.9, flat=True)


def two_level(g: RegionGraph, piece: np.ndarray, max_threshold: float) -> np.ndarray:
    """The reduce's two levels on any graph cut into pieces (``piece[node]``): each piece
    agglomerated with its nodes that have edges to other pieces frozen, then one flat
    agglomeration of the residual graphs plus the edges between pieces."""
    cross = piece[g.u] != piece[g.v]
    frozen = np.zeros(g.num_fragments + 1, bool)
    frozen[g.u[cross]] = frozen[g.v[cross]] = True
    rows_all, left = [], [np.flatnonzero(cross)]
    region = np.arange(g.num_fragments + 1)
    parts = []
    for p in np.unique(piece[1:]):
        inner = (piece[g.u] == p) & (piece[g.v] == p)
        # the piece's nodes keep their ids: node order is the whole graph's
        sub = RegionGraph(g.num_fragments, g.u[inner], g.v[inner], g.affinity_sum[inner],
                          g.edge_count[inner], g.score[inner])
        rows, roots, _, residual = agglomerate_frozen(sub, frozen & (piece == p),
                                                      max_threshold)
        rows_all.append(rows)
        mine = piece == p
        region[mine] = roots[mine]
        parts.append(residual)
    u = np.concatenate([region[g.u[left[0]]], *(r.u for r in parts)])
    v = np.concatenate([region[g.v[left[0]]], *(r.v for r in parts)])
    s = np.concatenate([g.affinity_sum[left[0]], *(r.affinity_sum for r in parts)])
    c = np.concatenate([g.edge_count[left[0]], *(r.edge_count for r in parts)])
    big = g.num_fragments + 1
    k = np.concatenate([g.u[left[0]] * big + g.v[left[0]], *(r.key for r in parts)])
    pairs, inv = np.unique(np.minimum(u, v) * big + np.maximum(u, v), return_inverse=True)
    sums = np.bincount(inv, weights=s)
    counts = np.bincount(inv, weights=c).astype(np.int64)
    keys = np.full(pairs.size, np.iinfo(np.int64).max)
    np.minimum.at(keys, inv, k)  # an edge's key: the lowest fragment pair it joins
    top = agglomerate(RegionGraph(g.num_fragments, pairs // big, pairs % big, sums, counts,
                                  1.0 - sums / counts, keys), max_threshold)
    history = np.concatenate([*rows_all, top]).reshape(-1, 3)
    return history[np.argsort(history[:, 2], kind="stable")]


@settings(max_examples=600, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(4, 60), density=st.floats(1.0, 5.0),
       levels=st.sampled_from((1, 2, 4, 256)), pieces=st.integers(1, 5),
       max_threshold=st.sampled_from((0.3, 0.6, 1.0, 1.5)))
def test_two_levels_make_the_flat_merges_on_any_graph_cut_into_pieces(
        seed, n, density, levels, pieces, max_threshold):
    rng = np.random.default_rng(seed)
    m = int(density * n)
    a, b = rng.integers(1, n + 1, m), rng.integers(1, n + 1, m)
    keep = a != b
    pairs = np.unique(np.minimum(a, b)[keep] * (n + 1) + np.maximum(a, b)[keep])
    u, v = pairs // (n + 1), pairs % (n + 1)
    counts = rng.integers(1, 4, pairs.size)
    sums = rng.integers(0, levels + 1, pairs.size) / levels * counts  # exact: levels 2**k
    g = RegionGraph(n, u, v, sums.astype(np.float64), counts.astype(np.int64),
                    1.0 - sums / counts)
    piece = rng.integers(0, pieces, n + 1)  # pieces interleave: outside names may be lower
    flat = agglomerate(g, max_threshold)
    history = two_level(g, piece, max_threshold)
    np.testing.assert_array_equal(history[np.lexsort((history[:, 0], history[:, 2]))],
                                  flat[np.lexsort((flat[:, 0], flat[:, 2]))])
