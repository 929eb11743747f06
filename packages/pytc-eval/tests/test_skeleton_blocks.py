"""Parallel kimimaro: objects skeletonized whole equal one kimimaro call on the region; objects
too large for one process go block by block, pieces joined across block faces; the same
skeletons for any --workers."""

import json
from dataclasses import replace

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
from pytc_eval.skeletons import KimimaroParams, make_skeletons, node_segments

VS = (10.0, 10.0, 10.0)
PARAMS = KimimaroParams(dust_threshold=0)
#: every object block by block (igneous's forge and merge), not whole
BLOCKS = KimimaroParams(dust_threshold=0, max_object_voxels=0)


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
    blocks = skeletonize_blockwise(lab, region, VS, BLOCKS, block=32, workers=1)
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
    for params in (BLOCKS, PARAMS):
        one = skeletonize_blockwise(str(tmp_path / "gt.npy"), region, VS, params, block=32,
                                    workers=1)
        cpu: list[float] = []
        two = skeletonize_blockwise(str(tmp_path / "gt.npy"), region, VS, params, block=32,
                                    workers=2, cpu_seconds=cpu)
        shared = skeletonize_blockwise(lab, region, VS, params, block=32, workers=2)
        # 8 blocks scanned, then 8 blocks skeletonized, or the 4 objects (small boxes: one task)
        assert len(cpu) == (16 if params is BLOCKS else 8 + 1)
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


def _canonical(skel) -> tuple[list, list]:
    """Nodes as sorted (label, z, y, x) and edges as sorted pairs of them: the skeletons
    independent of node order and ids."""
    key = [(int(s), *map(float, p)) for s, p in zip(skel.skeleton_ids, skel.positions,
                                                    strict=True)]
    edges = sorted(tuple(sorted((key[a], key[b]))) for a, b in skel.edge_index().tolist())
    return sorted(key), edges


def winding_tube(shape: tuple[int, int, int] = (40, 48, 48)) -> np.ndarray:
    """A tube of radius 2.5 voxels winding from face x=0 to face x=47 through many 16³ block
    faces (label 1), a Y-shaped object (label 2), one label in two separate blobs (label 3),
    a 3-voxel speck (label 4, under the dust threshold) and a bar touching two region faces
    (label 5)."""
    z, y, x = np.mgrid[:shape[0], :shape[1], :shape[2]]
    lab = np.zeros(shape, np.uint32)
    cz, cy = 20 + 12 * np.sin(x / 7.0), 24 + 14 * np.cos(x / 9.0)
    lab[(z - cz) ** 2 + (y - cy) ** 2 <= 6.25] = 1
    for (z0, y0, x0), (z1, y1, x1) in (((4, 4, 30), (14, 12, 38)), ((14, 12, 38), (4, 20, 44)),
                                       ((14, 12, 38), (30, 12, 40))):
        t = np.clip(((z - z0) * (z1 - z0) + (y - y0) * (y1 - y0) + (x - x0) * (x1 - x0))
                    / ((z1 - z0) ** 2 + (y1 - y0) ** 2 + (x1 - x0) ** 2), 0, 1)
        d2 = (z - z0 - t * (z1 - z0)) ** 2 + (y - y0 - t * (y1 - y0)) ** 2 \
            + (x - x0 - t * (x1 - x0)) ** 2
        lab[(d2 <= 4) & (lab == 0)] = 2
    lab[30:36, 36:42, 4:10] = 3
    lab[2:8, 40:46, 14:20] = 3
    lab[36, 2, 2:5] = 4
    lab[34:40, 30:34, 20:48] = 5
    return lab


