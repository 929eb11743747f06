"""The annotated example configs in examples/ resolve through each command's real config
schema (a misspelled key anywhere fails), agree with the bundled data's split, and the
custom-architecture example registers, builds and (slow) trains and predicts."""

from __future__ import annotations

import importlib.util
import re
import sys
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import tomli_w

from pytc_core.config import STAGE_TABLES, load_toml, resolve_config
from pytc_core.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
DATA = EXAMPLES / "data" / "flyem_medulla_250.h5"
TRAIN_BOX = (0, 0, 0, 140, 250, 250)      # the README's split of the bundled volume
VAL_BOX = (140, 0, 0, 175, 250, 250)
TEST_BOX = (175, 0, 0, 250, 250, 250)


def _train(path: Path) -> Any:
    from pytc_train.config import TrainConfig

    return resolve_config(TrainConfig, path)  # as pytc-train --config does


def _infer(path: Path) -> Any:
    from pytc_infer.infer import InferConfig

    return resolve_config(InferConfig, path, section="infer")


def _decode(path: Path) -> Any:
    from pytc_decode.decode import DecodeConfig

    return resolve_config(DecodeConfig, path, section="decode")


def _eval(path: Path) -> Any:
    from pytc_eval.eval import EvalConfig

    return resolve_config(EvalConfig, path, section="eval")


def _sweep(path: Path) -> Any:
    """As pytc-launch sweep does: every run's config against pytc-train's schema, the
    [launch] table against the Slurm options."""
    from pytc_launch.launch import plan_sweep
    from pytc_launch.sbatch import SlurmOptions

    _, launch_table, plan = plan_sweep(path)
    return plan, resolve_config(SlurmOptions, None, launch_table)


def _pipeline(path: Path) -> Any:
    return _train(path), _infer(path), _decode(path), _eval(path)


RESOLVERS: dict[str, Callable[[Path], Any]] = {
    "train.toml": _train, "infer.toml": _infer, "decode.toml": _decode, "eval.toml": _eval,
    "sweep.toml": _sweep, "pipeline.toml": _pipeline,
}


def test_every_example_config_is_checked():
    assert sorted(p.name for p in EXAMPLES.glob("*.toml")) == sorted(RESOLVERS)


@pytest.mark.parametrize("name", sorted(RESOLVERS))
def test_example_holds_only_stage_tables_and_resolves(name):
    assert set(load_toml(EXAMPLES / name)) <= STAGE_TABLES
    RESOLVERS[name](EXAMPLES / name)


