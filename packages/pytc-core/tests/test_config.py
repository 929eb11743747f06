from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from typing import Literal

import pytest

from pytc_core import UserError, save_config_next_to
from pytc_core.config import config_to_toml, resolve_config


@dataclass(frozen=True)
class ModelSection:
    architecture: str = "mednext"
    size: Literal["S", "B", "M", "L"] = "S"
    block_counts: tuple[int, ...] = (2, 2)


@dataclass(frozen=True)
class RunConfig:
    threshold: float = 0.5
    min_size: int = 0
    block_size: tuple[int, int, int] | None = None
    verbose: bool = False
    model: ModelSection = field(default_factory=ModelSection)


def write(tmp_path, text):
    path = tmp_path / "run.toml"
    path.write_text(text)
    return path


def test_defaults_then_file_then_command_line(tmp_path):
    path = write(tmp_path, 'threshold = 0.3\nmin_size = 10\n[model]\nsize = "M"\n')
    cfg = resolve_config(RunConfig, path, {"min_size": 20, "model.architecture": "unet", "threshold": None})
    assert cfg == RunConfig(threshold=0.3, min_size=20, model=ModelSection("unet", "M"))


def test_section_of_a_shared_file(tmp_path):
    path = write(tmp_path, "[decode]\nthreshold = 0.9\n[eval]\nother = 1\n")
    assert resolve_config(RunConfig, path, section="decode").threshold == 0.9


def test_int_promotes_to_float_and_lists_to_tuples(tmp_path):
    path = write(tmp_path, "threshold = 1\nblock_size = [64, 64, 32]\n")
    cfg = resolve_config(RunConfig, path)
    assert cfg.threshold == 1.0 and isinstance(cfg.threshold, float)
    assert cfg.block_size == (64, 64, 32)


def test_text_overrides_parse_as_toml_literals():
    cfg = resolve_config(RunConfig, None, text_overrides={"block_size": "[8, 8, 8]", "verbose": "true",
                                                          "model.architecture": "segresnet"})
    assert cfg.block_size == (8, 8, 8) and cfg.verbose is True and cfg.model.architecture == "segresnet"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("treshold = 0.4\n", r"unknown config key 'treshold' \(did you mean 'threshold'\? valid keys: threshold, min_size"),
        ("[model]\narchitecure = 'x'\n", r"unknown config key 'model.architecure' \(did you mean 'model.architecture'"),
        ("min_size = 1.5\n", r"'min_size' must be int, got 1.5"),
        ("threshold = 'high'\n", r"'threshold' must be float"),
        ("verbose = 1\n", r"'verbose' must be bool"),
        ("block_size = [1, 2]\n", r"'block_size' must be"),
        ("[model]\nsize = 'XL'\n", r"'model.size' must be one of S, B, M, L"),
        ("model = 3\n", r"'model' must be a table"),
        ("threshold = 0.5\nmin_size = \n", r"TOML syntax error.*line 2"),
    ],
)
def test_bad_config_is_one_clear_user_error(tmp_path, text, message):
    with pytest.raises(UserError, match=message):
        resolve_config(RunConfig, write(tmp_path, text))


def test_missing_config_file(tmp_path):
    with pytest.raises(UserError, match="config file not found"):
        resolve_config(RunConfig, tmp_path / "nope.toml")


def test_resolved_config_round_trips_through_toml(tmp_path):
    cfg = RunConfig(threshold=0.25, block_size=(4, 5, 6), model=ModelSection(size="L"))
    text = config_to_toml(cfg)
    assert resolve_config(RunConfig, write(tmp_path, text)) == cfg
    written = save_config_next_to(str(tmp_path / "out_layer"), cfg, command="pytc-test")
    assert written == tmp_path / "out_layer" / "pytc_config.toml"
    assert tomllib.loads(written.read_text())["model"]["size"] == "L"


@dataclass(frozen=True)
class EvalLike:
    block_size: tuple[int, int, int] = (256, 256, 256)
    merge_threshold: int = 1


def test_pipeline_file_each_stage_reads_its_table(tmp_path):
    only_other = write(tmp_path, "[decode]\nthreshold = 0.7\n[model]\nsize = 'M'\n")
    assert resolve_config(EvalLike, only_other, section="eval") == EvalLike()
    both = write(tmp_path, "[decode]\nthreshold = 0.7\n[eval]\nblock_size = 64\n"
                 "[train]\nsteps = 3\n")
    assert resolve_config(EvalLike, both, section="eval").block_size == (64, 64, 64)
    # a stage whose schema holds a shared table reads it and ignores the other stages' tables
    cfg = resolve_config(RunConfig, write(tmp_path, "threshold = 0.2\n[model]\nsize = 'B'\n"
                                          "[eval]\nmerge_threshold = 2\n"))
    assert cfg.model.size == "B" and cfg.threshold == 0.2


