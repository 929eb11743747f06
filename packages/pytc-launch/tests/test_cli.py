"""pytc-launch's command line without a cluster: dry runs and bad input (one line, exit 2,
nothing written or submitted). The same commands run on a real Slurm in tests/slurm."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pytc_core.cli import run_entry_point
from pytc_launch.cli import app

SWEEP = """
[model]
architecture = "mednext"
[train]
max_steps = 10
[sweep]
"model.mednext_kernel_size" = [3, 5]
"model.mednext_size" = ["S", "B"]
[launch]
time = "1:00:00"
grace = 120
"""


def run(argv, capsys):
    code = run_entry_point("pytc-launch", app, argv)
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code, out, err):
    assert code == 2 and out == ""
    assert err.startswith("pytc-launch: error: ") and err.count("\n") == 1, err
    return err


@pytest.fixture
def no_slurm(monkeypatch, tmp_path):
    """A PATH with Python's bin folder but no Slurm commands."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


def test_sweep_dry_run_prints_runs_and_script_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(SWEEP)
    code, out, err = run(["sweep", str(sweep), "--dir", str(tmp_path / "sw"), "--dry-run",
                          "--max-parallel", "2", "--set", "partition=gpu"], capsys)
    assert code == 0, err
    assert "4 runs:" in err and "model.mednext_kernel_size" in err
    assert "#SBATCH --array=0-3%2" in out and "#SBATCH --signal=B:USR1@120" in out
    assert "#SBATCH --time=1:00:00" in out and "#SBATCH --partition=gpu" in out
    assert '--run-dir "$RUN_DIR" --resume auto' in out
    assert not (tmp_path / "sw").exists()


def test_train_dry_run(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "train.toml"
    config.write_text("[train]\nmax_steps = 10\n")
    code, out, err = run(["train", str(config), "--dir", str(tmp_path / "run"), "--dry-run",
                          "--gpus", "2", "--nodes", "2", "--time", "24:00:00",
                          "--partition", "gpu"], capsys)  # (a cluster's default may have none)
    assert code == 0, err
    assert "#SBATCH --ntasks-per-node=2" in out and "#SBATCH --gpus-per-node=2" in out
    assert "--devices 2 --set train.num_nodes=2" in out
    assert f"--run-dir {tmp_path / 'run'} --resume auto" in out
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("sweep_table", "message"), [
    ('"model.mednext_size" = []', "sweep key 'model.mednext_size' has an empty list of values"),
    ('[sweep.zip]\n"optim.lr" = [1e-3]\n"train.seed" = [1, 2]',
     "[sweep.zip] lists have unequal lengths ('optim.lr' has 1, 'train.seed' has 2)"),
])
def test_bad_sweeps(tmp_path, capsys, sweep_table, message):
    sweep = tmp_path / "bad.toml"
    sweep.write_text(f"[train]\nmax_steps = 1\n[sweep]\n{sweep_table}\n")
    err = one_line_error(*run(["sweep", str(sweep), "--dir", str(tmp_path / "sw"), "--dry-run"],
                              capsys))
    assert message in err
    assert not (tmp_path / "sw").exists()


def test_sbatch_missing_says_how_to_dry_run(tmp_path, capsys, no_slurm):
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(SWEEP)
    err = one_line_error(*run(["sweep", str(sweep), "--dir", str(tmp_path / "sw")], capsys))
    assert "sbatch not found" in err and "--dry-run" in err
    assert not (tmp_path / "sw").exists()


def test_status_of_a_plain_directory(tmp_path, capsys):
    err = one_line_error(*run(["status", str(tmp_path)], capsys))
    assert f"{tmp_path} is not a pytc-launch run or sweep directory" in err


@pytest.mark.parametrize(("stage", "args", "message"), [
    ("decode", ["--tasks", "4", "--", "aff", "-o", "seg"], "needs a block size"),
    ("decode", ["--tasks", "4", "--", "aff", "--block-size", "16", "--blocks", "0/2"],
     "--blocks is set by pytc-launch blocks"),
    ("infer", ["--tasks", "0", "--", "--input", "raw"], "--tasks must be >= 1"),
    ("infer", ["--tasks", "2"], "no pytc-infer arguments given"),
    ("infer", ["--tasks", "2", "--", "-c", "run.ckpt", "-i", "raw", "-o", "aff.h5:aff"],
     "--blocks shares cannot write the single HDF5 file aff.h5 together (write the output to "
     "a chunked format such as aff_aff (a precomputed layer) or aff_aff.zarr)"),
    ("decode", ["--tasks", "2", "--", "aff", "--output=seg.npy", "--block-size", "16"],
     "--blocks shares cannot write the single NPY file seg.npy together"),
])
def test_bad_blocks(tmp_path, capsys, stage, args, message):
    argv = ["blocks", stage, "--dry-run", "--dir", str(tmp_path / "bl"), *args]
    assert message in one_line_error(*run(argv, capsys))
    assert not (tmp_path / "bl").exists()


