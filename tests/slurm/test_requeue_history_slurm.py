"""A training requeued at least twice on a real Slurm (localhost) keeps one continuous
metrics history, and its best.ckpt is the best validation of all attempts (issue 23 §8).
Marked ``slurm``; run with ``tests/slurm/local-slurm.sh start`` then
``uv run pytest -m slurm tests/slurm/test_requeue_history_slurm.py``."""

from __future__ import annotations

import csv
import json
import re
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
    import h5py

    from pytc_core.synthetic import synthetic_em_volume

    raw, labels = synthetic_em_volume((32, 48, 48), seed=3)
    path = tmp_path_factory.mktemp("em") / "em.h5"
    with h5py.File(path, "w") as f:
        f["raw"] = raw
        f["labels"] = labels
    return path


def _best_score(path: Path) -> float:
    import torch

    state = torch.load(path, weights_only=False)["callbacks"]
    (score,) = [s["best_model_score"] for k, s in state.items() if k.startswith("ModelCheckpoint")]
    return float(score)


def test_a_run_requeued_twice_keeps_its_history_and_its_best(tmp_path, em, lt):
    import os

    env = dict(os.environ)
    # 2-minute limit, USR1 60 s before it; 2.5 minutes of training in all (Lightning's
    # max_time, counted on across resumes): at least three attempts, two requeues. An attempt
    # trains 10-40 s after its start-up on 2 busy cores (seen: eleven attempts for 2.5 min),
    # so up to 20 restarts
    config = tmp_path / "long.toml"
    config.write_text(TINY.format(em=em) + """
max_steps = 1000000
max_minutes = 2.5
val_every = 5
checkpoint_every = 1000000
log_every = 1
[launch]
time = "2"
grace = 60
max_restarts = 20
""")
    run = tmp_path / "run"
    job = lt.launch("train", str(config), "--dir", str(run), env=env)
    assert job.stdout.strip().isdigit()
    rows = lt.wait(run, 1800, env)
    out = (run / "launch" / "slurm.out").read_text()
    assert rows[0]["state"] == "COMPLETED", out[-3000:]
    assert rows[0]["restarts"] >= 2, out[-3000:]
    with open(run / "logs" / "metrics.csv", newline="") as fh:
        history = list(csv.DictReader(fh))
    # one continuous history: every training step once, in order, from all attempts
    train_steps = [int(r["step"]) for r in history if r.get("train/loss")]
    assert train_steps == list(range(train_steps[0], train_steps[-1] + 1))
    assert train_steps[0] == 0 and train_steps[-1] + 1 == rows[0]["step"]
    val = {int(r["step"]): float(r["val/boundary_f1"]) for r in history
           if r.get("val/boundary_f1")}
    # every 5 steps on the schedule of an uninterrupted run (a preemption adds none), plus
    # the validation Lightning runs when max_time ends the training at another step
    scheduled = list(range(4, rows[0]["step"], 5))
    last = rows[0]["step"] - 1
    assert sorted(val) in (scheduled, [*scheduled, last]), sorted(val)
    # best.ckpt holds the best validation of all attempts, and status reports its own score
    best = _best_score(run / "checkpoints" / "best.ckpt")
    assert best == pytest.approx(max(val.values()))
    report = json.loads(lt.launch("status", str(run), "--json", env=env).stdout)
    assert report["runs"][0]["metric"] == pytest.approx(best)
    # the last attempt says its own steps and the run's
    found = re.findall(r"trained (\d+) steps in this attempt \((\d+) in total\)", out)
    assert found and int(found[-1][1]) == rows[0]["step"] > int(found[-1][0])
