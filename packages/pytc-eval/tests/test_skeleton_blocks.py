"""Blockwise kimimaro: pieces joined across block faces, same skeletons for any --workers."""

import json

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from pytc_core.bbox import BBox
from pytc_eval.erl import edge_lengths, expected_run_length
from pytc_eval.eval import EvalConfig, run_eval
from pytc_eval.skeleton_blocks import (
    merge_block_skeletons,
    skeleton_blocks,
    skeletonize_blockwise,
)
from pytc_eval.skeletons import KimimaroParams, node_segments

VS = (10.0, 10.0, 10.0)
PARAMS = KimimaroParams(dust_threshold=0)


def tubes(n: int = 64) -> np.ndarray:
    """Three straight tubes of radius 3 voxels, each crossing the whole cube (and so every
    32³ block face across its axis): along x (label 1), z (label 2) and y (label 3)."""
    z, y, x = np.mgrid[:n, :n, :n]
    lab = np.zeros((n, n, n), np.uint16)
    lab[(z - 16) ** 2 + (y - 20) ** 2 <= 9] = 1
    lab[(y - 44) ** 2 + (x - 40) ** 2 <= 9] = 2
    lab[(z - 44) ** 2 + (x - 12) ** 2 <= 9] = 3
    return lab


def _components(skel) -> int:
    idx = skel.edge_index()
    graph = sp.coo_matrix((np.ones(len(idx)), (idx[:, 0], idx[:, 1])),
                          shape=(skel.num_nodes, skel.num_nodes))
    return int(connected_components(graph, directed=False)[0])


def _cable(skel) -> dict[int, float]:
    lengths = edge_lengths(skel, VS)
    owner = skel.skeleton_ids[skel.edge_index()[:, 0]]
    return {int(k): float(lengths[owner == k].sum()) for k in np.unique(skel.skeleton_ids)}


def test_blocks_share_one_plane():
    blocks = skeleton_blocks(BBox((0, 0, 0), (64, 64, 40)), 32)
    assert len(blocks) == 8
    core, read = blocks[0]
    assert core == BBox((0, 0, 0), (32, 32, 32)) and read == BBox((0, 0, 0), (33, 33, 33))
    core, read = blocks[-1]
    assert core == BBox((32, 32, 32), (64, 64, 40)) and read == core  # clipped at the far face
    assert skeleton_blocks(BBox((0, 0, 0), (5, 5, 5)), 0) == [(BBox((0, 0, 0), (5, 5, 5)),) * 2]


def test_merge_fuses_shared_vertices():
    lab = np.array([7, 7], np.uint64)
    a = (lab, np.array([[0.0, 0, 0], [0, 0, 4]]), np.array([[0, 1]]))
    b = (lab, np.array([[0.0, 0, 4], [0, 0, 9.0000001]]), np.array([[1, 0]]))
    skel = merge_block_skeletons([b, a])
    assert skel.positions.tolist() == [[0, 0, 0], [0, 0, 4], [0, 0, 9]]
    assert skel.edges.tolist() == [[0, 1], [1, 2]] and skel.skeleton_ids.tolist() == [7] * 3
    # another label at the same voxel stays apart
    c = (np.array([8, 8], np.uint64), np.array([[0.0, 0, 4], [0, 1, 4]]), np.array([[0, 1]]))
    assert merge_block_skeletons([a, c]).num_nodes == 4


def test_tubes_join_across_faces_and_match_whole_volume():
    lab = tubes()
    region = BBox.from_shape(lab.shape)
    whole = skeletonize_blockwise(lab, region, VS, PARAMS, block=0, workers=1)
    blocks = skeletonize_blockwise(lab, region, VS, PARAMS, block=32, workers=1)
    assert _components(blocks) == 3 == blocks.num_skeletons  # one connected skeleton each
    # each tube's skeleton runs from face to face: 63 voxels of 10 nm
    assert _cable(whole) == pytest.approx({1: 630.0, 2: 630.0, 3: 630.0})
    assert _cable(blocks) == pytest.approx(_cable(whole), rel=0.03)
    # node coordinates: voxels; the tube along x sits at z=16, y=20
    tube1 = blocks.positions[blocks.skeleton_ids == 1]
    assert np.all(tube1[:, :2] == (16, 20)) and tube1[:, 2].min() == 0 and \
        tube1[:, 2].max() == 63
    # ERL of the ground truth on its own skeletons: 3 tubes of 630 nm → 630 nm; splitting
    # tube 1 at x=32 gives it two runs of 310 nm (the 10 nm edge across the cut is a split):
    # ERL = sum of run length² / total length
    assert expected_run_length(blocks, node_segments(blocks, lab), VS)["erl"] == \
        pytest.approx(630.0)
    seg = lab.astype(np.uint32)
    seg[:, :, 32:][lab[:, :, 32:] == 1] = 9
    erl = expected_run_length(blocks, node_segments(blocks, seg), VS)["erl"]
    assert erl == pytest.approx((2 * 310**2 + 2 * 630**2) / 1890)


def test_two_workers_give_the_same_skeletons(tmp_path):
    lab = tubes()
    lab[30:34, 30:34, 0:64] = 4  # a square bar through four block edges
    np.save(tmp_path / "gt.npy", lab)
    region = BBox.from_shape(lab.shape)
    one = skeletonize_blockwise(str(tmp_path / "gt.npy"), region, VS, PARAMS, block=32,
                                workers=1)
    cpu: list[float] = []
    two = skeletonize_blockwise(str(tmp_path / "gt.npy"), region, VS, PARAMS, block=32,
                                workers=2, cpu_seconds=cpu)
    shared = skeletonize_blockwise(lab, region, VS, PARAMS, block=32, workers=2)
    assert len(cpu) == 8
    for other in (two, shared):
        np.testing.assert_array_equal(one.positions, other.positions)
        np.testing.assert_array_equal(one.skeleton_ids, other.skeleton_ids)
        np.testing.assert_array_equal(one.edges, other.edges)
    assert _components(one) == 4


