"""Blockwise ``ws`` on a fixed fragment grid equals the whole-volume ``ws`` (``ws.fragment_block``):
a hypothesis property on synthetic defective affinities, real (FlyEM) defective affinities,
the real command and its Slurm-style shares, and the bad block size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytc_core.cli import run_entry_point
from pytc_core.synthetic import defective_affinities, synthetic_labels
from pytc_core.targets import affinities_from_labels
from pytc_core.volume import create_volume, open_volume
from pytc_decode.cli import app
from pytc_decode.ws import affinity_watershed
from pytc_decode.ws_blockwise import affinity_watershed_blockwise

DATA = Path(__file__).resolve().parents[3] / "examples" / "data" / "flyem_medulla_250.h5"


@pytest.fixture(scope="module")
def synthetic_aff() -> np.ndarray:
    labels = synthetic_labels((24, 32, 40), seed=3)
    return defective_affinities(affinities_from_labels(labels)[0], seed=2, missing=(11,))


def test_the_grid_cuts_fragments_at_cell_faces_and_joins_them_again():
    """One object filling an (8, 16, 16) volume, all affinities 1: the grid of 8 x 8 x 8 gives
    one fragment per cell (4 cells, ids by first voxel), the agglomeration joins them into one
    segment at any threshold above 0 (their shared faces score 1 - 1 = 0)."""
    from pytc_core.bbox import BBox
    from pytc_decode.ws_blockwise import grid_fragments, quantised_affinities

    aff = quantised_affinities(np.ones((3, 8, 16, 16), np.float32))
    box = BBox.from_shape((8, 16, 16))
    frags = grid_fragments(aff, box, box, box, (8, 8, 8), halo=2)
    assert sorted(np.unique(frags).tolist()) == [1, 2, 3, 4]
    for i, (y, x) in enumerate(((0, 0), (0, 8), (8, 0), (8, 8))):
        assert np.all(frags[:, y:y + 8, x:x + 8] == i + 1)
    seg = affinity_watershed(aff, 0.1, fragment_block=8, halo=2)
    assert np.all(seg == 1)


def _ball_of_weak_affinities(centre_x: int) -> tuple[np.ndarray, np.ndarray]:
    """A ball of radius 6 centred at (8, 8, ``centre_x``) in a (16, 16, 32) volume, affinity
    0.7 inside it (above the seed threshold 0.5, so its one seed is its centre), 0 across its
    surface, 1 in the object around it."""
    z, y, x = np.indices((16, 16, 32))
    ball = ((z - 8) ** 2 + (y - 8) ** 2 + (x - centre_x) ** 2 <= 36).astype(np.uint32)
    aff = affinities_from_labels(np.where(ball == 1, 1, 2).astype(np.uint32))[0]
    return ball, aff * np.where(ball == 1, np.float32(0.7), np.float32(1.0))


def test_pieces_of_one_basin_cut_by_the_grid_join_first_at_any_threshold():
    """The grid face x = 16 cuts the ball through its centre. Both cells' contexts (halo 8)
    see the ball's one seed, so its two pieces carry the same seed and are joined at score 0:
    one segment even at threshold 0.05, although the face's mean affinity is 0.7 (score
    0.3). With halo 0 the first cell does not see the centre and finds its own seed (on
    x = 15): the pieces then stay apart at 0.05 and join by their face's mean at 0.35. Whole
    volume and blockwise agree in both cases."""
    from pytc_core.bbox import BBox
    from pytc_decode.ws_blockwise import quantised_affinities, seeded_grid_fragments

    ball, aff = _ball_of_weak_affinities(16)
    q = quantised_affinities(aff)
    box = BBox.from_shape(ball.shape)
    frags, seeds = seeded_grid_fragments(q, box, box, box, (16, 16, 16), halo=8)
    inside = np.unique(frags[ball == 1])
    assert inside.size == 2 and inside.min() > 0  # one piece on each side of the face
    assert seeds[inside[0]] == seeds[inside[1]] == np.ravel_multi_index((8, 8, 16), ball.shape)
    for halo, merged_at in ((8, 0.05), (0, 0.35)):
        apart = affinity_watershed(aff, [0.05, 0.35], fragment_block=(16, 16, 16), halo=halo)
        assert isinstance(apart, list)
        for t, seg in zip((0.05, 0.35), apart, strict=True):
            assert np.unique(seg[ball == 1]).size == (1 if t >= merged_at else 2), (halo, t)
        blockwise = affinity_watershed_blockwise(aff, [0.05, 0.35], (16, 16, 16), halo,
                                                 fragment_block=(16, 16, 16))
        assert all(np.array_equal(a, b) for a, b in zip(apart, blockwise, strict=True))
    # ws.join_seeds = false: the shared seed is ignored, the face's mean decides
    kept = affinity_watershed(aff, 0.05, fragment_block=(16, 16, 16), halo=8, join_seeds=False)
    assert isinstance(kept, np.ndarray) and np.unique(kept[ball == 1]).size == 2


@settings(max_examples=12, deadline=None)
@given(grid=st.tuples(*(st.sampled_from((4, 8, 12)) for _ in range(3))),
       mult=st.tuples(*(st.integers(1, 3) for _ in range(3))),
       halo=st.integers(1, 5), threshold=st.sampled_from((0.2, 0.5, 0.8)),
       min_size=st.sampled_from((0, 10)))
def test_blockwise_equals_the_whole_volume_for_any_block_size_on_the_grid(
        synthetic_aff, grid, mult, halo, threshold, min_size):
    whole = affinity_watershed(synthetic_aff, threshold, fragment_block=grid, halo=halo,
                               min_size=min_size)
    block = tuple(g * m for g, m in zip(grid, mult, strict=True))
    blockwise = affinity_watershed_blockwise(synthetic_aff, threshold, block, halo,
                                             fragment_block=grid, min_size=min_size)
    # the same ids, not only the same partition (VOI 0.0): both number by first voxel
    np.testing.assert_array_equal(blockwise, whole)
    if min_size:  # so no segment under min_size anywhere, a face's included
        sizes = np.bincount(blockwise.reshape(-1))[1:]
        assert sizes.min() >= min_size


def test_blockwise_equals_the_whole_volume_on_real_defective_affinities():
    """FlyEM medulla, 32 x 64 x 64, defects and a missing section; grid 16, several block
    shapes and thresholds from one pass."""
    h5py = pytest.importorskip("h5py")
    with h5py.File(DATA) as f:
        labels = f["labels"][175:207, :64, :64].astype(np.uint32)
    aff = defective_affinities(affinities_from_labels(labels)[0], seed=1, missing=(9,))
    whole = affinity_watershed(aff, [0.3, 0.6], fragment_block=16, halo=8)
    assert isinstance(whole, list) and whole[0].max() > whole[1].max() > 5
    for block in ((16, 16, 16), (16, 32, 48), (32, 64, 64)):
        segs = affinity_watershed_blockwise(aff, [0.3, 0.6], block, 8, fragment_block=16)
        for b, w in zip(segs, whole, strict=True):
            np.testing.assert_array_equal(b, w)


def run(args, capsys):
    code = run_entry_point("pytc-decode", app, [str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_command_blockwise_and_its_shares_equal_the_whole_volume_command(
        tmp_path, synthetic_aff, capsys):
    aff_uri = str(tmp_path / "aff")
    create_volume(aff_uri, synthetic_aff.shape, np.float32, chunk_size=(8, 16, 16)).write(
        synthetic_aff)
    common = ["--method", "ws", "--agglomeration-threshold", "0.4", "--min-size", "20",
              "--set", "ws.halo=4", "--set", "ws.fragment_block=8", "-q"]
    code, out, err = run([aff_uri, "-o", tmp_path / "whole", *common], capsys)
    assert code == 0, err
    whole = open_volume(str(tmp_path / "whole")).read()
    assert whole.max() > 3
    code, out, err = run([aff_uri, "-o", tmp_path / "all", *common, "--block-size", "16,16,24"],
                         capsys)
    assert code == 0, err
    np.testing.assert_array_equal(open_volume(str(tmp_path / "all")).read(), whole)
    seg = tmp_path / "shares"
    for step in (["--step", "label", "--blocks", "0/2"], ["--step", "label", "--blocks", "1/2"],
                 ["--step", "reduce"], ["--step", "relabel", "--blocks", "0/2"],
                 ["--step", "relabel", "--blocks", "1/2"]):
        code, out, err = run([aff_uri, "-o", seg, *common, "--block-size", "8,16,32", *step],
                             capsys)
        assert code == 0, err
    np.testing.assert_array_equal(open_volume(str(seg)).read(), whole)


def test_a_block_size_off_the_fragment_grid_is_one_line_exit_2(tmp_path, synthetic_aff, capsys):
    aff_uri = str(tmp_path / "aff")
    create_volume(aff_uri, synthetic_aff.shape, np.float32, chunk_size=(8, 16, 16)).write(
        synthetic_aff)
    code, out, err = run([aff_uri, "-o", tmp_path / "seg", "--method", "ws", "--block-size",
                          "12", "--set", "ws.fragment_block=8"], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "not a multiple of ws fragment_block" in err
    assert not (tmp_path / "seg").exists()


def test_the_reduce_streams_block_summaries_in_any_order(synthetic_aff):
    """The agglomerate step reads summaries one at a time (a generator over their bytes), in
    any order: the same tables as in C order, and the relabelled volume equals the whole one."""
    import random

    from pytc_core.bbox import BBox
    from pytc_core.blocks import plan_blocks
    from pytc_decode.kernels import remap
    from pytc_decode.ws_blockwise import WsBlockSummary, agglomerate_blocks, ws_fragment_block

    box = BBox.from_shape(synthetic_aff.shape[1:])
    blocks = plan_blocks(box, (8, 16, 16))
    local, data = {}, []
    for block in blocks:
        context = block.grow(4).intersect(box)
        lab, summary = ws_fragment_block(synthetic_aff[(slice(None), *context.slices)], context,
                                         block, box, fragment_block=(8, 8, 8), halo=4)
        local[block.start] = lab
        data.append(summary.to_bytes())
    in_order = agglomerate_blocks((WsBlockSummary.from_bytes(d) for d in data), box, 0.5)
    random.Random(0).shuffle(data)
    shuffled = agglomerate_blocks((WsBlockSummary.from_bytes(d) for d in data), box, 0.5,
                                  block_shape=(8, 16, 16))
    out = np.zeros(box.shape, np.uint32)
    for block in blocks:
        np.testing.assert_array_equal(in_order.table(block), shuffled.table(block))
        out[block.slices] = remap(local[block.start], shuffled.table(block))
    np.testing.assert_array_equal(out, affinity_watershed(synthetic_aff, 0.5,
                                                          fragment_block=8, halo=4))
    with pytest.raises(ValueError, match="the summaries of every block are needed"):
        agglomerate_blocks((WsBlockSummary.from_bytes(d) for d in data[:-1]), box, 0.5,
                           block_shape=(8, 16, 16))
    with pytest.raises(ValueError, match="block_shape is needed"):
        agglomerate_blocks((WsBlockSummary.from_bytes(d) for d in data), box, 0.5)


def test_blockwise_fragments_and_their_history_give_every_threshold(synthetic_aff):
    """``fragments_blocks``: the fragments volume (canonical ids 1..F by first voxel) written
    block by block, relabelled through the history's table at t and numbered by first voxel,
    is the blockwise (== whole-volume) segmentation at t, for each of several thresholds."""
    from pytc_core.bbox import BBox
    from pytc_core.blocks import plan_blocks
    from pytc_core.merge_history import MergeHistory
    from pytc_decode.kernels import remap
    from pytc_decode.ws import number_by_first_voxel
    from pytc_decode.ws_blockwise import fragments_blocks, ws_fragment_block

    box = BBox.from_shape(synthetic_aff.shape[1:])
    blocks = plan_blocks(box, (16, 16, 8))
    local, summaries = {}, []
    for block in blocks:
        context = block.grow(3).intersect(box)
        lab, summary = ws_fragment_block(synthetic_aff[(slice(None), *context.slices)], context,
                                         block, box, fragment_block=(8, 8, 8), halo=3)
        local[block.start] = lab
        summaries.append(summary)
    thresholds = (0.2, 0.5, 0.8)
    tables, history = fragments_blocks(summaries, box, max(thresholds), thresholds=thresholds)
    assert isinstance(history, MergeHistory) and history.thresholds == thresholds
    fragments = np.zeros(box.shape, np.uint64)
    for block in blocks:
        fragments[block.slices] = remap(local[block.start], tables.table(block))
    ids = np.unique(fragments)
    assert np.array_equal(ids[ids != 0], np.arange(1, tables.num_segments + 1))  # no mask: no 0
    np.testing.assert_array_equal(number_by_first_voxel(fragments.copy()), fragments)
    whole = affinity_watershed(synthetic_aff, list(thresholds), fragment_block=8, halo=3)
    for t, w in zip(thresholds, whole, strict=True):
        seg = number_by_first_voxel(history.segment_table(t)[fragments])
        np.testing.assert_array_equal(seg, w)


def test_grid_ws_fragments_and_history_give_the_grid_segmentation(synthetic_aff):
    """The whole-volume grid twin of ``ws_fragments``: its fragments through its history at t
    are the grid ws at t (what ``--fragments-only`` on the grid writes)."""
    from pytc_decode.ws import segmentations_at
    from pytc_decode.ws_blockwise import grid_ws_fragments

    fragments, history = grid_ws_fragments(synthetic_aff, 0.8, 8, 3)
    whole = affinity_watershed(synthetic_aff, [0.2, 0.8], fragment_block=8, halo=3)
    for seg, w in zip(segmentations_at(fragments, history, [0.2, 0.8]), whole, strict=True):
        np.testing.assert_array_equal(seg, w)
