"""Data safety through the real pytc-eval command (issue 10): the --errors and
--save-skeletons targets are checked before anything is read or computed, --overwrite
replaces only pytc's own files, and missing chunks are an error unless --fill-missing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pytc_core.cli import run_entry_point
from pytc_core.volume import create_volume
from pytc_eval.cli import app

PYTC_EVAL = str(Path(sys.executable).parent / "pytc-eval")


def evaluate(args, capsys) -> tuple[int, str, str]:
    code = run_entry_point("pytc-eval", app, [str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("pytc-eval: error: "), err
    return lines[0]


@pytest.fixture()
def volumes(tmp_path):
    """A ground truth of two bodies and a segmentation that merges them; the segmentation is
    a precomputed layer missing one chunk, so reading it (compute) would fail."""
    gt = np.zeros((8, 16, 16), np.uint32)
    gt[:, :, :8], gt[:, :, 8:] = 1, 2
    gt_uri = str(tmp_path / "gt.npy")
    create_volume(gt_uri, gt.shape, gt.dtype).write(gt)
    seg_uri = str(tmp_path / "seg")
    create_volume(seg_uri, gt.shape, gt.dtype, chunk_size=(8, 8, 8),
                  layer_type="segmentation").write(np.ones_like(gt))
    (tmp_path / "seg" / "1.0_1.0_1.0" / "8-16_8-16_0-8.gz").unlink()
    return seg_uri, gt_uri


def test_missing_chunk_is_an_error_unless_fill_missing(tmp_path, volumes, capsys):
    seg, gt = volumes
    code, out, err = evaluate([seg, "--gt", gt], capsys)
    assert code == 2 and out == ""
    assert "seg is missing chunk 1.0_1.0_1.0/8-16_8-16_0-8 (restore it, or pass --fill-missing" \
        in one_error_line(err)
    code, out, _ = evaluate([seg, "--gt", gt, "--fill-missing", "--json"], capsys)
    assert code == 0
    # the missing chunk is half of body 2 and reads as segment 0: body 2 (half the voxels) is
    # split in two equal parts, so VOI split = 0.5 * 1 bit
    assert json.loads(out)["voi_split"] == pytest.approx(0.5)


@pytest.mark.parametrize("flag", ["--errors", "--save-skeletons"])
def test_output_files_are_checked_before_compute(tmp_path, volumes, capsys, flag):
    seg, gt = volumes
    (tmp_path / "adir").mkdir()
    (tmp_path / "notes.txt").write_text("my notes")
    cases = {
        tmp_path / "gt.npy" / "out.csv": "gt.npy is a file, not a directory",
        tmp_path / "adir": "adir is a directory",
        tmp_path / "notes.txt": "notes.txt already exists (pass --overwrite",
    }
    skel = ["--skeletons", "kimimaro"] if flag == "--save-skeletons" else []
    for target, expected in cases.items():
        code, out, err = evaluate([seg, "--gt", gt, flag, target, *skel], capsys)
        assert code == 2 and out == "" and expected in one_error_line(err), (target, err)
    # --overwrite replaces only what pytc wrote, never an input
    code, _, err = evaluate([seg, "--gt", gt, flag, tmp_path / "notes.txt", "--overwrite", *skel], capsys)
    assert code == 2 and "notes.txt exists and was not written by pytc" in one_error_line(err)
    code, _, err = evaluate([seg, "--gt", gt, flag, gt, "--overwrite", *skel], capsys)
    assert code == 2 and "is the input" in one_error_line(err)
    assert (tmp_path / "notes.txt").read_text() == "my notes"
    assert sorted(os.listdir(tmp_path)) == ["adir", "gt.npy", "gt.npy.json", "notes.txt", "seg"]


def test_output_files_replaced_with_overwrite_when_pytc_wrote_them(tmp_path, capsys):
    gt = np.zeros((8, 16, 16), np.uint32)
    gt[:, :, :8], gt[:, :, 8:] = 1, 2
    gt_uri, seg_uri = str(tmp_path / "gt.npy"), str(tmp_path / "seg.npy")
    create_volume(gt_uri, gt.shape, gt.dtype).write(gt)
    create_volume(seg_uri, gt.shape, gt.dtype).write(np.ones_like(gt))
    errors = tmp_path / "errors.csv"
    assert evaluate([seg_uri, "--gt", gt_uri, "--errors", errors, "--json"], capsys)[0] == 0
    first = errors.read_text()
    assert first.startswith("segmentation,kind")
    assert evaluate([seg_uri, "--gt", gt_uri, "--errors", errors, "--json"], capsys)[0] == 2
    assert evaluate([seg_uri, "--gt", gt_uri, "--errors", errors, "--overwrite", "--json"],
                    capsys)[0] == 0
    assert errors.read_text() == first


def test_read_only_target_directory_is_one_line(tmp_path):
    gt = np.ones((4, 8, 8), np.uint32)
    gt_uri = str(tmp_path / "gt.npy")
    create_volume(gt_uri, gt.shape, gt.dtype).write(gt)
    ro = tmp_path / "ro"
    ro.mkdir()
    argv = [PYTC_EVAL, gt_uri, "--gt", gt_uri, "--errors", str(ro / "errors.csv")]
    if os.geteuid() != 0:
        ro.chmod(0o555)
    elif shutil.which("unshare") and subprocess.run(["unshare", "-m", "true"]).returncode == 0:
        argv = ["unshare", "-m", "sh", "-c", 'mount -t tmpfs -o ro tmpfs "$1" && shift && exec "$@"',
                "sh", str(ro), *argv]
    else:
        pytest.skip("running as root without mount namespaces: cannot make a read-only directory")
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    ro.chmod(0o755)
    assert proc.returncode == 2 and proc.stdout == ""
    line = one_error_line(proc.stderr)
    assert f"cannot write the --errors CSV {ro / 'errors.csv'}: {ro}" in line
