"""pytc-launch with the real pytc-train on a real Slurm (localhost): a sweep and its
leaderboard, a time-limited job that checkpoints, requeues and resumes, a failing task that
is not requeued and `resubmit --failed`. Marked ``slurm``."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]

TINY = """
[model]
architecture = "mednext_custom"
mednext_base_channels = 4
mednext_exp_r = 1
mednext_block_counts = [1, 1, 1, 1, 1, 1, 1, 1, 1]
[data]
raw = "{em}:raw"
labels = "{em}:labels"
bbox = [0, 0, 0, 16, 48, 48]
val_bbox = [16, 0, 0, 32, 48, 48]
patch_size = [16, 16, 16]
batch_size = 2
num_workers = 0
val_max_patches = 4
[train]
accelerator = "cpu"
precision = "32"
"""


@pytest.fixture(scope="module")
def em(tmp_path_factory) -> Path:
    """A 32x48x48 synthetic EM volume (raw uint8, labels) in one HDF5 file."""
    import h5py

    from pytc_core.synthetic import synthetic_em_volume

    raw, labels = synthetic_em_volume((32, 48, 48), seed=3)
    path = tmp_path_factory.mktemp("em") / "em.h5"
    with h5py.File(path, "w") as f:
        f["raw"] = raw
        f["labels"] = labels
    return path


@pytest.fixture
def env():
    import os

    return dict(os.environ)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _attempts(run_dir: Path) -> list[str]:
    return (run_dir / "launch" / "attempts.log").read_text().splitlines()


def test_sweep_of_four_real_runs_and_its_leaderboard(tmp_path, em, env, lt):
    sweep = _write(tmp_path / "sweep.toml", TINY.format(em=em) + """
max_steps = 4
val_every = 2
checkpoint_every = 2
[sweep]
"optim.lr" = [1e-3, 3e-3]
"train.seed" = [1, 2]
[launch]
cpus_per_task = 1
""")
    out = lt.launch("sweep", str(sweep), "--dir", str(tmp_path / "sw"), env=env)
    assert out.stdout.strip().isdigit()
    rows = lt.wait(tmp_path / "sw", 900, env)
    assert [r["state"] for r in rows] == ["COMPLETED"] * 4, rows
    for i, (lr, seed) in enumerate([(1e-3, 1), (1e-3, 2), (3e-3, 1), (3e-3, 2)]):
        run = tmp_path / "sw" / "runs" / f"{i:03d}"
        text = (run / "launch" / "config.toml").read_text()
        assert f"lr = {lr}" in text and f"seed = {seed}" in text
        assert (run / "checkpoints" / "best.ckpt").is_file()
        assert (run / "checkpoints" / "last.ckpt").is_file()
        assert f"lr = {lr}" in (run / "pytc_config.toml").read_text()  # pytc-train's own
    status = lt.launch("status", str(tmp_path / "sw"), "--json", env=env)
    report = json.loads(status.stdout)
    metrics = [r["metric"] for r in report["runs"]]
    assert all(m is not None for m in metrics) and all(r["step"] == 4 for r in report["runs"])
    assert metrics == sorted(metrics, reverse=True)  # validation F1: higher ranks first
    top = report["runs"][0]
    assert report["best"]["name"] == top["name"]
    assert top["checkpoint"] == str(tmp_path / "sw" / "runs" / top["name"] / "checkpoints"
                                    / "best.ckpt")
    plain = lt.launch("status", str(tmp_path / "sw"), env=env)
    assert plain.stdout.strip() == top["checkpoint"]


def test_real_training_is_signalled_requeued_and_resumes_its_step(tmp_path, em, env, lt):
    # 2-minute limit, USR1 60 s before it (Slurm may send it up to 30 s earlier still).
    # Training stops after 60 s of training time in all (Lightning's max_time, which a resumed
    # run carries on counting), so the first attempt is always signalled before it finishes.
    config = _write(tmp_path / "long.toml", TINY.format(em=em) + """
