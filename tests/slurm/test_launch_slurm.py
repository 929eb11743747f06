"""pytc-launch on a real Slurm (localhost; tests/slurm/local-slurm.sh): the requeue loop
with a stand-in trainer, cancel, blockwise pytc-decode and pytc-infer arrays (the real
commands), a rejected submission.
The sweep, time-limit and failure tests with the real pytc-train: test_launch_train_slurm.py.

Marked ``slurm``: CI runs them with `uv run pytest -m slurm` after starting the cluster.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _attempt_lines(run_dir: Path) -> list[str]:
    return (run_dir / "launch" / "attempts.log").read_text().splitlines()


def test_time_limit_requeue_loop_with_a_stand_in(tmp_path, standin_env, lt):
    # The requeue loop with a stand-in pytc-train whose steps take a fixed 0.1 s, so the
    # outcome does not depend on how fast the machine is (test_launch_train_slurm.py does the
    # same with the real pytc-train). 2-minute limit, USR1 60 s before it (Slurm sends it up
    # to 30 s earlier still): the run needs 60 s of steps after its start-up, so the first
    # attempt is always signalled, saves last.ckpt, is requeued and a later one finishes.
    standin_env = {**standin_env, "STANDIN_STEP_SECONDS": "0.1"}
    config = _write(tmp_path / "long.toml", """
[train]
max_steps = 600
[launch]
time = "2"
grace = 60
max_restarts = 8
""")
    job = lt.launch("train", str(config), "--dir", str(tmp_path / "run"), env=standin_env)
    assert job.stdout.strip().isdigit()
    rows = lt.wait(tmp_path / "run", 720, standin_env)
    assert rows[0]["state"] == "COMPLETED", rows
    log = (tmp_path / "run" / "standin.log").read_text().splitlines()
    starts = [int(m.group(1)) for line in log if (m := re.match(r"start step=(\d+)", line))]
    signals = [int(m.group(1)) for line in log if (m := re.match(r"signal USR1 step=(\d+)", line))]
    assert len(signals) >= 1 and starts[0] == 0
    assert starts[1:] == signals  # each attempt resumed exactly where the previous one saved
    assert log[-1] == "done step=600"
    attempts = _attempt_lines(tmp_path / "run")
    restarts = [int(m.group(1)) for line in attempts
                if (m := re.match(r"start .* restart=(\d+)", line))]
    assert restarts == list(range(len(signals) + 1))
    assert rows[0]["restarts"] == len(signals) and rows[0]["step"] == 600
    assert sum("requeue job=" in line for line in attempts) == len(signals)


def _affinities(tmp_path: Path) -> str:
    from pytc_core import create_volume

    rng = np.random.default_rng(0)
    aff = rng.random((3, 32, 32, 32), dtype=np.float32)
    aff = np.clip(aff * 0.6 + 0.35, 0, 1)  # mostly connected, with random cuts
    uri = str(tmp_path / "aff")
    create_volume(uri, aff.shape, np.float32, chunk_size=(16, 16, 16)).write(aff)
    return uri


def test_blocks_decode_array_equals_one_local_decode(tmp_path, standin_env, lt):
    from pytc_core import open_volume

    aff = _affinities(tmp_path)
    import subprocess
    import sys

    bin_dir = Path(sys.executable).parent
    whole = subprocess.run([str(bin_dir / "pytc-decode"), aff, "-o", str(tmp_path / "seg_whole"),
                            "--threshold", "0.5", "-q"], capture_output=True, text=True)
    assert whole.returncode == 0, whole.stderr
    args = [aff, "-o", str(tmp_path / "seg_slurm"), "--threshold", "0.5", "--block-size", "16"]
    job = lt.launch("blocks", "decode", "--tasks", "2", "--dir", str(tmp_path / "bl"), "--",
                    *args, env=standin_env)
    assert job.stdout.strip().isdigit()
    record = json.loads((tmp_path / "bl" / "launch.json").read_text())
    assert [j["step"] for j in record["jobs"]] == ["label", "reduce", "relabel"]
    assert "#SBATCH --array=0-1" in (tmp_path / "bl" / "label.sbatch").read_text()
    rows = lt.wait(tmp_path / "bl", 600, standin_env)
    assert [r["name"] for r in rows] == ["label/0", "label/1", "reduce", "relabel/0", "relabel/1"]
    assert all(r["state"] == "COMPLETED" for r in rows), rows
    expected = open_volume(str(tmp_path / "seg_whole")).read()
    assert expected.max() > 1  # several segments, so equality means something
    np.testing.assert_array_equal(open_volume(str(tmp_path / "seg_slurm")).read(), expected)


def test_blocks_infer_array_equals_one_local_infer(tmp_path, lt):
    import os
    import subprocess

    import torch

    from pytc_core import create_volume, open_volume
    from pytc_core.models import build_model, save_checkpoint

    env = dict(os.environ)
    table = {"architecture": "monai_unet", "in_channels": 1, "out_channels": 3,
             "filters": [2, 4], "num_res_units": 0}
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "tiny.ckpt", build_model(table),
                           {"model": table, "data": {"patch_size": [16, 16, 16]}})
    rng = np.random.default_rng(1)
    raw = rng.integers(0, 256, (32, 32, 48), dtype=np.uint8)
    create_volume(str(tmp_path / "raw"), raw.shape, np.uint8, chunk_size=(16, 16, 16)).write(raw)
    common = ["--checkpoint", str(ckpt), "--input", str(tmp_path / "raw"), "--block-size", "16"]
    whole = subprocess.run(["pytc-infer", *common, "-o", str(tmp_path / "aff_whole"), "-q"],
                           env=env, capture_output=True, text=True)
    assert whole.returncode == 0, whole.stderr
    job = lt.launch("blocks", "infer", "--tasks", "3", "--dir", str(tmp_path / "bl"), "--",
                    *common, "-o", str(tmp_path / "aff_slurm"), env=env)
    assert job.stdout.strip().isdigit()
    rows = lt.wait(tmp_path / "bl", 600, env)
    assert len(rows) == 3 and all(r["state"] == "COMPLETED" for r in rows), rows
    expected = open_volume(str(tmp_path / "aff_whole")).read()
    assert expected.std() > 0
    np.testing.assert_array_equal(open_volume(str(tmp_path / "aff_slurm")).read(), expected)


def test_rejected_submission_shows_slurms_message_and_leaves_nothing(tmp_path, standin_env, lt):
    config = _write(tmp_path / "t.toml", "[train]\nmax_steps = 1\n[launch]\npartition = \"nope\"\n")
    out = lt.launch("train", str(config), "--dir", str(tmp_path / "run"), env=standin_env,
                 check=False)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.startswith("pytc-launch: error: Slurm rejected the job: sbatch: error: ")
    assert "invalid partition" in out.stderr.lower() and out.stderr.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_cancel_ends_the_running_and_pending_tasks(tmp_path, standin_env, lt):
    standin_env = {**standin_env, "STANDIN_STEP_SECONDS": "0.1"}
    sweep = _write(tmp_path / "sweep.toml", """
[train]
max_steps = 100000
[sweep]
"train.seed" = [1, 2, 3]
[launch]
max_parallel = 1
""")
    array_id = lt.launch("sweep", str(sweep), "--dir", str(tmp_path / "sw"),
                         env=standin_env).stdout.strip()
    out = lt.launch("cancel", str(tmp_path / "sw"), env=standin_env)
    assert out.stdout == "" and f"{array_id}_0" in out.stderr
    rows = lt.wait(tmp_path / "sw", 120, standin_env)
    assert [r["state"] for r in rows] == ["CANCELLED"] * 3
