"""Real runs through the console script: SIGTERM + resume gives the uninterrupted weights,
2-process DDP on CPU (gloo), and a model that learns on the FlyEM medulla volume."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.slow

FLYEM = Path(__file__).resolve().parents[3] / "examples" / "data" / "flyem_medulla_250.h5"
TINY = ["--arch", "mednext_custom", "--set", "model.mednext_base_channels=4",
        "model.mednext_exp_r=1", "model.mednext_block_counts=[1,1,1,1,1,1,1,1,1]"]


def _command(em, run_dir, *extra):
    raw, labels = em[:2]
    return [sys.executable, "-m", "pytc_train.cli", "--raw", raw, "--labels", labels,
            "--bbox", "0,0,0,32,48,48", "--patch", "16,16,16", "--batch-size", "2",
            "--run-dir", str(run_dir), "--seed", "7", *extra, *TINY, "data.num_workers=0",
            "train.threads=1", "train.accelerator=cpu", "train.log_every=1",
            "train.checkpoint_every=1000"]


def _weights(path):
    return torch.load(path, weights_only=True)["state_dict"]


@pytest.mark.parametrize(("accumulate", "precision"), [(1, "32"), (2, "32"), (1, "bf16-mixed")])
def test_sigterm_saves_last_and_resume_matches_an_uninterrupted_run(em_h5, tmp_path, accumulate,
                                                                    precision):
    # with accumulate 2 the signal lands between the two micro-batches of a step half the
    # time: the run finishes that step before it saves and stops; bf16-mixed is what
    # precision auto picks on CPUs with native bfloat16
    steps = ["--max-steps", "12", "--precision", precision, "--set",
             f"optim.accumulate={accumulate}"]
    straight = subprocess.run(_command(em_h5, tmp_path / "a", *steps), capture_output=True,
                              text=True, timeout=900)
    assert straight.returncode == 0, straight.stderr
    assert straight.stdout == f"{tmp_path / 'a' / 'checkpoints' / 'best.ckpt'}\n"

    proc = subprocess.Popen(_command(em_h5, tmp_path / "b", *steps), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:  # progress lines on stderr: signal after step 4
        if line.startswith("step 4/12"):
            proc.send_signal(signal.SIGTERM)
            break
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 75, err
    assert out == ""
    assert "continue with --resume auto" in err
    last = tmp_path / "b" / "checkpoints" / "last.ckpt"
    stopped_at = torch.load(last, weights_only=True)["global_step"]
    assert 4 <= stopped_at < 12

    resumed = subprocess.run(_command(em_h5, tmp_path / "b", *steps, "--resume", "auto"),
                             capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from {last}" in resumed.stderr
    a, b = _weights(tmp_path / "a" / "checkpoints" / "last.ckpt"), _weights(last)
    assert torch.load(last, weights_only=True)["global_step"] == 12
    # bit-identical: same seed, one thread, workers 0, every patch a function of its index
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_a_signal_during_start_up_stops_after_the_first_step_saved(em_h5, tmp_path):
    """Slurm's --signal may come before the training loop exists (imports, data setup): the
    run records it, trains one step, saves last.ckpt and exits with the requeue code."""
    import time

    proc = subprocess.Popen(_command(em_h5, tmp_path / "early", "--max-steps", "12"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(3)  # the console script is up; torch and the data are still loading
    assert proc.poll() is None
    proc.send_signal(signal.SIGUSR1)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 75, err
    assert "SIGUSR1 arrived before training started" in err
    last = tmp_path / "early" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 1


def test_ddp_two_cpu_processes_train_and_write_one_checkpoint(em_h5, tmp_path):
    result = subprocess.run(_command(em_h5, tmp_path / "ddp", "--max-steps", "3", "--devices",
                                     "2", "--val-bbox", "16,0,0,32,48,48"),
                            capture_output=True, text=True, timeout=900,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert result.returncode == 0, result.stderr
    best = tmp_path / "ddp" / "checkpoints" / "best.ckpt"
    assert result.stdout == f"{best}\n"  # one line: only rank 0 prints
    assert sorted(p.name for p in (tmp_path / "ddp" / "checkpoints").iterdir()) == [
        "best.ckpt", "last.ckpt"]
    last = torch.load(tmp_path / "ddp" / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 3
    assert last["hyper_parameters"]["config"]["train"]["devices"] == 2
    assert not list((tmp_path).glob("runs*"))


def _all_connected_and_threshold_baselines(raw, labels):
    from pytc_core.targets import affinities_from_labels
    from pytc_train.module import scores_from_counts

    target, mask = affinities_from_labels(labels)
    t, m = target > 0.5, mask > 0.5

    def scores(pred):
        return scores_from_counts([(pred & t & m).sum(), (pred & ~t & m).sum(),
                                   (~pred & t & m).sum(), (~pred & ~t & m).sum()])

    connected = scores(np.ones_like(t))
    best = max((scores(affinities_from_labels((raw > th).astype(np.int64))[0] > 0.5)
                for th in range(60, 200, 10)), key=lambda s: s["boundary_f1"])
    return connected, best


@pytest.mark.skipif(not FLYEM.is_file(), reason="bundled FlyEM volume missing")
def test_a_short_run_on_flyem_beats_the_baselines(tmp_path):
    """100 steps of a small MedNeXt (~3 minutes on an idle 2-core machine): the F1 of cut
    edges on held-out z >= 175 patches beats all-connected (0) and the best raw threshold
    (0.175). Measured 2026-11-23: 0.199 (cosine to step 100; a run with a 300-step cosine
    scored 0.30 at step 100 over the whole region, bench_train.py). The F1 of joined edges
    is printed, not asserted: all-connected sits at 0.978 there."""
    uri = str(FLYEM)
    cmd = [sys.executable, "-m", "pytc_train.cli", "--raw", f"{uri}:raw", "--labels",
           f"{uri}:labels", "--bbox", "0,0,0,175,250,250", "--val-bbox", "175,0,0,250,250,250",
           "--patch", "32,64,64", "--batch-size", "2", "--max-steps", "100", "--seed", "0",
           "--run-dir", str(tmp_path / "run"), "--arch", "mednext_custom",
           # unaugmented: 100 steps with the default `realistic` augmentation reached boundary
           # F1 0.150 (threshold baseline 0.175); augmentation pays off over longer runs
           "--aug", "none", "--set",
           "model.mednext_base_channels=16", "model.mednext_exp_r=2",
           "model.mednext_block_counts=[1,1,1,1,1,1,1,1,1]", "train.val_every=100",
           "data.val_max_patches=12", "train.log_every=20", "train.threads=1"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    assert result.returncode == 0, result.stderr
    from pytc_core import open_volume

    raw = open_volume(f"{uri}:raw").read()[175:]
    labels = open_volume(f"{uri}:labels").read()[175:].astype(np.int64)
    connected, threshold = _all_connected_and_threshold_baselines(raw, labels)
    metrics = (tmp_path / "run" / "logs" / "metrics.csv").read_text().splitlines()
    header = metrics[0].split(",")
    rows = [dict(zip(header, line.split(","), strict=True)) for line in metrics[1:]]
    val = [r for r in rows if r.get("val/boundary_f1")][-1]
    model_bf1, model_f1 = float(val["val/boundary_f1"]), float(val["val/f1"])
    print(f"model F1 {model_f1:.4f} boundary F1 {model_bf1:.4f}; all-connected {connected}; "
          f"raw threshold {threshold}")
    assert connected["boundary_f1"] == 0.0
    assert model_bf1 > threshold["boundary_f1"]
