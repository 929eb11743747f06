"""pytc-train's command line: --list-archs, a light --help, stdout = best checkpoint, and every
bad input as one line, exit 2, before training, with nothing written."""

import subprocess
import sys

import h5py
import numpy as np
import pytest

from pytc_core.cli import run_entry_point
from pytc_train.cli import app

NAMES = ["mednext", "mednext/S/k3", "mednext/S/k5", "mednext/B/k3", "mednext/B/k5",
         "mednext/M/k3", "mednext/M/k5", "mednext/L/k3", "mednext/L/k5", "mednext_custom",
         "monai_basic_unet3d", "monai_segresnet", "monai_swin_unetr", "monai_unet",
         "monai_unetr"]
TINY = ["--arch", "mednext_custom", "--set", "model.mednext_base_channels=4",
        "model.mednext_exp_r=1", "model.mednext_block_counts=[1,1,1,1,1,1,1,1,1]"]


def _table(text):
    rows = {}
    for line in text.strip().splitlines():
        name, params, *_ = line.split()
        rows[name] = int(params.replace(",", ""))
    return rows


def test_list_archs_prints_every_architecture_with_parameter_counts(capsys):
    assert run_entry_point("pytc-train", app, ["--list-archs", "--quiet"]) == 0
    out, err = capsys.readouterr()
    rows = _table(out)
    assert list(rows) == NAMES
    # MedNeXt-S kernel 3: 5,550,881 parameters for 1 -> 1 channels, + 2 x 33 for 3 outputs
    assert rows["mednext"] == rows["mednext/S/k3"] == 5_550_947
    assert rows["mednext/L/k5"] == 62_992_865 + 2 * 33
    assert err == ""


def test_list_archs_uses_the_channels_of_the_config(tmp_path, capsys):
    config = tmp_path / "run.toml"
    config.write_text("[model]\narchitecture = 'mednext'\nin_channels = 2\nout_channels = 1\n")
    assert run_entry_point("pytc-train", app, ["--list-archs", "--config", str(config)]) == 0
    rows = _table(capsys.readouterr().out)
    assert rows["mednext/S/k3"] == 5_550_881 + 32  # the 1x1x1 stem reads a second channel
    config.write_text("[model]\nout_channels = 'three'\n")
    assert run_entry_point("pytc-train", app, ["--list-archs", "--config", str(config)]) == 2
    assert "config key 'model.out_channels' must be int, got 'three'" in capsys.readouterr().err