def test_blocks_decode_dry_run_writes_three_scripts(tmp_path, capsys):
    code, out, err = run(["blocks", "decode", "--tasks", "3", "--dry-run", "--dir",
                          str(tmp_path / "bl"), "--", "aff", "-o", "seg", "--block-size", "16"],
                         capsys)
    assert code == 0, err
    assert out.count("#!/bin/bash") == 3
    assert '--block-size 16 --step label --blocks "$SLURM_ARRAY_TASK_ID/3" &' in out
    assert "--block-size 16 --step reduce &" in out
    assert '--step relabel --blocks "$SLURM_ARRAY_TASK_ID/3" &' in out
    assert not (tmp_path / "bl").exists()


@pytest.mark.parametrize(("argv", "message"), [
    (["train", "{cfg}", "--time", "soon", "--dry-run"], "bad time limit 'soon'"),
    (["train", "{cfg}", "--set", "partitoin=gpu", "--dry-run"],
     "unknown config key 'partitoin' (did you mean 'partition'?"),
    (["resubmit", "{dir}"], "resubmit needs --failed"),
])
def test_bad_flags(tmp_path, capsys, argv, message):
    cfg = tmp_path / "t.toml"
    cfg.write_text("[train]\nmax_steps = 1\n")
    argv = [a.format(cfg=cfg, dir=tmp_path) for a in argv]
    assert message in one_line_error(*run(argv, capsys))


def test_status_reads_a_launch_record_without_slurm(tmp_path, capsys, no_slurm):
    """status falls back to the attempts log when no Slurm command answers."""
    import torch

    d = tmp_path / "sw"
    record = {"kind": "sweep", "format": 1, "meta": {}, "runs": [
        {"name": "000", "params": {"optim.lr": 0.1}}, {"name": "001", "params": {"optim.lr": 0.2}}],
        "jobs": [{"step": "sweep", "script": "sweep.sbatch", "tasks": 2,
                  "submissions": [{"job_id": "7", "tasks": [0, 1]}]}]}
    d.mkdir()
    (d / "launch.json").write_text(json.dumps(record))
    key = "ModelCheckpoint{'monitor': 'val/loss', 'mode': 'min'}"
    for name, loss, rc in (("000", 0.5, 0), ("001", 0.25, 0)):
        run_dir = d / "runs" / name
        (run_dir / "checkpoints").mkdir(parents=True)
        (run_dir / "launch").mkdir()
        torch.save({"global_step": 40, "callbacks": {key: {
            "monitor": "val/loss", "best_model_score": torch.tensor(loss),
            "best_model_path": str(run_dir / "checkpoints" / "best.ckpt")}}},
            run_dir / "checkpoints" / "last.ckpt")
        (run_dir / "checkpoints" / "best.ckpt").write_bytes(b"x")
        (run_dir / "launch" / "attempts.log").write_text(
            f"start job=9{name[-1]} array_job=7 task={int(name)} restart=0 time=1\n"
            f"end job=9{name[-1]} task={int(name)} rc=3 signalled=1 time=2\n"
            f"start job=9{name[-1]} array_job=7 task={int(name)} restart=1 time=3\n"
            f"end job=9{name[-1]} task={int(name)} rc={rc} signalled=0 time=4\n")
    code, out, err = run(["status", str(d), "--json"], capsys)
    assert code == 0, err
    report = json.loads(out)
    assert [r["name"] for r in report["runs"]] == ["001", "000"]  # a loss ranks ascending
    assert [r["state"] for r in report["runs"]] == ["COMPLETED", "COMPLETED"]
    assert [r["restarts"] for r in report["runs"]] == [1, 1]
    assert report["runs"][0]["metric"] == pytest.approx(0.25) and report["runs"][0]["step"] == 40
    assert report["best"]["checkpoint"] == str(d / "runs" / "001" / "checkpoints" / "best.ckpt")
    assert "best: run 001 (val/loss=0.25)" in err
    assert os.environ["PATH"].endswith("empty-bin")
    assert Path(report["runs"][1]["log"]).name == "slurm.out"


def test_unknown_sweep_key_names_the_closest_train_config_key(tmp_path, capsys):
    sweep = tmp_path / "sweep.toml"
    sweep.write_text('[train]\nmax_steps = 1\n[sweep]\n"model.mednext_kernal_size" = [3, 5]\n')
    err = one_line_error(*run(["sweep", str(sweep), "--dir", str(tmp_path / "sw"), "--dry-run"],
                              capsys))
    assert "sweep key 'model.mednext_kernal_size' is not in the train config schema" in err
    assert "did you mean 'model.mednext_kernel_size'?" in err


def test_train_config_is_checked_before_submitting(tmp_path, capsys):
    config = tmp_path / "t.toml"
    config.write_text("[train]\nmax_step = 3\n")
    err = one_line_error(*run(["train", str(config), "--dir", str(tmp_path / "run"),
                               "--dry-run"], capsys))
    assert f"{config}: unknown config key 'train.max_step'" in err
    assert "did you mean 'train.max_steps'?" in err
    assert not (tmp_path / "run").exists()


# --- job scripts that run on a real cluster ------------------------------------------------

