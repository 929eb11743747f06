"""pytc-eval aligns volumes by global coordinates, restricts to --bbox, reads several URIs on
stdin, counts segments as pytc-decode does, and explains itself with -v."""

import io
import json
import re

import numpy as np
import pytest

from pytc_core import create_volume
from pytc_core.cli import run_entry_point
from pytc_core.targets import affinities_from_labels
from pytc_eval import rand_voi
from pytc_eval.cli import app


def run(capsys, *argv):
    code = run_entry_point("pytc-eval", app, [str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def write(uri, array, offset=(0, 0, 0), voxel_size=(10, 10, 10)):
    vol = create_volume(str(uri), array.shape, array.dtype, offset=offset, voxel_size=voxel_size,
                        layer_type="segmentation")
    vol.write(array, offset=offset)
    return str(uri)


def full_labels():
    """24 x 8 x 8: slabs of 4 z-slices, each slab split in two along x (ids 1..12)."""
    lab = np.zeros((24, 8, 8), np.uint32)
    for k in range(6):
        lab[4 * k:4 * k + 4, :, :4] = 2 * k + 1
        lab[4 * k:4 * k + 4, :, 4:] = 2 * k + 2
    return lab


def test_full_volume_segmentation_against_a_cropped_ground_truth(tmp_path, capsys):
    lab = full_labels()
    # the ground truth exists only for z 16..24 (like the quickstart's z 175..250)
    gt = write(tmp_path / "gt.h5:labels", lab[16:], offset=(16, 0, 0))
    seg = lab.copy()
    seg[:16] = 1  # wrong everywhere outside the ground truth: must not count
    seg_uri = write(tmp_path / "seg.npy", seg)
    code, out, err = run(capsys, seg_uri, "--gt", gt, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["voi_split"] == report["voi_merge"] == 0 and report["rand_split"] == 1.0
    assert report["n_voxels"] == 8 * 8 * 8 and report["bbox"] == [16, 0, 0, 24, 8, 8]
    assert "scored on [16:24, 0:8, 0:8]" in err


def test_bbox_restricts_the_evaluation(tmp_path, capsys):
    lab = full_labels()
    gt = write(tmp_path / "gt", lab)
    seg = lab.copy()
    seg[:, :, 2:6] = 50  # a merge of every slab's halves in the middle columns
    seg[20:, :, :] = 7
    seg_uri = write(tmp_path / "seg", seg)
    code, out, err = run(capsys, seg_uri, "--gt", gt, "--bbox", "2,0,1,14,8,7", "--json")
    assert code == 0, err
    report = json.loads(out)
    expected = rand_voi(lab[2:14, :, 1:7], seg[2:14, :, 1:7])
    assert report["bbox"] == [2, 0, 1, 14, 8, 7] and report["n_voxels"] == 12 * 8 * 6
    for key in ("voi_split", "voi_merge", "rand_split", "rand_merge", "adapted_rand_error"):
        assert report[key] == pytest.approx(expected[key], rel=1e-12), key
    assert report["voi_merge"] > 0
    # z 2..14 holds bodies 1..8; the segmentation keeps them at x = 1 and 6, plus id 50
    assert report["n_segments"] == 9 and report["n_gt_segments"] == 8
    code, _, err = run(capsys, seg_uri, "--gt", gt, "--bbox", "30,0,0,40,8,8")
    assert code == 2 and "does not overlap" in err
    code, _, err = run(capsys, seg_uri, "--gt", gt, "--bbox", "1,2,3")
    assert code == 2 and "bad --bbox '1,2,3'" in err and err.count("\n") == 1
    code, _, err = run(capsys, seg_uri, "--gt", gt, "--bbox", "5,0,0,5,8,8")
    assert code == 2 and "each stop above its start" in err


def test_block_size_one_or_three_values(tmp_path, capsys):
    lab = full_labels()
    gt = write(tmp_path / "gt.npy", lab)
    seg = lab.copy()
    seg[:, 3:, :] += 100
    seg_uri = write(tmp_path / "seg.npy", seg)
    reports = []
    for size in ("5", "3,4,8", "256"):
        code, out, err = run(capsys, seg_uri, "--gt", gt, "--block-size", size, "--json")
        assert code == 0, err
        reports.append(json.loads(out))
    assert reports[0] == reports[1] == reports[2]
    code, _, err = run(capsys, seg_uri, "--gt", gt, "--block-size", "3,4")
    assert code == 2 and "--block-size 64,128,128" in err


def test_several_uris_on_stdin_are_all_evaluated(tmp_path, capsys, monkeypatch):
    lab = full_labels()
    gt = write(tmp_path / "gt.npy", lab)
    a = write(tmp_path / "a.npy", lab)
    b = write(tmp_path / "b.npy", np.where(lab > 6, 1, lab).astype(np.uint32))
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{a}\n\n{b}\n"))
    code, out, err = run(capsys, "-", "--gt", gt)
    assert code == 0, err
    reports = [json.loads(line) for line in out.splitlines()]
    assert [r["segmentation"] for r in reports] == [a, b]
    assert reports[0]["voi_merge"] == 0 and reports[1]["voi_merge"] > 0


def test_segments_are_counted_as_pytc_decode_counts_them(tmp_path, capsys):
    from pytc_decode.cli import app as decode_app

    lab = full_labels()
    lab[:, :, 3:5] = 0  # a background gap between the halves
    aff, _ = affinities_from_labels(lab)
    create_volume(str(tmp_path / "aff"), aff.shape, aff.dtype).write(aff)
    assert run_entry_point("pytc-decode", decode_app, [str(tmp_path / "aff"), "-o",
                                                       str(tmp_path / "seg")]) == 0
    decoded = int(re.search(r"(\d+) segments", capsys.readouterr().err).group(1))
    assert decoded == 12
    gt = np.where(lab == 0, 99, lab).astype(np.uint32)  # the gap is a body of the truth
    gt_uri = write(tmp_path / "gt", gt, voxel_size=(1, 1, 1))
    code, out, err = run(capsys, tmp_path / "seg", "--gt", gt_uri, "--json")
    assert code == 0, err
    report = json.loads(out)
    # the predicted background under body 99 still scores as a label, but is no segment
    assert report["n_segments"] == decoded and report["n_gt_segments"] == 13
    assert report["voi_merge"] == report["voi_split"] == 0 and report["rand_merge"] == 1


def test_verbose_shows_config_and_timings_and_quiet_verbose_is_an_error(tmp_path, capsys):
    lab = full_labels()
    gt = write(tmp_path / "gt.npy", lab)
    code, out, err = run(capsys, gt, "--gt", gt, "-v", "--json", "--set", "merge_threshold=3",
                         "adapted_merge_threshold=7")
    assert code == 0
    assert "resolved config:" in err and "merge_threshold = 3" in err
    assert "adapted_merge_threshold = 7" in err
    assert "1 blocks of (256, 256, 256) voxels over [0:24, 0:8, 0:8]" in err
    assert re.search(r"timings: open and check volumes \d+\.\d\d s, sampling \S+ \d+\.\d\d s, "
                     r"scoring \S+ \d+\.\d\d s", err)
    code, out, err = run(capsys, gt, "--gt", gt, "-q", "-v")
    assert code == 2 and out == "" and "--quiet and --verbose" in err and err.count("\n") == 1


def test_pipeline_file_tables(tmp_path, capsys):
    lab = full_labels()
    gt = write(tmp_path / "gt.npy", lab)
    config = tmp_path / "pipeline.toml"
    config.write_text("[decode]\nthreshold = 0.7\n")  # only another stage's table
    code, out, err = run(capsys, gt, "--gt", gt, "--config", config, "--json")
    assert code == 0, err
    config.write_text("[decode]\nthreshold = 0.7\n[eval]\nblock_size = 5\n[evl]\nx = 1\n")
    code, out, err = run(capsys, gt, "--gt", gt, "--config", config)
    assert code == 2 and "unknown table [evl]" in err and "did you mean [eval]?" in err


def test_unknown_option_names_the_valid_flags(tmp_path, capsys):
    code, out, err = run(capsys, "seg", "--gt", "gt", "--skeleton", "kimimaro")
    assert code == 2 and err.count("\n") == 1
    assert "unknown option '--skeleton'" in err and "did you mean '--skeletons'?" in err
    assert "--bbox" in err and "--set" in err and "Unused Tokens" not in err
    code, out, err = run(capsys, "seg", "--gt", "gt", "--json", "stray")
    assert code == 2 and "unexpected argument 'stray'" in err and "SEG_URI..." in err
    assert "give every SEG_URI before the first option" in err


def test_errors_csv_links_open_through_pytc_eval_serve(tmp_path, capsys):
    """The links' layer sources answer over HTTP while `pytc-eval serve` runs (a real process)."""
    import csv
    import signal
    import subprocess
    import sys
    import urllib.parse
    import urllib.request
    from pathlib import Path

    lab = full_labels()
    layers = tmp_path / "layers"
    gt = write(layers / "gt", lab)
    seg = write(layers / "seg", np.where(lab == 2, 1, lab).astype(np.uint32))  # merge 1 + 2
    skel = tmp_path / "skel.json"
    skel.write_text(json.dumps({"nodes": [
        {"id": i, "skeleton_id": s, "z": 1, "y": y, "x": x}
        for i, (s, y, x) in enumerate([(1, 2, 1), (1, 3, 1), (2, 2, 6), (2, 3, 6)])],
        "edges": [[0, 1], [2, 3]]}))
    server = subprocess.Popen([str(Path(sys.executable).parent / "pytc-eval"), "serve",
                               str(layers), "--host", "127.0.0.1", "--port", "0"],
                              stderr=subprocess.PIPE, text=True,  # Ctrl-C even from a background job
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        line = server.stderr.readline()
        port = int(re.search(r"http://127\.0\.0\.1:(\d+)/", line).group(1))
        errors = tmp_path / "errors.csv"
        code, _, err = run(capsys, seg, "--gt", gt, "--skeletons", skel, "--errors", errors,
                           "--set", f"neuroglancer.local_server='http://127.0.0.1:{port}'")
        assert code == 0, err
        assert f"pytc-eval serve {layers} --port {port}" in err
        rows = list(csv.DictReader(errors.read_text().splitlines()))
        assert [(r["kind"], r["segments"], r["skeletons"]) for r in rows] == [("merge", "1",
                                                                               "1;2")]
        state = json.loads(urllib.parse.unquote(rows[0]["neuroglancer"].split("#!", 1)[1]))
        for layer in state["layers"]:
            url = layer["source"].removeprefix("precomputed://")
            with urllib.request.urlopen(url + "/info", timeout=30) as resp:
                assert json.loads(resp.read())["type"] == "segmentation"
                assert resp.headers["Access-Control-Allow-Origin"] == "*"
        assert state["layers"][1]["segments"] == ["1"]
    finally:
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=30) == 0
        server.stderr.close()


def test_remote_layers_are_linked_directly():
    from pytc_eval.links import LinkSettings, layer_source

    assert layer_source("gs://bucket/seg/") == "precomputed://gs://bucket/seg"
    assert layer_source("s3://b/seg") == "precomputed://s3://b/seg"
    assert layer_source("precomputed://https://host/seg") == "precomputed://https://host/seg"
    settings = LinkSettings(local_server="http://localhost:9000/")
    assert layer_source("file:///data/my%20run/seg", settings, "/data") == \
        "precomputed://http://localhost:9000/my%20run/seg"
    assert layer_source("/elsewhere/seg", settings, "/data") is None  # not served: no link
    assert layer_source("x.h5:seg", format="hdf5") is None
