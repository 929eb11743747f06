"""The in-process twin of `pytc-launch blocks decode`: the array tasks' commands run here one
after the other give the same segmentation as one whole-volume pytc-decode (real runs)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pytc_core import create_volume, open_volume
from pytc_core.cli import run_entry_point
from pytc_launch.cli import app
from pytc_launch.launch import blocks_commands

BIN = Path(sys.executable).parent


def assert_twin_equals_one(tmp_path: Path, out: str) -> None:
    """The twin printed its two outputs (thresholds 0.3, 0.6), each equal to the one-process
    decode's (``one_t*``), and the lower threshold has more segments."""
    assert out.split() == [f"{tmp_path / 'twin'}_t0.3", f"{tmp_path / 'twin'}_t0.6"]
    counts = []
    for t in ("0.3", "0.6"):
        expected = open_volume(f"{tmp_path / 'one'}_t{t}").read()
        np.testing.assert_array_equal(open_volume(f"{tmp_path / 'twin'}_t{t}").read(), expected)
        counts.append(int(expected.max()))
    assert counts[0] > counts[1] >= 1


def test_twin_runs_the_same_commands_as_the_array_tasks():
    steps = blocks_commands("decode", ["aff", "-o", "seg", "--block-size", "16"], 3)
    assert [(s.name, s.tasks) for s in steps] == [("label", 3), ("reduce", None), ("relabel", 3)]
    assert steps[0].task_argv(2, slurm=False)[-4:] == ["--step", "label", "--blocks", "2/3"]
    assert steps[0].task_argv(None, slurm=True)[-2:] == ["--blocks", '"$SLURM_ARRAY_TASK_ID/3"']
    assert steps[1].task_argv(None, slurm=False)[-2:] == ["--step", "reduce"]


@pytest.mark.slow
def test_blocks_decode_local_twin_equals_whole_decode(tmp_path, capsys):
    rng = np.random.default_rng(0)
    aff = np.clip(rng.random((3, 32, 32, 32), dtype=np.float32) * 0.6 + 0.35, 0, 1)
    uri = str(tmp_path / "aff")
    create_volume(uri, aff.shape, np.float32, chunk_size=(16, 16, 16)).write(aff)
    whole = subprocess.run([str(BIN / "pytc-decode"), uri, "-o", str(tmp_path / "whole"),
                            "--threshold", "0.5", "-q"], capture_output=True, text=True)
    assert whole.returncode == 0, whole.stderr
    code = run_entry_point("pytc-launch", app, [
        "blocks", "decode", "--tasks", "2", "--local", "-q", "--", uri, "-o",
        str(tmp_path / "twin"), "--threshold", "0.5", "--block-size", "16"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.strip() == str(tmp_path / "twin")
    expected = open_volume(str(tmp_path / "whole")).read()
    assert expected.max() > 1
    np.testing.assert_array_equal(open_volume(str(tmp_path / "twin")).read(), expected)


@pytest.mark.slow
def test_blocks_decode_local_twin_writes_every_ws_threshold(tmp_path, capsys):
    """Several ws thresholds as array tasks (label shares, reduce, relabel shares): one output
    per threshold, each equal to one whole-volume pytc-decode of all thresholds (the same
    fragment grid, 8, which the blocks of 16 are multiples of)."""
    rng = np.random.default_rng(1)
    aff = np.clip(rng.random((3, 32, 32, 32), dtype=np.float32) * 0.6 + 0.35, 0, 1)
    uri = str(tmp_path / "aff")
    create_volume(uri, aff.shape, np.float32, chunk_size=(16, 16, 16)).write(aff)
    args = ["--method", "ws", "--agglomeration-threshold", "0.3,0.6",
            "--set", "ws.fragment_block=8"]
    one = subprocess.run([str(BIN / "pytc-decode"), uri, "-o", str(tmp_path / "one"), *args,
                          "-q"], capture_output=True, text=True)
    assert one.returncode == 0, one.stderr
    code = run_entry_point("pytc-launch", app, [
        "blocks", "decode", "--tasks", "2", "--local", "-q", "--", uri, "-o",
        str(tmp_path / "twin"), *args, "--block-size", "16"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert_twin_equals_one(tmp_path, out)


@pytest.mark.slow
def test_blocks_decode_local_twin_segments_a_fragments_output(tmp_path, capsys):
    """A fragments output (``--fragments-only``) segmented at two thresholds by the array
    tasks (extents shares, reduce, write shares) equals one whole-volume re-thresholding."""
    rng = np.random.default_rng(2)
    aff = np.clip(rng.random((3, 32, 32, 32), dtype=np.float32) * 0.6 + 0.35, 0, 1)
    uri = str(tmp_path / "aff")
    create_volume(uri, aff.shape, np.float32, chunk_size=(16, 16, 16)).write(aff)
    frag = str(tmp_path / "frag")
    made = subprocess.run([str(BIN / "pytc-decode"), uri, "-o", frag, "--method", "ws",
                           "--agglomeration-threshold", "0.3,0.6", "--fragments-only", "-q"],
                          capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    args = ["--agglomeration-threshold", "0.3,0.6", "--min-size", "4"]
    one = subprocess.run([str(BIN / "pytc-decode"), frag, "-o", str(tmp_path / "one"), *args,
                          "-q"], capture_output=True, text=True)
    assert one.returncode == 0, one.stderr
    code = run_entry_point("pytc-launch", app, [
        "blocks", "decode", "--tasks", "3", "--local", "-q", "--", frag, "-o",
        str(tmp_path / "twin"), *args, "--block-size", "16"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert_twin_equals_one(tmp_path, out)