max_steps = 1000000
max_minutes = 1.0
val_every = 1000000
checkpoint_every = 1000000
log_every = 1
[launch]
time = "2"
grace = 60
max_restarts = 20
""")
    job = lt.launch("train", str(config), "--dir", str(tmp_path / "run"), env=env)
    assert job.stdout.strip().isdigit()
    rows = lt.wait(tmp_path / "run", 1500, env)
    out = (tmp_path / "run" / "launch" / "slurm.out").read_text()
    assert rows[0]["state"] == "COMPLETED", out[-3000:]
    attempts = _attempts(tmp_path / "run")
    # an attempt the signal stopped: pytc-train saved last.ckpt and exited 75 (a signal during
    # its start-up kills it: 138), and the wrapper requeued it. A signal that arrives as
    # training reaches max_time ends with rc 0: the work finished, so no requeue (seen in CI).
    preempted = [line for line in attempts if line.startswith("end") and "signalled=1" in line
                 and " rc=0 " not in line]
    assert preempted and any(" rc=75 " in line for line in preempted), attempts
    requeued = [line for line in attempts if line.startswith("requeue")]
    assert len(requeued) == len(preempted), attempts
    restarts = [int(m.group(1)) for line in attempts
                if (m := re.match(r"start .* restart=(\d+)", line))]
    assert restarts == list(range(len(preempted) + 1)), attempts
    assert rows[0]["restarts"] == len(preempted)
    assert re.match(r"end .* rc=0 ", attempts[-1]), attempts  # the last attempt finished
    # step continuity: every progress line's step once, in order; after each requeue the run
    # goes on from the step it saved (the batch in flight at the signal is saved, not printed)
    attempts_out = re.split(r"pytc-launch: job \d+ starts \(restart \d+\)", out)[1:]
    assert len(attempts_out) == len(restarts)
    steps = [[int(s) for s in re.findall(r"^step (\d+)/1000000 ", part, re.M)]
             for part in attempts_out]
    flat = [s for part in steps for s in part]
    assert flat == sorted(set(flat))
    # an attempt whose signal came during start-up prints no step but may train one (saved
    # at the stop: "stopping after the first step"; a loaded machine does this), so each such
    # attempt before a printed one widens its allowed gap by one
    last_seen, silent = 0, 0
    for part in steps:
        if not part:
            silent += 1
            continue
        assert 1 <= part[0] - last_seen <= 2 + silent, (last_seen, silent, part[:3])
        last_seen, silent = part[-1], 0
    assert sum(bool(part) for part in steps) >= 2  # trained before and after a requeue
    assert rows[0]["step"] >= flat[-1]


def test_failing_real_run_is_not_requeued_and_resubmit_reruns_only_it(tmp_path, em, env, lt):
    late = tmp_path / "late" / "em.h5"
    sweep = _write(tmp_path / "sweep.toml", TINY.format(em=em) + f"""
max_steps = 2
val_every = 2
[sweep.zip]
"data.raw" = ["{em}:raw", "{late}:raw"]
"data.labels" = ["{em}:labels", "{late}:labels"]
""")
    lt.launch("sweep", str(sweep), "--dir", str(tmp_path / "sw"), env=env)
    rows = {r["name"]: r for r in lt.wait(tmp_path / "sw", 900, env)}
    assert rows["000"]["state"] == "COMPLETED"
    assert rows["001"]["state"] == "FAILED" and rows["001"]["restarts"] == 0
    failed = _attempts(tmp_path / "sw" / "runs" / "001")
    assert len(failed) == 2 and "rc=2 signalled=0" in failed[1]  # a user error, not requeued
    assert "error" in (tmp_path / "sw" / "runs" / "001" / "launch" / "slurm.out").read_text()
    status = lt.launch("status", str(tmp_path / "sw"), env=env)
    assert re.search(r"001\s+\d+_1\s+FAILED", status.stderr)

    late.parent.mkdir()
    shutil.copy(em, late)
    new_id = lt.launch("resubmit", str(tmp_path / "sw"), "--failed", env=env).stdout.strip()
    assert new_id.isdigit()
    rows = {r["name"]: r for r in lt.wait(tmp_path / "sw", 900, env)}
    assert rows["001"]["state"] == "COMPLETED" and rows["001"]["job_id"] == f"{new_id}_1"
    assert sum(line.startswith("start") for line in _attempts(tmp_path / "sw" / "runs" / "000")) == 1
    assert sum(line.startswith("start") for line in _attempts(tmp_path / "sw" / "runs" / "001")) == 2
