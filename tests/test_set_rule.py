"""One rule for ``--set`` in every command: the stage's own table prefix or none
(``--set infer.overlap=0.5`` is ``--set overlap=0.5``), a bare key where one table holds it,
and an error about a key from ``--config`` names the file."""

from __future__ import annotations

import tomllib

import numpy as np
import pytest

from pytc_core import create_volume
from pytc_core.cli import run_entry_point


def run(prog, app, argv, capsys):
    code = run_entry_point(prog, app, [str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def resolved(output) -> dict:
    """The resolved config written beside an output (pytc_config.toml)."""
    return tomllib.loads((output / "pytc_config.toml").read_text())


def one_line_error(prog, code, out, err) -> str:
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert err.startswith(f"{prog}: error: ")
    return err.removeprefix(f"{prog}: error: ").rstrip("\n")


@pytest.fixture
def volumes(tmp_path):
    labels = np.zeros((4, 8, 8), np.uint32)
    labels[:, :, :4], labels[:, :, 4:] = 1, 2
    aff = np.full((3, 4, 8, 8), 0.6, np.float32)
    aff[2, :, :, 4] = 0.3  # the x edges between the halves
    create_volume(str(tmp_path / "gt"), labels.shape, labels.dtype).write(labels)
    create_volume(str(tmp_path / "aff"), aff.shape, aff.dtype).write(aff)
    return tmp_path


def test_pytc_decode(volumes, capsys):
    from pytc_decode.cli import app

    aff = volumes / "aff"
    code, out, err = run("pytc-decode", app, [aff, "-o", volumes / "a", "--set",
                                              "decode.agglomeration_threshold=0.3", "decode.threshold=0.2"],
                         capsys)
    assert code == 0, err
    code, out, err = run("pytc-decode", app, [aff, "-o", volumes / "b", "--set",
                                              "agglomeration_threshold=0.3", "threshold=0.2"],
                         capsys)
    assert code == 0, err
    a, b = resolved(volumes / "a"), resolved(volumes / "b")
    assert a == b and a["cc"]["threshold"] == 0.2 and a["ws"]["agglomeration_threshold"] == [0.3]
    config = volumes / "run.toml"
    config.write_text("[decode]\nagglomeration_treshold = 0.3\n")
    err = one_line_error("pytc-decode", *run("pytc-decode", app, [aff, "-o", volumes / "c",
                                                                  "--config", config], capsys))
    assert err.startswith(f"{config}: unknown config key 'agglomeration_treshold' (did you "
                          "mean 'agglomeration_threshold'? valid keys: ")
    err = one_line_error("pytc-decode", *run("pytc-decode", app, [
        aff, "-o", volumes / "c", "--set", "eval.merge_threshold=2"], capsys))
    assert err == ("config key 'eval.merge_threshold' belongs to the [eval] table, which this "
                   "command does not read (it reads [decode]; give 'eval.merge_threshold' to the "
                   "command that reads [eval])")
    assert not (volumes / "c").exists()


def test_pytc_eval(volumes, capsys):
    from pytc_eval.cli import app

    base = [volumes / "gt", "--gt", volumes / "gt", "--skeletons", "kimimaro", "--json"]
    errors = [one_line_error("pytc-eval", *run("pytc-eval", app, [*base, "--set", key], capsys))
              for key in ("eval.kimimaro.dust_threshold='many'", "kimimaro.dust_threshold='many'",
                          "dust_threshold='many'")]
    assert errors[0] == errors[1] == errors[2]
    assert errors[0].startswith("config key 'kimimaro.dust_threshold' must be int, got 'many'")
    code, out, err = run("pytc-eval", app, [*base, "--set", "eval.skeletons=none"], capsys)
    assert code == 0 and '"voi_split": 0.0' in out, err
    config = volumes / "eval.toml"
    config.write_text("[eval.kimimaro]\ndust_treshold = 5\n")
    err = one_line_error("pytc-eval", *run("pytc-eval", app, [*base, "--config", config], capsys))
    assert err.startswith(f"{config}: unknown config key 'kimimaro.dust_treshold' (did you mean "
                          "'kimimaro.dust_threshold'?")


def test_pytc_train(tmp_path, capsys):
    from pytc_train.cli import app

    # no data: the config resolves (or not) before anything else is looked at
    errors = [one_line_error("pytc-train", *run("pytc-train", app, ["--set", key], capsys))
              for key in ("train.max_steps=0", "max_steps=0")]
    assert errors[0] == errors[1] == ("train.max_steps must be >= 1, got 0 (give a positive "
                                      "step count)")
    err = one_line_error("pytc-train", *run("pytc-train", app, ["--set", "lr=fast"], capsys))
    assert err.startswith("config key 'optim.lr' must be float, got 'fast'")
    config = tmp_path / "train.toml"
    config.write_text("[train]\nmax_step = 3\n")
    err = one_line_error("pytc-train", *run("pytc-train", app, ["--config", config], capsys))
    assert err.startswith(f"{config}: unknown config key 'train.max_step' (did you mean "
                          "'train.max_steps'?")


def test_pytc_launch(tmp_path, capsys):
    from pytc_launch.cli import app

    config = tmp_path / "t.toml"
    config.write_text("[train]\nmax_steps = 3\n")
    scripts = []
    for key in ("launch.partition=gpu", "partition=gpu"):
        code, out, err = run("pytc-launch", app, ["train", config, "--dir", tmp_path / "run",
                                                  "--dry-run", "--set", key], capsys)
        assert code == 0, err
        scripts.append(out)
    assert scripts[0] == scripts[1] and "#SBATCH --partition=gpu\n" in scripts[0]
    launch = tmp_path / "launch.toml"
    launch.write_text("[launch]\npartitoin = 'gpu'\n")
    err = one_line_error("pytc-launch", *run("pytc-launch", app, [
        "train", config, "--dir", tmp_path / "run", "--dry-run", "--config", launch], capsys))
    assert err.startswith(f"{launch}: unknown config key 'partitoin' (did you mean 'partition'?")


def test_pytc_infer(tmp_path, capsys):
    import torch

    from pytc_core.models import build_model, save_checkpoint
    from pytc_infer.cli import app

    torch.manual_seed(0)
    model = {"architecture": "monai_unet", "in_channels": 1, "out_channels": 3,
             "filters": [2, 4], "num_res_units": 0}
    ckpt = save_checkpoint(tmp_path / "tiny.ckpt", build_model(model),
                           {"model": model, "data": {"patch_size": [16, 16, 16]}})
    raw = np.random.default_rng(0).integers(0, 255, (16, 16, 16), dtype=np.uint8)
    create_volume(str(tmp_path / "raw"), raw.shape, raw.dtype).write(raw)
    base = ["-c", ckpt, "-i", tmp_path / "raw"]
    for name, key in (("a", "infer.overlap=0.25"), ("b", "overlap=0.25")):
        code, out, err = run("pytc-infer", app, [*base, "-o", tmp_path / name, "--set", key],
                             capsys)
        assert code == 0, err
    a, b = resolved(tmp_path / "a"), resolved(tmp_path / "b")
    assert a.pop("output").endswith("/a") and b.pop("output").endswith("/b")
    assert a == b and a["overlap"] == 0.25
    config = tmp_path / "infer.toml"
    config.write_text("[infer]\noverlapp = 0.5\n")
    err = one_line_error("pytc-infer", *run("pytc-infer", app, [
        *base, "-o", tmp_path / "c", "--config", config], capsys))
    assert err.startswith(f"{config}: unknown config key 'overlapp' (did you mean 'overlap'?")
    assert not (tmp_path / "c").exists()