@pytest.mark.parametrize("vs", [VS, (40.0, 8.0, 8.0)])
def test_objects_equal_one_kimimaro_call(vs):
    """Skeletonized object by object (blocks of 16³ only scanned), the skeletons are those of
    one kimimaro call on the whole region, node for node and edge for edge: root, border
    targets, distance field and dust threshold per component as kimimaro has them."""
    lab = winding_tube()
    region = BBox((5, 0, 7), (45, 48, 55))  # a global offset
    params = KimimaroParams(dust_threshold=5)
    whole = skeletonize_blockwise(lab, region, vs, params, block=0, workers=1)
    objects = skeletonize_blockwise(lab, region, vs, params, block=16, workers=1)
    assert sorted(set(whole.skeleton_ids.tolist())) == [1, 2, 3, 5]  # the speck is dust
    assert _canonical(objects) == _canonical(whole)
    assert _components(objects) == 5  # label 3: two blobs, two pieces
    # the long tube crossing many block faces: one connected skeleton, the whole call's cable
    tube = objects.skeleton_ids == 1
    assert _cable(objects)[1] == pytest.approx(_cable(whole)[1], rel=1e-12)
    assert objects.positions[tube, 2].min() == 7 and objects.positions[tube, 2].max() == 54
    seg = lab.astype(np.uint32)
    seg[:, :, 24:][lab[:, :, 24:] == 1] = 9  # split the tube
    off = region.start
    for skel_a, skel_b in ((whole, objects),):
        a = expected_run_length(skel_a, node_segments(skel_a, seg, off), vs)
        b = expected_run_length(skel_b, node_segments(skel_b, seg, off), vs)
        assert (a["erl"], a["nerl"]) == pytest.approx((b["erl"], b["nerl"]), rel=1e-12)


def test_touching_labels_and_two_workers_equal_one_call(tmp_path):
    """Labels packed against each other (a Voronoi partition with 0 between some cells): the
    distance field of each object sees its neighbours as boundary, as in the region's
    multi-label transform; a URI source and --workers 2 give the same skeletons."""
    rng = np.random.default_rng(3)
    shape = (36, 40, 44)
    seeds = rng.uniform(0, 1, (12, 3)) * shape
    grid = np.stack(np.mgrid[:shape[0], :shape[1], :shape[2]], -1).reshape(-1, 3)
    dist = ((grid[:, None, :] - seeds[None]) ** 2).sum(-1)
    lab = (np.argmin(dist, 1) + 1).reshape(shape).astype(np.uint16)
    lab[lab % 4 == 0] = 0
    np.save(tmp_path / "gt.npy", lab)
    region = BBox.from_shape(shape)
    params = KimimaroParams(dust_threshold=20)
    whole = skeletonize_blockwise(lab, region, VS, params, block=0, workers=1)
    two = skeletonize_blockwise(str(tmp_path / "gt.npy"), region, VS, params, block=16,
                                workers=2)
    assert whole.num_skeletons >= 8
    assert _canonical(two) == _canonical(whole)


def test_large_objects_go_block_by_block():
    """Objects whose padded box exceeds max_object_voxels are skeletonized in blocks and
    joined across faces (one connected skeleton, more cable than the whole call's); the others
    still equal the whole call exactly."""
    lab = winding_tube()
    region = BBox.from_shape(lab.shape)
    whole = skeletonize_blockwise(lab, region, VS, PARAMS, block=0, workers=1)
    params = replace(PARAMS, max_object_voxels=20_000)  # the tube's box: 37·33·48 voxels
    mixed = skeletonize_blockwise(lab, region, VS, params, block=16, workers=1)
    tube = mixed.skeleton_ids == 1
    sub = make_skeletons(np.flatnonzero(tube), mixed.skeleton_ids[tube], mixed.positions[tube],
                         mixed.edges[tube[mixed.edge_index()[:, 0]]])
    assert _components(sub) == 1
    # the cuts add cable (paths to each cross-section's centre on a face; 16³ blocks on a
    # tube winding across them diagonally: about +15 %)
    assert _cable(whole)[1] <= _cable(mixed)[1] <= 1.25 * _cable(whole)[1]
    rest_m = [n for n in _canonical(mixed)[0] if n[0] != 1]
    assert rest_m == [n for n in _canonical(whole)[0] if n[0] != 1]


def test_kimimaro_call_leaves_no_thread():
    """One kimimaro call (block 0) starts no lasting thread (tqdm's monitor), so the worker
    pools that follow in the process still fork instead of a slow forkserver."""
    import threading

    from pytc_eval.skeleton_blocks import pool_context

    before = threading.active_count()
    skeletonize_blockwise(tubes(32), BBox.from_shape((32, 32, 32)), VS, PARAMS, block=0,
                          workers=1)
    assert threading.active_count() == before
    if before == 1:
        assert pool_context().get_start_method() == "fork"