def _tables(tree: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for key, value in tree.items():
        if isinstance(value, dict):
            out.append((*prefix, key))
            out += _tables(value, (*prefix, key))
    return out


@pytest.mark.parametrize("name", sorted(RESOLVERS))
def test_a_misspelled_key_in_any_table_of_an_example_is_refused(name, tmp_path):
    doc = load_toml(EXAMPLES / name)
    tables = _tables(doc)
    assert tables
    for table in tables:
        bad = tomllib.loads(tomli_w.dumps(doc))
        node = bad
        for part in table:
            node = node[part]
        node["thresold"] = [1]  # a list: also a bad [sweep] key
        path = tmp_path / name
        path.write_text(tomli_w.dumps(bad))
        with pytest.raises(UserError, match="thresold"):
            RESOLVERS[name](path)


def test_train_example_uses_the_bundled_split():
    from pytc_core import open_volume
    from pytc_core.models import validate_input_size

    cfg = _train(EXAMPLES / "train.toml")
    assert cfg.data.raw == f"examples/data/{DATA.name}:raw"
    assert cfg.data.labels == f"examples/data/{DATA.name}:labels"
    assert (cfg.data.bbox, cfg.data.val_bbox) == (TRAIN_BOX, VAL_BOX)
    assert cfg.model.architecture == "mednext" and cfg.model.deep_supervision
    assert cfg.aug.preset == "realistic" and cfg.aug.misalignment.prob == 0.15
    validate_input_size(cfg.model, cfg.data.patch_size)
    assert len(cfg.data.offsets) == cfg.model.out_channels == 3
    raw = open_volume(str(ROOT / cfg.data.raw))
    assert tuple(raw.spatial_shape) == (250, 250, 250)


def test_infer_decode_eval_examples_chain_on_the_test_region():
    train = _train(EXAMPLES / "train.toml")
    infer = _infer(EXAMPLES / "infer.toml")
    assert infer.checkpoint == f"{train.train.run_dir}/checkpoints/best.ckpt"
    assert infer.input == train.data.raw and infer.bbox == TEST_BOX
    decode = _decode(EXAMPLES / "decode.toml")
    assert decode.method == "ws" and decode.ws.thresholds == (0.3, 0.5, 0.7)
    evaluation = _eval(EXAMPLES / "eval.toml")
    assert evaluation.skeletons == "kimimaro" and evaluation.block_size == (128, 256, 256)
    assert evaluation.kimimaro.dust_threshold == 1000


def test_decode_example_options_pass_pytc_decodes_checks(tmp_path):
    from pytc_core import open_volume
    from pytc_decode.decode import check_config

    aff = tmp_path / "aff.npy"
    np.save(aff, np.full((3, 4, 8, 8), 0.9, np.float32))
    check_config(_decode(EXAMPLES / "decode.toml"), open_volume(str(aff)))


def test_sweep_example_expands_and_dry_runs(tmp_path, capsys):
    from pytc_core.cli import run_entry_point
    from pytc_launch.cli import app

    plan, slurm = _sweep(EXAMPLES / "sweep.toml")
    assert len(plan.runs) == plan.grid_size == 8
    assert {(r.params["optim.lr"], r.params["train.seed"]) for r in plan.runs} == \
        {(1e-3, 1), (3e-4, 2)}
    assert (slurm.gpus, slurm.time, slurm.max_parallel) == (1, "04:00:00", 4)
    out = tmp_path / "sweep"
    assert run_entry_point("pytc-launch", app, ["sweep", str(EXAMPLES / "sweep.toml"),
                                                "--dir", str(out), "--dry-run"]) == 0
    captured = capsys.readouterr()
    assert "#SBATCH --array=0-7%4" in captured.out and "8 runs" in captured.err
    assert not out.exists()  # a dry run writes nothing


# --- adding an architecture (README "Adding an architecture", examples/custom_architecture.py)

@pytest.fixture(scope="module")
def custom_architecture() -> Iterator[ModuleType]:
    """The example imported (registering ``tiny_unet``), unregistered afterwards so the other
    tests see only the built-in architectures."""
    from pytc_core.models import registry

    name = "pytc_example_custom_architecture"
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / "custom_architecture.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        registry._REGISTRY.pop("tiny_unet", None)
        sys.modules.pop(name, None)


def test_custom_architecture_registers_and_builds(custom_architecture):
    import torch

    from pytc_core.models import build_model, list_architectures

    assert "tiny_unet" in list_architectures()
    model = build_model({"architecture": "tiny_unet", "filters": [4], "out_channels": 3}).eval()
    with torch.no_grad():
        y = model(torch.rand(1, 1, 4, 8, 6))
    assert y.shape == (1, 3, 4, 8, 6)
    with pytest.raises(UserError, match="multiples of 2"):
        model(torch.rand(1, 1, 4, 8, 7))


def test_readme_architecture_snippet_is_the_example():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Adding an architecture", 1)[1].split("\n## ", 1)[0]
    snippets = re.findall(r"```python\n(.*?)```", section, re.S)
    assert snippets
    example = (EXAMPLES / "custom_architecture.py").read_text()
    for line in snippets[0].splitlines():
        assert line.strip() in example, line


@pytest.mark.slow
def test_custom_architecture_trains_and_predicts(custom_architecture, tmp_path, capsys):
    from pytc_core import open_volume

    run = tmp_path / "tiny"
    assert custom_architecture.main([
        "train", "--arch", "tiny_unet", "--raw", f"{DATA}:raw", "--labels", f"{DATA}:labels",
        "--bbox", "0,0,0,140,128,128", "--val-bbox", "140,0,0,175,64,64", "--max-steps", "2",
        "--aug", "none", "--run-dir", str(run), "--set", "train.val_every=1",
        "data.val_max_patches=1", "model.filters=[4]"]) == 0
    ckpt = capsys.readouterr().out.strip()
    assert ckpt == str(run / "checkpoints" / "best.ckpt")
    aff = tmp_path / "aff"
    assert custom_architecture.main([
        "infer", "-c", ckpt, "-i", f"{DATA}:raw", "--bbox", "175,0,0,207,64,64",
        "-o", str(aff)]) == 0
    assert capsys.readouterr().out.strip() == str(aff)
    pred = open_volume(str(aff)).read()
    assert pred.shape == (3, 32, 64, 64)
    assert 0.0 <= pred.min() and pred.max() <= 1.0
