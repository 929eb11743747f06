"""Blockwise decoding gives exactly the whole-volume result (same partition, same ids)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from pytc_core.bbox import BBox
from pytc_core.synthetic import synthetic_labels
from pytc_core.targets import affinities_from_labels
from pytc_decode import affinity_cc
from pytc_decode.blockwise import (
    BlockSummary,
    affinity_cc_blockwise,
    label_block,
    reduce_blocks,
)

SHAPE = (12, 10, 14)
SPLITS = {"2x2x2": (6, 5, 7), "3x1x2": (4, 10, 7)}


def crossing_volume() -> np.ndarray:
    """Hand-made affinities: objects crossing every face of both block grids, and face voxels
    whose only edge crosses a face (kept) or that have no edge at all (background)."""
    labels = np.zeros(SHAPE, np.int64)
    labels[:, 4:6, 6:8] = 1            # a z-rod crossing every z face, sitting on x = 7 faces
    labels[5:7, :, 2] = 2              # a y-slab crossing the y face at 5
    labels[2, 3, :] = 3                # an x-line crossing the x face at 7
    labels[8:12, 8:10, 0:14] = 4       # a bar at the far corner crossing x faces
    labels[6, 9, 3] = 5                # single voxel: background
    aff = affinities_from_labels(labels)[0]
    # a voxel pair split by the z face at 6 (blocks 4 and 6 of 2x2x2) with only that edge
    aff[0, 6, 0, 12] = 0.9
    # a voxel pair split by the x face at 7 whose edge is on
    aff[2, 0, 9, 7] = 0.8
    # an edge on the z face at 4 (3x1x2 split) between two otherwise empty voxels
    aff[0, 4, 1, 10] = 0.7
    return aff


@pytest.mark.parametrize("split", sorted(SPLITS))
def test_blockwise_equals_whole_volume_on_hand_made_crossings(split):
    aff = crossing_volume()
    whole = affinity_cc(aff)
    assert whole.max() == 7  # 4 objects + 3 two-voxel pairs; the single voxel is background
    np.testing.assert_array_equal(affinity_cc_blockwise(aff, block_size=SPLITS[split]), whole)


@pytest.mark.parametrize("split", sorted(SPLITS))
@pytest.mark.parametrize("min_size", [0, 30])
def test_blockwise_equals_whole_volume_on_neurites(split, min_size):
    labels = synthetic_labels(SHAPE, seed=11, radius_range=(1.0, 3.0))
    aff = affinities_from_labels(labels)[0]
    rng = np.random.default_rng(2)
    aff = np.clip(aff + rng.uniform(-0.55, 0.55, aff.shape), 0, 1).astype(np.float32)
    mask = rng.random(SHAPE) < 0.9
    for m in (None, mask):
        whole = affinity_cc(aff, 0.5, min_size, mask=m)
        blocked = affinity_cc_blockwise(aff, 0.5, min_size, SPLITS[split], mask=m)
        np.testing.assert_array_equal(blocked, whole)
        assert whole.max() >= (1 if min_size else 20)


@settings(max_examples=40, deadline=None)
@given(aff=arrays(np.float32, st.tuples(st.just(3), st.integers(1, 7), st.integers(1, 7),
                                        st.integers(1, 7)),
                  elements=st.sampled_from([0.0, 0.4, 0.6, 1.0])),
       block=st.tuples(st.integers(1, 4), st.integers(1, 4), st.integers(1, 4)),
       min_size=st.sampled_from([0, 3]))
def test_blockwise_equals_whole_volume_random(aff, block, min_size):
    np.testing.assert_array_equal(affinity_cc_blockwise(aff, 0.5, min_size, block),
                                  affinity_cc(aff, 0.5, min_size))


def test_summary_round_trips_and_reduce_needs_every_block():
    aff = crossing_volume()
    volume = BBox.from_shape(SHAPE)
    box = BBox((0, 0, 0), (6, 5, 7))
    lab, summary = label_block(aff[(slice(None), *box.slices)], 0.5, box, volume)
    again = BlockSummary.from_bytes(summary.to_bytes())
    assert again.bbox == box and again.num_labels == summary.num_labels == lab.max()
    for name in ("sizes", "first"):
        np.testing.assert_array_equal(getattr(again, name), getattr(summary, name))
    for name in ("low_labels", "high_labels", "low_edges"):
        for a, b in zip(getattr(again, name), getattr(summary, name), strict=True):
            np.testing.assert_array_equal(a, b)
    # the first voxel of each local segment is its global C-order index
    z, y, x = np.unravel_index(summary.first[1:], SHAPE)
    np.testing.assert_array_equal(lab[z, y, x], np.arange(1, summary.num_labels + 1))
    box2 = BBox((6, 0, 0), (12, 5, 7))
    _, s2 = label_block(aff[(slice(None), *box2.slices)], 0.5, box2, volume)
    with pytest.raises(ValueError, match="no neighbour below"):
        reduce_blocks([s2], volume)


def test_the_reduce_streams_one_summary_at_a_time():
    """reduce_blocks_streaming loads each block's summary once, holds at most one summary
    object alive, and gives the whole-volume decode after relabelling."""
    import gc
    import weakref

    from pytc_core.blocks import plan_blocks
    from pytc_decode.blockwise import reduce_blocks_streaming, relabel_block

    labels = synthetic_labels((24, 20, 28), seed=3)
    aff = affinities_from_labels(labels)[0]
    aff[:, 5:9, 4:12, 6:20] = 0.2  # a defect across block faces
    box = BBox.from_shape(labels.shape)
    blocks = list(plan_blocks(box, (8, 10, 7)))[::-1]  # any order: the reduce sorts
    local, stored = {}, []
    for b in blocks:
        lab, summary = label_block(aff[(slice(None), *b.slices)], 0.5, b, box)
        local[b.start] = lab
        stored.append(summary.to_bytes())
    loads: list[int] = []
    refs: list[weakref.ref] = []
    most = 0

    def load(i: int) -> BlockSummary:
        nonlocal most
        gc.collect()
        loads.append(i)
        s = BlockSummary.from_bytes(stored[i])
        refs.append(weakref.ref(s))
        most = max(most, sum(r() is not None for r in refs))
        return s

    tables = reduce_blocks_streaming(blocks, load, box, min_size=3)
    assert sorted(loads) == list(range(len(blocks))) and most == 1
    out = np.zeros(labels.shape, np.uint32)
    for b in blocks:
        out[b.slices] = relabel_block(local[b.start], tables.table(b))
    np.testing.assert_array_equal(out, affinity_cc(aff, 0.5, min_size=3))
