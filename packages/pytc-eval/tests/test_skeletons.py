"""Skeleton loading (JSON, SWC, precomputed, kimimaro) and the node → segment lookup."""

import json

import numpy as np
import pytest

from pytc_core.errors import UserError
from pytc_eval import (
    KimimaroParams,
    Skeletons,
    load_skeletons,
    node_segments,
    save_skeletons,
    skeletons_from_labels,
)


def test_json_round_trip(tmp_path):
    path = tmp_path / "skel.json"
    path.write_text(json.dumps({
        "nodes": [{"id": 1, "skeleton_id": 7, "z": 3.0, "y": 4.5, "x": 10.0},
                  {"id": 2, "skeleton_id": 7, "z": 3.0, "y": 4.5, "x": 11.0},
                  {"id": 9, "skeleton_id": 2**64 - 1, "z": 0, "y": 0, "x": 0}],
        "edges": [[1, 2]]}))
    skel = load_skeletons(path)
    assert skel.node_ids.tolist() == [1, 2, 9] and skel.skeleton_ids.dtype == np.uint64
    assert skel.positions.tolist() == [[3, 4.5, 10], [3, 4.5, 11], [0, 0, 0]]
    assert skel.edges.tolist() == [[1, 2]] and skel.num_skeletons == 2
    save_skeletons(skel, tmp_path / "again.json")
    again = load_skeletons(f"file://{tmp_path}/again.json")
    for a, b in zip((skel.node_ids, skel.skeleton_ids, skel.positions, skel.edges),
                    (again.node_ids, again.skeleton_ids, again.positions, again.edges),
                    strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(("text", "match"), [
    ("{", "not a skeleton JSON"),
    ('{"nodes": [{"id": 1}]}', "not a skeleton JSON"),
    ('{"nodes": [{"id": 1, "skeleton_id": 1, "z": 0, "y": 0, "x": 0}], "edges": [[1, 4]]}',
     r"edge \[1, 4\] names a node id that does not exist"),
    ('{"nodes": [{"id": 1, "skeleton_id": 1, "z": 0, "y": 0, "x": 0},'
     ' {"id": 1, "skeleton_id": 1, "z": 0, "y": 0, "x": 1}]}', "not unique"),
    ('{"nodes": [{"id": 1, "skeleton_id": 1, "z": 0, "y": 0, "x": 0},'
     ' {"id": 2, "skeleton_id": 2, "z": 0, "y": 0, "x": 1}], "edges": [[1, 2]]}',
     "two different skeletons"),
])
def test_bad_json(tmp_path, text, match):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(UserError, match=match):
        load_skeletons(path)


SWC = """# a comment
1 1 40.0 8.0 80.0 2.0 -1
2 3 44.0 8.0 80.0 1.0 1
3 3 44.0 12.0 80.0 1.0 2
"""


def test_swc_file_and_folder(tmp_path):
    (tmp_path / "12.swc").write_text(SWC)
    skel = load_skeletons(tmp_path / "12.swc", voxel_size=(40, 4, 4))
    assert skel.skeleton_ids.tolist() == [12, 12, 12]
    assert skel.positions.tolist() == [[2, 2, 10], [2, 2, 11], [2, 3, 11]]  # z, y, x voxels
    assert skel.edges.tolist() == [[2, 1], [3, 2]]
    (tmp_path / "30.swc").write_text(SWC)
    both = load_skeletons(tmp_path, voxel_size=(40, 4, 4))
    assert both.skeleton_ids.tolist() == [12] * 3 + [30] * 3
    assert both.edges.tolist() == [[1, 0], [2, 1], [4, 3], [5, 4]]


def test_swc_errors(tmp_path):
    broken = tmp_path / "1.swc"
    broken.write_text(SWC.replace("2 -1\n", "2 -1\n").replace("1.0 2\n", "1.0 7\n"))
    with pytest.raises(UserError, match="node 3 has parent 7, which is not a node"):
        load_skeletons(broken)
    broken.write_text("1 1 0 0\n")
    with pytest.raises(UserError, match=r"1.swc:1: not an SWC line"):
        load_skeletons(broken)
    with pytest.raises(UserError, match="not found"):
        load_skeletons(tmp_path / "missing.swc")
    (tmp_path / "skel.txt").write_text("")
    with pytest.raises(UserError, match="unknown skeleton format"):
        load_skeletons(tmp_path / "skel.txt")


def test_precomputed_layer(tmp_path):
    from cloudvolume import CloudVolume
    from cloudvolume import Skeleton as CVSkeleton

    info = CloudVolume.create_new_info(
        num_channels=1, layer_type="segmentation", data_type="uint64", encoding="raw",
        resolution=[4, 4, 40], voxel_offset=[0, 0, 0], chunk_size=[16, 16, 16],
        volume_size=[32, 32, 32], skeletons="skeletons")
    cv = CloudVolume(f"file://{tmp_path}/seg", info=info, progress=False)
    cv.commit_info()
    cv.skeleton.meta.commit_info()
    for segid, shift in ((5, 0), (9, 8)):
        verts = np.array([[4, 8, 40], [8, 8, 40], [8, 12 + shift, 80]], np.float32)  # x, y, z nm
        cv.skeleton.upload(CVSkeleton(verts, np.array([[0, 1], [1, 2]], np.uint32), segid=segid))
    skel = load_skeletons(f"precomputed://file://{tmp_path}/seg")
    assert skel.skeleton_ids.tolist() == [5, 5, 5, 9, 9, 9]
    assert skel.positions[:3].tolist() == [[1, 2, 1], [1, 2, 2], [2, 3, 2]]
    assert skel.positions[5].tolist() == [2, 5, 2]
    assert skel.edges.tolist() == [[0, 1], [1, 2], [3, 4], [4, 5]]
    assert load_skeletons(tmp_path / "seg").num_nodes == 6  # a plain folder with an info file
    with pytest.raises(UserError, match="cannot read skeletons"):
        (tmp_path / "bad").mkdir()
        (tmp_path / "bad" / "info").write_text("{}")
        load_skeletons(tmp_path / "bad")


def test_kimimaro_from_labels_is_anisotropic():
    labels = np.zeros((8, 12, 60), np.uint16)
    labels[3:6, 4:8, 2:58] = 4         # a tube along x
    labels[1:7, 9:11, 10:12] = 0       # untouched background
    skel = skeletons_from_labels(labels, voxel_size=(40, 4, 4),
                                 params=KimimaroParams(dust_threshold=10, const=50))
    assert set(skel.skeleton_ids.tolist()) == {4}
    assert skel.num_edges == skel.num_nodes - 1  # one tree
    pos = skel.positions
    assert pos[:, 2].min() <= 3 and pos[:, 2].max() >= 56   # spans the tube in voxels
    assert np.all((pos[:, 0] >= 3) & (pos[:, 0] <= 5) & (pos[:, 1] >= 4) & (pos[:, 1] <= 7))
    segs = node_segments(skel, labels)
    assert set(segs.tolist()) == {4}
    shifted = skeletons_from_labels(labels, voxel_size=(40, 4, 4), offset=(100, 0, 0),
                                    params=KimimaroParams(dust_threshold=10, const=50))
    np.testing.assert_allclose(shifted.positions, pos + [100, 0, 0])
    with pytest.raises(UserError, match="3D integer labels"):
        skeletons_from_labels(labels.astype(np.float32))


def test_node_segments_rint_clip_and_outside():
    seg = np.arange(2 * 3 * 4, dtype=np.uint64).reshape(2, 3, 4)
    skel = Skeletons(np.arange(4), np.zeros(4, np.int64),
                     np.array([[0, 0, 0.4], [1.4, 2.5, 3.5], [-0.5, 0, 0], [11, 12, 13]]),
                     np.zeros((0, 2), np.int64))
    inside = Skeletons(skel.node_ids[:3], skel.skeleton_ids[:3], skel.positions[:3], skel.edges)
    # rint: 0.4 → 0; 2.5 → 2 (round half to even), 3.5 → 4 clipped to 3; -0.5 → -0 → 0
    assert node_segments(inside, seg).tolist() == [0, 1 * 12 + 2 * 4 + 3, 0]
    shifted = node_segments(Skeletons(np.arange(1), np.zeros(1, np.int64),
                                      np.array([[11.0, 12.0, 13.0]]), skel.edges),
                            seg, offset=(10, 10, 10))
    assert shifted.tolist() == [1 * 12 + 2 * 4 + 3]
    with pytest.raises(UserError, match=r"1 of 4 skeleton nodes lie outside the volume"):
        node_segments(skel, seg)