def test_setup_lines_from_the_launch_table_and_setup_flags(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "unet.toml"
    config.write_text('[train]\nmax_steps = 10\n[launch]\nsetup = ["module load cuda/12.1"]\n')
    code, out, err = run(["train", str(config), "--dir", str(tmp_path / "run"), "--dry-run",
                          "--setup", "source .venv/bin/activate", "--setup",
                          "export TMPDIR=/scratch/$USER"], capsys)
    assert code == 0, err
    lines = out.splitlines()
    at = lines.index("module load cuda/12.1")
    assert lines[at - 1] == f"cd {tmp_path}"
    assert lines[at + 1:at + 3] == ["source .venv/bin/activate", "export TMPDIR=/scratch/$USER"]
    assert lines.index("export TMPDIR=/scratch/$USER") < next(
        i for i, line in enumerate(lines) if "pytc-train" in line and "--run-dir" in line)
    assert "#SBATCH --job-name=pytc-train-unet" in out
    # every script of a blocks launch has them too
    code, out, err = run(["blocks", "decode", "--tasks", "2", "--dir", str(tmp_path / "b"),
                          "--dry-run", "--setup", "module load gcc", "--", "aff", "-o", "seg",
                          "--block-size", "128"],
                         capsys)
    assert code == 0, err
    assert out.count("\nmodule load gcc\n") == 3


def test_sweep_data_paths_are_relative_to_the_sweep_file_and_the_job_is_named(tmp_path, capsys,
                                                                                monkeypatch):
    folder = tmp_path / "experiments"
    folder.mkdir()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    sweep = folder / "kernels.toml"
    sweep.write_text(SWEEP.replace("[train]", '[data]\nraw = "data/em.h5:raw"\n'
                                              'labels = "/abs/em.h5:labels"\n'
                                              '[[data.val]]\nraw = "val.zarr"\n'
                                              'labels = "gs://bucket/seg"\n[train]'))
    from pytc_launch.launch import plan_sweep

    _, _, plan = plan_sweep(sweep)
    for run_ in plan.runs:
        assert run_.config["data"]["raw"] == f"{folder}/data/em.h5:raw"
        assert run_.config["data"]["labels"] == "/abs/em.h5:labels"
        assert run_.config["data"]["val"] == [{"raw": f"{folder}/val.zarr",
                                               "labels": "gs://bucket/seg"}]
    code, out, err = run(["sweep", str(sweep), "--dir", str(tmp_path / "sw"), "--dry-run"],
                         capsys)
    assert code == 0, err
    assert "#SBATCH --job-name=pytc-sweep-kernels\n" in out
    # a generic file name: the job takes the launch folder's name
    generic = folder / "sweep.toml"
    generic.write_text(SWEEP)
    code, out, err = run(["sweep", str(generic), "--dir", str(tmp_path / "lr-study"),
                          "--dry-run"], capsys)
    assert code == 0, err
    assert "#SBATCH --job-name=pytc-sweep-lr-study\n" in out


#: ``sinfo -h -o "%P %G"`` of a cluster whose default partition has no GPUs
SINFO_CPU_DEFAULT = """cpu* (null)
gpu gpu:a100:4
gpu gpu:v100:2(S:0-1)
bigmem (null)
"""


def test_default_partition_gpus_parses_sinfo():
    from pytc_launch.slurm import default_partition_gpus

    assert default_partition_gpus(SINFO_CPU_DEFAULT) == ("cpu", False, ["gpu"])
    assert default_partition_gpus("debug* gpu:4,mps:100\nlong (null)\n") == (
        "debug", True, ["debug"])
    assert default_partition_gpus("") == (None, False, [])


def test_gpus_without_a_partition_on_a_cpu_default_is_an_error(tmp_path, capsys, monkeypatch):
    """Where sinfo can tell; with no sinfo (a laptop) the dry run goes on silently."""
    from pytc_launch import slurm

    monkeypatch.chdir(tmp_path)
    config = tmp_path / "train.toml"
    config.write_text("[train]\nmax_steps = 10\n")
    argv = ["train", str(config), "--dir", str(tmp_path / "run"), "--dry-run", "--gpus", "1"]
    real = slurm.check_gpu_partition
    monkeypatch.setattr(slurm, "check_gpu_partition", lambda gpus, partition: real(
        gpus, partition, sinfo_output=SINFO_CPU_DEFAULT))
    monkeypatch.setattr("pytc_launch.launch.check_gpu_partition", slurm.check_gpu_partition)
    err = one_line_error(*run(argv, capsys))
    assert err == ("pytc-launch: error: 1 GPU(s) per node asked for, but no partition is given "
                   "and the cluster's default partition 'cpu' has no GPUs (pass --partition gpu "
                   "(or partition = ... in [launch]))\n")
    code, out, err = run([*argv, "--partition", "gpu"], capsys)
    assert code == 0, err
    monkeypatch.setattr("pytc_launch.launch.check_gpu_partition", real)
    monkeypatch.setenv("PATH", str(tmp_path))  # no sinfo: nothing to check
    code, out, err = run(argv, capsys)
    assert code == 0, err
