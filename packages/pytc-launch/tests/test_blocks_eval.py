"""`pytc-launch blocks eval`: the sample array and the reduce job; its local twin prints the
same report as one pytc-eval (real runs)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pytc_core import create_volume
from pytc_core.cli import run_entry_point
from pytc_core.errors import UserError
from pytc_launch.cli import app
from pytc_launch.launch import blocks_commands

BIN = Path(sys.executable).parent


def test_blocks_eval_runs_sample_shares_then_one_reduce():
    args = ["seg", "--gt", "gt", "--block-size", "16", "--scratch", "s"]
    steps = blocks_commands("eval", args, 3)
    assert [(s.name, s.tasks) for s in steps] == [("sample", 3), ("reduce", None)]
    assert steps[0].task_argv(1, slurm=False)[-4:] == ["--step", "sample", "--blocks", "1/3"]
    assert steps[1].task_argv(None, slurm=False)[-2:] == ["--step", "reduce"]
    assert Path(steps[0].argv[0]).name == "pytc-eval"


@pytest.mark.parametrize("missing", ["--block-size", "--scratch"])
def test_blocks_eval_needs_block_size_and_scratch(missing):
    args = ["seg", "--gt", "gt", "--block-size", "16", "--scratch", "s"]
    i = args.index(missing)
    del args[i:i + 2]
    with pytest.raises(UserError, match=f"blocks eval needs {missing}"):
        blocks_commands("eval", args, 2)


@pytest.mark.slow
def test_blocks_eval_local_twin_prints_the_report_of_one_eval(tmp_path, capsys):
    gt = np.zeros((16, 24, 24), np.uint32)
    gt[:, :12] = 1
    gt[:, 12:] = 2
    seg = gt.copy()
    seg[:8, :12] = 3  # a split
    seg[:, 10:14] = 2  # a merge of voxels of 1 into 2
    uris = []
    for name, arr in (("gt", gt), ("seg", seg)):
        uris.append(str(tmp_path / name))
        create_volume(uris[-1], arr.shape, arr.dtype, layer_type="segmentation").write(arr)
    args = [uris[1], "--gt", uris[0], "--block-size", "8", "--json", "-q"]
    whole = subprocess.run([str(BIN / "pytc-eval"), *args], capture_output=True, text=True)
    assert whole.returncode == 0, whole.stderr
    code = run_entry_point("pytc-launch", app, [
        "blocks", "eval", "--tasks", "3", "--local", "-q", "--", *args, "--scratch",
        str(tmp_path / "scratch")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out == whole.stdout
    report = json.loads(out)
    assert report["n_segments"] == 3 and report["voi_split"] > 0 and report["voi_merge"] > 0
    assert len(list((tmp_path / "scratch").glob("*/share-*-of-3.npz"))) == 3
