"""`--config FILE` < flags < `--set key=value` behaves the same in every stage."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest

from pytc_core import create_volume, open_volume
from pytc_core.cli import run_entry_point
from pytc_core.config import parse_set_options
from pytc_core.errors import UserError
from pytc_decode.cli import app as decode_app
from pytc_eval.cli import app as eval_app


@pytest.fixture
def volumes(tmp_path):
    labels = np.zeros((4, 8, 8), np.uint32)
    labels[:, :, :4], labels[:, :, 4:] = 1, 2
    aff = np.full((3, 4, 8, 8), 0.6, np.float32)
    aff[2, :, :, 4] = 0.3  # the x edges between the halves
    create_volume(str(tmp_path / "gt"), labels.shape, labels.dtype).write(labels)
    create_volume(str(tmp_path / "aff"), aff.shape, aff.dtype).write(aff)
    return tmp_path


def test_file_then_flags_then_set(volumes, capsys):
    config = volumes / "run.toml"
    config.write_text("[decode]\nthreshold = 0.7\nmin_size = 0\n")
    seg = str(volumes / "seg")
    # the file alone: threshold 0.7 cuts every edge → all background
    assert run_entry_point("pytc-decode", decode_app, [str(volumes / "aff"), "-o", seg,
                                                       "--config", str(config)]) == 0
    assert open_volume(seg).read().max() == 0
    # a flag overrides the file: 0.5 keeps the 0.6 edges → two halves
    assert run_entry_point("pytc-decode", decode_app, [str(volumes / "aff"), "-o", seg, "--config",
                                                       str(config), "--threshold", "0.5",
                                                       "--overwrite"]) == 0
    assert open_volume(seg).read().max() == 2
    # --set overrides both: 0.2 joins the halves
    assert run_entry_point("pytc-decode", decode_app, [str(volumes / "aff"), "-o", seg, "--config",
                                                       str(config), "--threshold", "0.5", "--set",
                                                       "threshold=0.2", "--overwrite"]) == 0
    assert open_volume(seg).read().max() == 1
    resolved = tomllib.loads((volumes / "seg" / "pytc_config.toml").read_text())
    assert resolved["cc"]["threshold"] == 0.2  # the flat key sets [decode.cc]
    capsys.readouterr()


@pytest.mark.parametrize(("prog", "app", "extra", "key"), [
    ("pytc-decode", decode_app, [], "threshhold=0.5"),
    ("pytc-eval", eval_app, ["--gt", "GT"], "merge_treshold=2"),
])
def test_unknown_set_key_is_one_line_exit_2(volumes, capsys, prog, app, extra, key):
    target = str(volumes / ("aff" if prog == "pytc-decode" else "gt"))
    argv = [target, *[str(volumes / "gt") if a == "GT" else a for a in extra], "--set", key]
    assert run_entry_point(prog, app, argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"{prog}: error: unknown config key")
    assert "did you mean" in err


def test_eval_set_reaches_nested_tables(volumes, capsys):
    argv = [str(volumes / "gt"), "--gt", str(volumes / "gt"), "--skeletons", "kimimaro",
            "--set", "kimimaro.dust_threshold='many'", "--json"]
    assert run_entry_point("pytc-eval", eval_app, argv) == 2
    assert "'kimimaro.dust_threshold' must be" in capsys.readouterr().err


def test_parse_set_options():
    assert parse_set_options(["a.b=1", " c = [1, 2] "]) == {"a.b": "1", "c": "[1, 2]"}
    with pytest.raises(UserError, match="--set key=value"):
        parse_set_options(["novalue"])


PIPELINE = Path(__file__).resolve().parents[1] / "examples" / "pipeline.toml"


def test_the_example_pipeline_config_is_valid_for_every_stage():
    from pytc_core.config import STAGE_TABLES, load_toml, resolve_config
    from pytc_core.models.config import ModelConfig
    from pytc_decode.decode import DecodeConfig
    from pytc_eval.eval import EvalConfig

    assert set(load_toml(PIPELINE)) <= STAGE_TABLES
    decode = resolve_config(DecodeConfig, PIPELINE, section="decode")
    assert decode.cc.threshold == 0.7 and decode.block_size == (128, 128, 128)
    evaluation = resolve_config(EvalConfig, PIPELINE, section="eval")
    assert evaluation.skeletons == "kimimaro" and evaluation.kimimaro.dust_threshold == 1000
    assert evaluation.block_size == (256, 256, 256)
    assert evaluation.neuroglancer.local_server == "http://localhost:8080"
    model = resolve_config(ModelConfig, PIPELINE, section="model")
    assert model.architecture == "mednext" and model.out_channels == 3
    from pytc_train.config import TrainConfig

    train = resolve_config(TrainConfig, PIPELINE)  # its tables: model, data, optim, train
    assert train.model == model and train.train.max_steps == 1000
    assert train.data.bbox == (0, 0, 0, 140, 250, 250) and train.data.patch_size == (32, 64, 64)
    assert train.optim.warmup_steps == 50
    from pytc_infer.infer import InferConfig

    infer = resolve_config(InferConfig, PIPELINE, section="infer")
    assert infer.tta == "flips" and infer.bbox == (175, 0, 0, 250, 250, 250)
    assert infer.checkpoint == f"{train.train.run_dir}/checkpoints/best.ckpt"


def test_each_command_runs_with_the_pipeline_config(volumes, capsys):
    seg = str(volumes / "seg")
    assert run_entry_point("pytc-decode", decode_app, [str(volumes / "aff"), "-o", seg,
                                                       "--config", str(PIPELINE),
                                                       "--set", "min_size=0"]) == 0
    capsys.readouterr()
    assert run_entry_point("pytc-eval", eval_app, [seg, "--gt", str(volumes / "gt"), "--config",
                                                   str(PIPELINE), "--set", "skeletons=none",
                                                   "--json"]) == 0
    assert '"voi_split"' in capsys.readouterr().out
    # pytc-train reads its tables from the same file (and ignores [decode]/[eval]): it gets as
    # far as building the model, where the --set architecture is refused
    from pytc_train.cli import app as train_app

    assert run_entry_point("pytc-train", train_app, ["--config", str(PIPELINE), "--set",
                                                     "model.architecture='nonet'"]) == 2
    err = capsys.readouterr().err
    assert "unknown architecture 'nonet'" in err and "table" not in err
    # pytc-infer takes its checkpoint and input from [infer]: it gets as far as opening them
    from pytc_infer.cli import app as infer_app

    missing = str(volumes / "none.ckpt")
    assert run_entry_point("pytc-infer", infer_app, ["--config", str(PIPELINE), "--set",
                                                     f"checkpoint='{missing}'"]) == 2
    assert f"checkpoint not found: {missing}" in capsys.readouterr().err