@pytest.mark.parametrize(("text", "match"), [
    ("[eval]\nblock_size = 64\n[evl]\nx = 1\n", r"unknown table \[evl\] \(did you mean \[eval\]"),
    ("threshold = 1\n[eval]\nblock_size = 64\n", "top-level key 'threshold' belongs to no"),
    ("[decode]\nthreshold = 0.7\n[modle]\nsize = 'M'\n", r"unknown table \[modle\] \(did you "
                                                         r"mean \[model\]"),
])
def test_unknown_top_level_table_is_an_error(tmp_path, text, match):
    with pytest.raises(UserError, match=match):
        resolve_config(EvalLike, write(tmp_path, text), section="eval")


def test_one_number_for_every_axis(tmp_path):
    assert resolve_config(RunConfig, None, {"block_size": 32}).block_size == (32, 32, 32)
    assert resolve_config(RunConfig, None, text_overrides={"block_size": "16"}).block_size == \
        (16, 16, 16)
    with pytest.raises(UserError, match="block_size"):
        resolve_config(RunConfig, None, {"block_size": True})


@dataclass(frozen=True)
class Named:
    name: str = "a"
    source: str | None = "x"


def test_set_strings_quoted_or_not():
    assert resolve_config(Named, text_overrides={"name": "'b c'"}).name == "b c"
    assert resolve_config(Named, text_overrides={"name": "3"}).name == "3"
    assert resolve_config(Named, text_overrides={"source": '"http://h:1"'}).source == "http://h:1"
    assert resolve_config(Named, text_overrides={"source": "none"}).source is None


@dataclass(frozen=True)
class Loop:
    max_steps: int = 100
    seed: int = 0


@dataclass(frozen=True)
class Aug:
    preset: str = "light"
    seed: int = 1


@dataclass(frozen=True)
class TrainLike:
    model: ModelSection = field(default_factory=ModelSection)
    train: Loop = field(default_factory=Loop)
    aug: Aug = field(default_factory=Aug)


def test_set_keys_take_the_stage_table_or_none(tmp_path):
    # a stage whose config is its table: with the table's prefix or without, the same config
    with_prefix = resolve_config(RunConfig, None, section="decode",
                                 text_overrides={"decode.threshold": "0.3",
                                                 "decode.model.size": "M"})
    bare = resolve_config(RunConfig, None, section="decode",
                          text_overrides={"threshold": "0.3", "model.size": "M"})
    assert with_prefix == bare == RunConfig(threshold=0.3, model=ModelSection(size="M"))
    # a bare key that one table holds: max_steps is train's; preset aug's; size model's
    cfg = resolve_config(TrainLike, None, text_overrides={"max_steps": "20", "preset": "'heavy'",
                                                          "size": "L"})
    assert cfg == resolve_config(TrainLike, None, text_overrides={
        "train.max_steps": "20", "aug.preset": "heavy", "model.size": "L"})
    assert (cfg.train.max_steps, cfg.aug.preset, cfg.model.size) == (20, "heavy", "L")


@pytest.mark.parametrize(("schema", "section", "key", "message"), [
    (TrainLike, None, "seed", r"config key 'seed' is in several tables: aug.seed, train.seed "
                              r"\(write it with its table, e.g. --set aug.seed=...\)"),
    (RunConfig, "decode", "eval.merge_threshold",
     r"config key 'eval.merge_threshold' belongs to the \[eval\] table, which this command does "
     r"not read \(it reads \[decode\]; give 'eval.merge_threshold' to the command that reads "
     r"\[eval\]\)"),
    (RunConfig, "decode", "decode.treshold",
     r"^unknown config key 'treshold' \(did you mean 'threshold'\?"),
])
def test_set_keys_that_name_no_one_key(schema, section, key, message):
    with pytest.raises(UserError, match=message):
        resolve_config(schema, None, section=section, text_overrides={key: "1"})


def test_an_error_about_a_key_from_the_file_names_the_file(tmp_path):
    path = write(tmp_path, "[decode]\ntreshold = 0.4\n")
    with pytest.raises(UserError) as exc:
        resolve_config(RunConfig, path, section="decode")
    assert str(exc.value) == (f"{path}: unknown config key 'treshold' (did you mean "
                              "'threshold'? valid keys: threshold, min_size, block_size, "
                              "verbose, model)")
    path = write(tmp_path, "[model]\nsize = 'XL'\n")
    with pytest.raises(UserError, match=f"^{path}: config key 'model.size' must be one of"):
        resolve_config(RunConfig, path)
    # the same key given with --set is the command line's, not the file's
    with pytest.raises(UserError, match="^config key 'model.size' must be one of S, B, M, L, "
                                        "got 'XXL'"):
        resolve_config(RunConfig, path, text_overrides={"model.size": "XXL"})
    # a key the command line fixes is no error of the file
    assert resolve_config(RunConfig, path, text_overrides={"size": "B"}).model.size == "B"
