"""`pytc-launch blocks eval` on a real Slurm (localhost; tests/slurm/local-slurm.sh): the
sample array and the reduce job print the report of one local pytc-eval.

Marked ``slurm``: CI runs them with `uv run pytest -m slurm` after starting the cluster.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]


def test_blocks_eval_array_equals_one_local_eval(tmp_path, standin_env, lt):
    from pytc_core import create_volume

    rng = np.random.default_rng(0)
    gt = rng.integers(1, 5, (32, 32, 32)).astype(np.uint32)
    seg = np.where(rng.random(gt.shape) < 0.1, 7, gt).astype(np.uint32)
    uris = []
    for name, arr in (("gt", gt), ("seg", seg)):
        uris.append(str(tmp_path / name))
        create_volume(uris[-1], arr.shape, arr.dtype, layer_type="segmentation").write(arr)
    args = [uris[1], "--gt", uris[0], "--block-size", "16", "--json", "-q"]
    whole = subprocess.run([str(Path(sys.executable).parent / "pytc-eval"), *args],
                           capture_output=True, text=True)
    assert whole.returncode == 0, whole.stderr
    job = lt.launch("blocks", "eval", "--tasks", "2", "--dir", str(tmp_path / "bl"), "--",
                    *args, "--scratch", str(tmp_path / "scratch"), env=standin_env)
    assert job.stdout.strip().isdigit()
    record = json.loads((tmp_path / "bl" / "launch.json").read_text())
    assert [j["step"] for j in record["jobs"]] == ["sample", "reduce"]
    rows = lt.wait(tmp_path / "bl", 600, standin_env)
    assert [r["name"] for r in rows] == ["sample/0", "sample/1", "reduce"]
    assert all(r["state"] == "COMPLETED" for r in rows), rows
    log = (tmp_path / "bl" / "logs" / "reduce.out").read_text().splitlines()
    assert [line for line in log if line.startswith("{")] == whole.stdout.splitlines()