def test_help_is_light_and_has_examples():
    code = ("import sys\nfrom pytc_core.cli import run_entry_point\nfrom pytc_train.cli import app\n"
            "run_entry_point('pytc-train', app, ['--help'])\n"
            "print('HEAVY', sorted(m for m in ('torch', 'monai', 'pytorch_lightning') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "--raw" in out.stdout and "--resume" in out.stdout and "pytc-train --config" in out.stdout
    assert out.stdout.strip().endswith("HEAVY []")


def test_stdout_is_the_best_checkpoint_path(em_h5, tmp_path, capsys):
    raw, labels = em_h5[:2]
    argv = ["--raw", raw, "--labels", labels, "--bbox", "0,0,0,16,48,48", "--val-bbox",
            "16,0,0,32,48,48", "--patch", "16,16,16", "--batch-size", "2", "--max-steps", "2",
            "--run-dir", str(tmp_path / "run"), "--seed", "1", *TINY,
            "train.val_every=2", "data.num_workers=0", "data.val_max_patches=2"]
    assert run_entry_point("pytc-train", app, argv) == 0
    out, err = capsys.readouterr()
    assert out == f"{tmp_path / 'run' / 'checkpoints' / 'best.ckpt'}\n"
    assert "auto-config:" in err and "validation F1" in err
    # the same run directory again: refused without --resume / --overwrite
    assert run_entry_point("pytc-train", app, argv) == 2
    assert "already holds checkpoints of another run" in capsys.readouterr().err


def _write(path, **arrays):
    with h5py.File(path, "w") as f:
        for name, value in arrays.items():
            f[name] = value
    return path


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    raw = np.zeros((32, 48, 48), np.uint8)
    labels = np.ones((32, 48, 48), np.uint32)
    _write(d / "ok.h5", raw=raw, labels=labels)
    _write(d / "small.h5", labels=labels[:, :24])
    _write(d / "float.h5", labels=labels.astype(np.float32))
    _write(d / "flat.h5", raw=raw[0], labels=labels[0])
    _write(d / "empty.h5", labels=np.zeros_like(labels))
    with h5py.File(d / "vs.h5", "w") as f:
        f["labels"] = labels
        f["labels"].attrs["resolution"] = [40, 4, 4]
    (d / "syntax.toml").write_text("[data\nraw = 1\n")
    (d / "unknown.toml").write_text("[data]\npatch_sise = [32, 32, 32]\n")
    (d / "type.toml").write_text("[optim]\nlr = 'fast'\n")
    (d / "notackpt.ckpt").write_text("hello")
    (d / "existing" / "checkpoints").mkdir(parents=True)
    (d / "existing" / "checkpoints" / "last.ckpt").write_bytes(b"x")
    return d


def _cases(d):
    ok = [f"--raw={d}/ok.h5:raw", f"--labels={d}/ok.h5:labels"]
    base = [*ok, "--patch=16,32,32", *TINY]
    return {
        "shapes": ([f"--raw={d}/ok.h5:raw", f"--labels={d}/small.h5:labels", *TINY],
                   "do not cover the same voxels"),
        "voxel size": ([f"--raw={d}/ok.h5:raw", f"--labels={d}/vs.h5:labels", *TINY],
                       "voxel size"),
        "float labels": ([f"--raw={d}/ok.h5:raw", f"--labels={d}/float.h5:labels", *TINY],
                         "labels must be integers"),
        "2d": ([f"--raw={d}/flat.h5:raw", f"--labels={d}/flat.h5:labels", *TINY], "3D"),
        "patch > volume": ([*ok, "--patch=64,32,32", *TINY], "larger than the training region"),
        "patch > bbox": ([*base, "--bbox=0,0,0,8,48,48"], "larger than the training region"),
        "patch vs arch": ([*ok, "--patch=20,32,32", *TINY], "multiples of 16"),
        "unknown arch": ([*ok, "--patch=16,32,32", "--arch=mednxt"], "did you mean 'mednext'"),
        "unknown size": ([*ok, "--patch=16,32,32", "--arch=mednext", "--size=XL"],
                         "unknown MedNeXt size 'XL' (did you mean 'L'?"),
        "toml syntax": ([*base, f"--config={d}/syntax.toml"], "TOML syntax error"),
        "unknown key": ([*base, f"--config={d}/unknown.toml"], "did you mean 'data.patch_size'"),
        "wrong type": ([*base, f"--config={d}/type.toml"], "'optim.lr' must be float"),
        "no foreground": ([f"--raw={d}/ok.h5:raw", f"--labels={d}/empty.h5:labels",
                           "--patch=16,32,32", *TINY], "has no labelled (non-zero) voxel"),
        "init not ckpt": ([*base, f"--init-from={d}/notackpt.ckpt"], "is not a PyTorch checkpoint"),
        "init missing": ([*base, f"--init-from={d}/nope.ckpt"], "--init-from file not found"),
        "resume missing": ([*base, f"--resume={d}/nope.ckpt"], "--resume checkpoint not found"),
        "other run": ([*base, f"--run-dir={d}/existing"], "already holds checkpoints"),
        "16-mixed on cpu": ([*base, "--precision=16-mixed", "--set", "train.accelerator=cpu"],
                            "16-mixed needs a GPU"),
        "bad patch flag": ([*ok, *TINY, "--patch=16,32"], "bad patch"),
        "bad bbox": ([*base, "--bbox=0,0,0,10,0,48"], "empty or malformed"),
        "ema decay": ([*base, "--set", "optim.ema=1.0"], "optim.ema must be a decay in (0, 1)"),
        "erode > patch": ([*base, "--set", "data.erode=8"], "no object would survive"),
        "lsd channels": ([*base, "--set", "loss.lsd_weight=1.0"],
                         "set model.out_channels = 13"),
    }


CASES = list(_cases("D"))


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_exit_2_and_nothing_written(case, bad_files, tmp_path, capsys,
                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv, expected = _cases(bad_files)[case]
    if not any(a.startswith("--run-dir") for a in argv):
        argv = [*argv, f"--run-dir={tmp_path}/run"]
    assert run_entry_point("pytc-train", app, argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("pytc-train: error: ") and err.count("\n") == 1, err
    assert expected in err
    assert not (tmp_path / "run").exists()
    assert not (tmp_path / "runs").exists()


def test_resume_auto_without_a_run_dir_is_refused(em_h5, tmp_path, capsys, monkeypatch):
    """It would silently start a new runs/<timestamp> run: name the run or be refused."""
    raw, labels = em_h5[:2]
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PYTC_TRAIN_RUN_DIR", raising=False)
    code = run_entry_point("pytc-train", app, ["--raw", raw, "--labels", labels, "--patch",
                                               "16,16,16", *TINY, "--resume", "auto"])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err == ("pytc-train: error: --resume auto needs the run to continue, and no --run-dir "
                   "names one (pass --run-dir runs/<name> (train.run_dir) of the run to resume)"
                   "\n")
    assert not (tmp_path / "runs").exists()


def test_resume_refuses_changed_options_and_reuses_the_machine_choices(em_h5, tmp_path, capsys):
    raw, labels = em_h5[:2]
    run = tmp_path / "run"
    base = ["--raw", raw, "--labels", labels, "--bbox", "0,0,0,16,48,48", "--patch", "16,16,16",
            "--run-dir", str(run), *TINY, "data.num_workers=0"]
    assert run_entry_point("pytc-train", app, [*base, "--max-steps", "2"]) == 0
    first = (run / "pytc_config.toml").read_text()
    import tomllib

    chosen = tomllib.loads(first)
    batch, precision = chosen["data"]["batch_size"], chosen["train"]["precision"]
    capsys.readouterr()
    # learning rate and batch changed: refused, listing both; nothing written
    code = run_entry_point("pytc-train", app, [*base, "--max-steps", "2", "--resume", "auto",
                                               "--lr", "0.01", "--batch-size", str(batch + 1)])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and err.count("\n") == 1
    assert (f"pytc-train: error: the run in {run} was started with other options that change "
            f"the result: data.batch_size: {batch} -> {batch + 1}; optim.lr: 0.001 -> 0.01 "
            "(resume with") in err
    assert (run / "pytc_config.toml").read_text() == first
    # the same options (batch, precision, threads left on auto): the first start's choices
    code = run_entry_point("pytc-train", app, [*base, "--max-steps", "2", "--resume", "auto",
                                               "--set", "train.threads=0"])
    assert code == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    assert f"batch_size {batch} (frozen at the first start)" in err
    assert f"precision {precision} (frozen at the first start)" in err
    # --resume-changed continues and records the difference
    code = run_entry_point("pytc-train", app, [*base, "--max-steps", "3", "--resume", "auto",
                                               "--resume-changed"])
    assert code == 0, capsys.readouterr().err
    recorded = (run / "resume_changes.txt").read_text().splitlines()
    assert len(recorded) == 1
    assert recorded[0].endswith(f"resumed from {run / 'checkpoints' / 'last.ckpt'} with "
                                "train.max_steps: 2 -> 3")


def test_quiet_run_prints_progress_and_validates_once_when_no_validation_was_due(
        em_h5, tmp_path, capsys):
    """-q hides the start-up report but not the progress lines (step, loss, the last
    validation score, time left), one per --set train.progress_every steps; with max_steps
    below val_every the run validates after its last step, so best.ckpt has a score; no
    Lightning bar or tip on stderr, also with -v."""
    import torch

    raw, labels = em_h5[:2]
    argv = ["--raw", raw, "--labels", labels, "--bbox", "0,0,0,16,48,48", "--val-bbox",
            "16,0,0,32,48,48", "--patch", "16,16,16", "--batch-size", "2", "--max-steps", "4",
            "--run-dir", str(tmp_path / "run"), "--threads", "1", *TINY,
            "train.val_every=100", "train.progress_every=2", "data.num_workers=0",
            "data.val_max_patches=2"]
    assert run_entry_point("pytc-train", app, [*argv, "-q"]) == 0
    out, err = capsys.readouterr()
    best = tmp_path / "run" / "checkpoints" / "best.ckpt"
    assert out == f"{best}\n"
    lines = err.splitlines()
    assert [line.split("  ")[0] for line in lines] == ["step 2/4", "step 4/4"], err
    assert lines[0].split("  ")[2] == "val boundary_f1 -"  # no validation yet
    assert lines[0].endswith(" left") and " s/step  " in lines[0]
    assert float(lines[0].split("  ")[1].removeprefix("loss ")) > 0
    ckpt = torch.load(best, map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 4
    state = next(v for k, v in ckpt["callbacks"].items() if k.startswith("ModelCheckpoint"))
    score = float(state["best_model_score"])
    assert 0.0 <= score <= 1.0 and state["best_model_path"] == str(best)
    metrics = (tmp_path / "run" / "logs" / "metrics.csv").read_text()
    assert "val/boundary_f1" in metrics.splitlines()[0]
    assert run_entry_point("pytc-train", app, [*argv, "-v", "--overwrite"]) == 0
    err = capsys.readouterr().err
    assert "auto-config:" in err and "step 4 validation:" in err
    assert "Tip" not in err and "Epoch 0" not in err and "litlogger" not in err
    assert "step 4/4  loss" in err


def test_progress_line_states_step_loss_score_and_time_left():
    from pytc_train.train import format_duration, progress_line

    assert [format_duration(s) for s in (0, 59.4, 61, 3725, 90000)] == \
        ["0:00", "0:59", "1:01", "1:02:05", "25:00:00"]
    assert format_duration(float("nan")) == "?"
    # 100 steps in 150 s: 1.5 s/step, 400 steps left = 600 s
    assert progress_line(100, 500, 0.41234, 150.0, 100, "boundary_f1", (100, 0.44)) == \
        "step 100/500  loss 0.4123  val boundary_f1 0.4400 (step 100)  1.50 s/step  10:00 left"
    assert progress_line(1, 10, 1.0, 0.0, 0, "loss", None).endswith(
        "val loss -  nan s/step  ? left")
