"""pytc-eval in-process (run_entry_point) and as a real subprocess, on volumes in tmp_path."""

import csv
import json
import math
import subprocess
import sys
import urllib.parse
from pathlib import Path

import numpy as np
import pytest

from pytc_core import BBox, create_volume
from pytc_core.cli import run_entry_point
from pytc_eval import rand_voi
from pytc_eval.cli import app


def run(capsys, *argv):
    code = run_entry_point("pytc-eval", app, [str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def write(uri, array, voxel_size=(1, 1, 1), layer_type="segmentation"):
    vol = create_volume(str(uri), array.shape, array.dtype, voxel_size=voxel_size,
                        layer_type=layer_type)
    vol.write(array)
    return str(uri)


def labels():
    """Two straight neurites along x in an 8 x 8 x 16 volume: ids 1 (rows y<4) and 2."""
    gt = np.zeros((8, 8, 16), np.uint32)
    gt[:, :4] = 1
    gt[:, 4:] = 2
    return gt


def skeleton_json(path):
    """Skeleton 1 along y=1 (x = 0..15), skeleton 2 along y=6; positions in voxels."""
    nodes, edges = [], []
    for sid, y in ((1, 1), (2, 6)):
        for x in range(16):
            nodes.append({"id": sid * 100 + x, "skeleton_id": sid, "z": 4, "y": y, "x": x})
            if x:
                edges.append([sid * 100 + x - 1, sid * 100 + x])
    path.write_text(json.dumps({"nodes": nodes, "edges": edges}))
    return str(path)


def test_report_with_skeletons(tmp_path, capsys):
    gt = labels()
    seg = gt.astype(np.uint64) * 10
    seg[:, :4, 8:] = 11  # skeleton 1 split once at x = 7|8
    gt_uri = write(tmp_path / "gt.npy", gt, voxel_size=(40, 4, 4))
    seg_uri = write(tmp_path / "seg.h5:seg", seg, voxel_size=(40, 4, 4))
    code, out, err = run(capsys, seg_uri, "--gt", gt_uri, "--skeletons",
                         skeleton_json(tmp_path / "skel.json"), "--block-size", 5)
    assert code == 0
    report = json.loads(out)
    expected = rand_voi(gt, seg)
    for key in ("voi_split", "voi_merge", "nvi_split", "nvi_merge", "nid", "rand_split",
                "rand_merge", "adapted_rand_error"):
        assert report[key] == pytest.approx(expected[key], rel=1e-12, abs=1e-15), key
    assert report["voi_split"] == pytest.approx(0.5)  # half of the voxels, one even split
    # edges 4 nm long: skeleton 1 = 7 + 7 correct edges around the split, skeleton 2 = 15
    assert report["erl"] == pytest.approx((28**2 + 28**2 + 60**2) / 120)
    assert report["gt_erl"] == pytest.approx(60.0)
    assert report["nerl"] == pytest.approx(report["erl"] / 60)
    assert report["split_stats"] == {"1": [[10, 11]]} and report["merge_stats"] == {}
    assert (report["n_edges_split"], report["n_edges_correct"], report["n_edges_merged"]) \
        == (1, 29, 0)
    assert (report["n_segments"], report["n_gt_segments"]) == (3, 2)
    assert report["segmentation"] == seg_uri and report["ground_truth"] == gt_uri
    assert report["voxel_size"] == [40, 4, 4]
    assert "rank  segmentation" in err and "NERL" in err


def test_several_segmentations_are_ranked_and_errors_csv(tmp_path, capsys):
    gt = labels()
    gt_uri = write(tmp_path / "gt", gt)  # precomputed layers → Neuroglancer links
    merged = write(tmp_path / "merged", np.ones_like(gt))
    perfect = write(tmp_path / "perfect", gt * 3)
    split = gt.copy()
    split[:, 4:, 10:] = 5
    split_uri = write(tmp_path / "split", split)
    errors = tmp_path / "errors.csv"
    code, out, err = run(capsys, merged, perfect, split_uri, "--gt", gt_uri, "--skeletons",
                         skeleton_json(tmp_path / "s.json"), "--errors", errors)
    assert code == 0
    reports = [json.loads(line) for line in out.splitlines()]
    assert [r["segmentation"] for r in reports] == [merged, perfect, split_uri]
    # split: skeleton 2 keeps 9 + 5 unit edges around its split, skeleton 1 all 15
    assert [r["nerl"] for r in reports] == pytest.approx([0.0, 1.0, (15**2 + 9**2 + 5**2)
                                                         / 30 / 15])
    table = err[err.index("rank"):].splitlines()[2:]
    assert [row.split()[:2] for row in table] == [["1", "perfect"], ["2", "split"],
                                                  ["3", "merged"]]
    header = err[err.index("rank"):].splitlines()[0].split("  ")
    header = [h.strip() for h in header if h.strip()]
    assert header[2:6] == ["VOI split", "VOI merge", "VOI", "ARAND"]
    by_name = {r["segmentation"].rsplit("/", 1)[-1]: r for r in reports}
    for row in table:  # the total VOI column: split + merge of that row's report
        name, split, merge, total = row.split()[1:5]
        r = by_name[name]
        assert (float(split), float(merge)) == pytest.approx((r["voi_split"], r["voi_merge"]),
                                                             abs=5e-4)
        assert float(total) == pytest.approx(r["voi_split"] + r["voi_merge"], abs=5e-4)
    assert float(table[2].split()[4]) > 0  # merged: every voxel of two bodies in one segment
    rows = list(csv.DictReader(errors.read_text().splitlines()))
    merge_rows = [r for r in rows if r["kind"] == "merge"]
    assert [(r["segmentation"], r["segments"], r["skeletons"]) for r in merge_rows] == \
        [(merged, "1", "1;2")]
    assert (merge_rows[0]["z"], merge_rows[0]["y"], merge_rows[0]["x"]) == ("4", "1", "0")
    split_rows = [r for r in rows if r["kind"] == "split"]
    assert [(r["segments"], r["skeletons"], r["x"]) for r in split_rows] == [("2;5", "2", "9")]
    link = split_rows[0]["neuroglancer"]
    assert link.startswith("https://neuroglancer-demo.appspot.com/#!")
    state = json.loads(urllib.parse.unquote(link.split("#!", 1)[1]))
    # local layers are linked through `pytc-eval serve` on localhost, never as file://
    assert [layer["source"] for layer in state["layers"]] == [
        "precomputed://http://localhost:8080/gt", "precomputed://http://localhost:8080/split"]
    assert "file" not in link and f"pytc-eval serve {tmp_path} --port 8080" in err
    code, _, err = run(capsys, merged, "--gt", gt_uri, "--errors", errors)
    assert code == 2 and "already exists" in err
    assert run(capsys, merged, "--gt", gt_uri, "--errors", errors, "--overwrite")[0] == 0


def test_kimimaro_skeletons_and_config(tmp_path, capsys):
    gt = np.zeros((10, 12, 48), np.uint16)
    gt[3:7, 2:6, 1:47] = 1
    gt[3:7, 7:11, 1:47] = 2
    gt_uri = write(tmp_path / "gt.npy", gt)
    config = tmp_path / "eval.toml"
    config.write_text("[eval]\nmerge_threshold = 1\n[eval.kimimaro]\ndust_threshold = 10\n"
                      "const = 10.0\n")
    saved = tmp_path / "kimimaro.json"
    code, out, err = run(capsys, gt_uri, "--gt", gt_uri, "--skeletons", "kimimaro",
                         "--config", config, "--save-skeletons", saved, "--json")
    assert code == 0 and "rank" not in err
    report = json.loads(out)
    assert report["nerl"] == pytest.approx(1.0) and report["n_skeletons"] == 2
    assert report["gt_erl"] > 40 and report["skeletons"] == "kimimaro"
    nodes = json.loads(saved.read_text())["nodes"]
    assert {n["skeleton_id"] for n in nodes} == {1, 2}
    config.write_text("[eval]\nmerge_treshold = 2\n")
    code, _, err = run(capsys, gt_uri, "--gt", gt_uri, "--config", config)
    assert code == 2 and "did you mean 'merge_threshold'" in err


def test_all_zero_ground_truth_reports_nan_as_null(tmp_path, capsys):
    zeros = write(tmp_path / "gt.npy", np.zeros((4, 4, 4), np.uint8))
    seg = write(tmp_path / "seg.npy", np.ones((4, 4, 4), np.uint8))
    code, out, err = run(capsys, seg, "--gt", zeros)
    assert code == 0
    report = json.loads(out)
    assert report["rand_split"] is None and report["nid"] is None
    assert report["voi_split"] == 0 and report["n_voxels"] == 0
    assert "ground truth is all zero" in err and "ground truth is all zero" in \
        report["warnings"][0]


@pytest.mark.parametrize("case", ["voxel-size", "disjoint", "float", "outside", "swc",
                                  "missing-gt", "json"])
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, case):
    gt_uri = write(tmp_path / "gt.npy", labels())
    seg_uri = write(tmp_path / "seg.npy", labels())
    args = [seg_uri, "--gt", gt_uri]
    if case == "voxel-size":
        args[0] = write(tmp_path / "v.npy", labels(), voxel_size=(8, 8, 8))
        match = "has voxel size (8, 8, 8) nm but ground truth"
    elif case == "disjoint":
        far = create_volume(str(tmp_path / "far.npy"), (8, 8, 16), np.uint32, offset=(8, 0, 0))
        far.write(labels(), offset=(8, 0, 0))
        args[0] = str(tmp_path / "far.npy")
        match = "covers [8:16, 0:8, 0:16] and ground truth"
    elif case == "float":
        args[0] = write(tmp_path / "f.npy", np.ones((8, 8, 16), np.float32), layer_type="image")
        match = "labels must be integers"
    elif case == "outside":
        path = tmp_path / "far.json"
        path.write_text(json.dumps({"nodes": [{"id": 1, "skeleton_id": 1, "z": 40, "y": 0,
                                               "x": 0}], "edges": []}))
        args += ["--skeletons", path]
        match = "1 of 1 skeleton nodes lie outside the volume"
    elif case == "swc":
        path = tmp_path / "3.swc"
        path.write_text("1 0 0 0 0 1 -1\n2 0 1 0 0 1 9\n")
        args += ["--skeletons", path]
        match = "node 2 has parent 9"
    elif case == "missing-gt":
        args = [seg_uri, "--gt", tmp_path / "nothing.npy"]
        match = "nothing.npy"
    else:
        path = tmp_path / "s.json"
        path.write_text("[1, 2]")
        args += ["--skeletons", path]
        match = "not a skeleton JSON file"
    code, out, err = run(capsys, *args)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pytc-eval: error: ") and match in lines[0]


def test_subprocess_reads_uri_from_stdin(tmp_path):
    gt_uri = write(tmp_path / "gt.npy", labels())
    exe = Path(sys.executable).parent / "pytc-eval"
    done = subprocess.run([str(exe), "-", "--gt", gt_uri, "--quiet"], input=gt_uri + "\n",
                          capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["voi_split"] == 0 and report["adapted_rand_error"] == 0
    bad = subprocess.run([str(exe), gt_uri, "--gt", gt_uri, "--block-size", "0"],
                         capture_output=True, text=True, check=False, timeout=120)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert "Traceback" not in bad.stderr and not math.isnan(0.0)


def test_evaluate_volumes_aligns_by_global_coordinates(tmp_path):
    from pytc_core import open_volume
    from pytc_eval import Skeletons
    from pytc_eval.score import evaluate_volumes

    gt = labels()  # at global z 10..18
    seg = np.zeros((20, 8, 16), np.uint16)  # at global z 0..20, y 5..13
    seg[10:18, :3] = gt[:, 5:] * 2  # gt rows y 5..7 sit at seg rows 0..2
    seg[10:18, :3, 12:] = 9
    gt_vol = create_volume(str(tmp_path / "gt.npy"), gt.shape, gt.dtype, offset=(10, 0, 0),
                           voxel_size=(2, 2, 2))
    gt_vol.write(gt, offset=(10, 0, 0))
    seg_vol = create_volume(str(tmp_path / "seg.npy"), seg.shape, seg.dtype, offset=(0, 5, 0),
                            voxel_size=(2, 2, 2))
    seg_vol.write(seg, offset=(0, 5, 0))
    # skeleton positions are global voxels; node y = 6 lies in the shared box (y 5..8)
    skel = Skeletons(np.arange(16), np.full(16, 2), np.array([[14.0, 6.0, x] for x in range(16)]),
                     np.array([[i, i + 1] for i in range(15)]))
    result = evaluate_volumes(open_volume(str(tmp_path / "seg.npy")),
                              open_volume(str(tmp_path / "gt.npy")), skel, block_size=3)
    report = result.report
    assert report.bbox == BBox((10, 5, 0), (18, 8, 16))  # the intersection
    expected = rand_voi(gt[:, 5:], seg[10:18, :3])
    assert report.voi_split == pytest.approx(expected["voi_split"]) and report.voi_split > 0
    assert report.n_voxels == 8 * 3 * 16
    assert report.skeleton_scores.split_stats == {2: [(4, 9)]}
    assert report.skeleton_scores.erl == pytest.approx((22**2 + 6**2) / 30)  # 2 nm edges
    assert report.voxel_size == (2, 2, 2)


def test_block_size_follows_the_memory_budget(tmp_path, capsys, monkeypatch):
    """A Slurm job with little memory scores in 64³ blocks (the smallest plan), with the same
    report as 256³ blocks; -v says where the budget came from."""
    rng = np.random.default_rng(0)
    gt = rng.integers(1, 4, size=(70, 66, 80)).astype(np.uint32)
    seg = gt.copy()
    seg[:, :30] = 9  # a merge
    gt_uri, seg_uri = write(tmp_path / "gt", gt), write(tmp_path / "seg", seg)
    code, big, err = run(capsys, seg_uri, "--gt", gt_uri, "--json", "--block-size", "256")
    assert code == 0, err
    monkeypatch.setenv("SLURM_MEM_PER_NODE", "1")  # 1 MiB: nothing left for a 128³ block
    code, small, err = run(capsys, seg_uri, "--gt", gt_uri, "--json", "-v")
    assert code == 0, err
    assert "blocks of 64³ voxels" in err and "SLURM_MEM_PER_NODE" in err
    assert json.loads(small) == json.loads(big)