def test_run_eval_kimimaro_blockwise_workers(tmp_path):
    lab = tubes()
    np.save(tmp_path / "gt.npy", lab)
    seg = lab.astype(np.uint32)
    seg[:, :, 32:][lab[:, :, 32:] == 1] = 9
    np.save(tmp_path / "seg.npy", seg)
    cfg = EvalConfig(skeletons="kimimaro", voxel_size=VS, workers=2,
                     kimimaro=KimimaroParams(dust_threshold=0, block=32))
    gt_uri, seg_uri = str(tmp_path / "gt.npy"), str(tmp_path / "seg.npy")
    rep = run_eval([seg_uri, gt_uri], gt_uri, cfg, save_skeletons=str(tmp_path / "s.json"))
    reports = [json.loads(r.to_json()) for r in rep.segmentations]
    assert reports[0]["erl"] == pytest.approx((2 * 310**2 + 2 * 630**2) / 1890)
    assert reports[1]["erl"] == pytest.approx(630.0)
    saved = json.loads((tmp_path / "s.json").read_text())
    assert len({n["skeleton_id"] for n in saved["nodes"]}) == 3
    serial = run_eval([seg_uri, gt_uri], gt_uri, EvalConfig(
        skeletons="kimimaro", voxel_size=VS, workers=1,
        kimimaro=KimimaroParams(dust_threshold=0, block=32)))
    assert [json.loads(r.to_json()) for r in serial.segmentations] == reports


def test_workers_below_one_is_a_user_error(tmp_path):
    from pytc_core.errors import UserError

    np.save(tmp_path / "gt.npy", tubes(8))
    with pytest.raises(UserError, match="--workers 0 must be at least 1"):
        run_eval([str(tmp_path / "gt.npy")], str(tmp_path / "gt.npy"),
                 EvalConfig(skeletons="kimimaro", workers=0))
    with pytest.raises(UserError, match="--workers 0 must be at least 1"):
        skeletonize_blockwise(tubes(8), BBox.from_shape((8, 8, 8)), VS, workers=0)


def test_prune_face_ticks():
    from pytc_eval.skeleton_blocks import face_planes, prune_face_ticks
    from pytc_eval.skeletons import make_skeletons

    # a path along x (0..10) with three side branches in y: at x=5 (a face plane) 3 voxels
    # long (dropped) and 8 voxels long (kept: longer than 50 nm), at x=3 3 voxels long (kept:
    # not on a face)
    pos = [(0, 0, x) for x in range(11)]
    edges = [(i, i + 1) for i in range(10)]
    for at, length in ((5, 3), (5, -8), (3, 3)):
        prev = at
        for k in range(1, abs(length) + 1):
            pos.append((0, k if length > 0 else -k, at))
            edges.append((prev, len(pos) - 1))
            prev = len(pos) - 1
    skel = make_skeletons(np.arange(len(pos)), np.full(len(pos), 1, np.uint64), np.array(pos, float),
                 edges)
    region = BBox((0, -10, 0), (1, 10, 11))
    assert face_planes(region, 5) == [[], [-5, 0, 5], [5, 10]]
    pruned = prune_face_ticks(skel, [[], [], [5]], (10, 10, 10), 50.0)
    assert pruned.num_nodes == len(pos) - 3
    assert sorted(map(tuple, pruned.positions.astype(int).tolist())) == sorted(
        p for p in pos if not (p[2] == 5 and p[1] > 0))
    assert edge_lengths(pruned, (10, 10, 10)).sum() == pytest.approx(10 * (10 + 8 + 3))


def test_anisotropic_voxels_positions_and_lengths():
    """kimimaro works in nm (the voxel size as its anisotropy); nodes come back in voxels
    (z, y, x) and edge lengths in nm with the voxel size: 40 nm z, 8 nm y and x."""
    lab = tubes(32)[:, :, :]  # tubes at z=16,y=20 (x), y=44.. fall outside 32³: one tube
    lab[lab != 1] = 0
    lab[2:30, 8:11, 4:7] = 5  # a bar along z
    vs = (40.0, 8.0, 8.0)
    region = BBox.from_shape(lab.shape)
    skel = skeletonize_blockwise(lab, region, vs, PARAMS, block=16, workers=1)
    assert _components(skel) == 2
    tube = skel.positions[skel.skeleton_ids == 1]
    assert np.all(tube[:, :2] == (16, 20)) and sorted(tube[:, 2]) == list(range(32))
    lengths = edge_lengths(skel, vs)
    owner = skel.skeleton_ids[skel.edge_index()[:, 0]]
    assert lengths[owner == 1].sum() == pytest.approx(31 * 8.0)
    bar = skel.positions[skel.skeleton_ids == 5]
    assert np.all((bar[:, 1:] >= (8, 4)) & (bar[:, 1:] <= (10, 6)))  # inside the bar
    assert (bar[:, 0].min(), bar[:, 0].max()) == (2, 29)
    # 27 z steps of 40 nm, plus at most a few 8 nm sideways steps
    assert 27 * 40 <= lengths[owner == 5].sum() <= 27 * 40 * 1.05
