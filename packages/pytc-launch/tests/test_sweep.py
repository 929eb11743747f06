"""Sweep expansion: grids, zipped lists, seeded random subsets, schema checks."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from pytc_core.errors import UserError
from pytc_launch.sweep import expand_sweep, schema_paths, split_launch_tables


@dataclass(frozen=True)
class Model:
    architecture: str = "mednext"
    mednext_size: str = "S"
    mednext_kernel_size: int = 3


@dataclass(frozen=True)
class Optim:
    lr: float = 1e-3
    weight_decay: float = 0.0


@dataclass(frozen=True)
class Train:
    max_steps: int = 100
    seed: int = 0


@dataclass(frozen=True)
class Schema:
    model: Model = field(default_factory=Model)
    optim: Optim = field(default_factory=Optim)
    train: Train = field(default_factory=Train)


BASE = {"model": {"architecture": "mednext"}, "train": {"max_steps": 50}}


def test_schema_paths_lists_tables_and_leaves():
    paths = schema_paths(Schema)
    assert "model" in paths and "model.mednext_kernel_size" in paths and "optim.lr" in paths


def test_grid_is_every_combination_in_order():
    plan = expand_sweep(BASE, {"model.mednext_kernel_size": [3, 5],
                               "model.mednext_size": ["S", "B", "M"]}, Schema)
    assert plan.grid_size == 6 and len(plan.runs) == 6
    assert [r.params for r in plan.runs[:3]] == [
        {"model.mednext_kernel_size": 3, "model.mednext_size": "S"},
        {"model.mednext_kernel_size": 3, "model.mednext_size": "B"},
        {"model.mednext_kernel_size": 3, "model.mednext_size": "M"}]
    run = plan.runs[5]
    assert run.config == {"model": {"architecture": "mednext", "mednext_kernel_size": 5,
                                    "mednext_size": "M"}, "train": {"max_steps": 50}}
    assert BASE == {"model": {"architecture": "mednext"}, "train": {"max_steps": 50}}  # untouched


def test_nested_sweep_tables_mean_the_same_keys():
    plan = expand_sweep(BASE, {"optim": {"lr": [1e-3, 1e-4]}}, Schema)
    assert [r.config["optim"]["lr"] for r in plan.runs] == [1e-3, 1e-4]


def test_zip_pairs_lists_and_crosses_the_grid():
    plan = expand_sweep(BASE, {"model.mednext_kernel_size": [3, 5],
                               "zip": {"optim.lr": [1e-3, 1e-4, 1e-5], "train.seed": [1, 2, 3]}},
                        Schema)
    assert len(plan.runs) == 6
    pairs = {(r.params["optim.lr"], r.params["train.seed"]) for r in plan.runs}
    assert pairs == {(1e-3, 1), (1e-4, 2), (1e-5, 3)}


def test_random_subset_is_seeded_and_in_grid_order():
    sweep = {"model.mednext_kernel_size": [3, 5], "optim.lr": [1e-2, 1e-3, 1e-4, 1e-5]}
    a = expand_sweep(BASE, sweep, Schema, max_runs=3, seed=7)
    b = expand_sweep(BASE, {**sweep, "random": {"max_runs": 3, "seed": 7}}, Schema)
    assert a.grid_size == 8 and len(a.runs) == 3
    assert [r.params for r in a.runs] == [r.params for r in b.runs]
    full = [r.params for r in expand_sweep(BASE, sweep, Schema).runs]
    positions = [full.index(r.params) for r in a.runs]
    assert positions == sorted(positions) and len(set(positions)) == 3
    assert [r.index for r in a.runs] == [0, 1, 2]
    assert len(expand_sweep(BASE, sweep, Schema, max_runs=100).runs) == 8


@pytest.mark.parametrize(("sweep", "message"), [
    ({"model.mednext_kernal_size": [3, 5]},
     "sweep key 'model.mednext_kernal_size' is not in the train config schema "
     "(did you mean 'model.mednext_kernel_size'?"),
    ({"model.mednext_size": []}, "sweep key 'model.mednext_size' has an empty list of values"),
    ({"model.mednext_size": "S"}, "sweep key 'model.mednext_size' must be a list of values"),
    ({"zip": {"optim.lr": [1e-3, 1e-4], "train.seed": [1, 2, 3]}},
     "[sweep.zip] lists have unequal lengths ('optim.lr' has 2, 'train.seed' has 3)"),
    ({"zip": {"optim.lr": [1e-3], "optim.weight_decay": [0.0, 1e-4]}},
     "[sweep.zip] lists have unequal lengths"),
    ({"optim.lr": [1e-3], "zip": {"optim.lr": [1e-3]}}, "is both in [sweep] and [sweep.zip]"),
    ({}, "the [sweep] table has no keys to sweep"),
    ({"model.mednext_kernel_size": ["five"]}, "run 0 (model.mednext_kernel_size='five'): "
     "config key 'model.mednext_kernel_size' must be int"),
    ({"random": {"max_run": 2}, "optim.lr": [1e-3]}, "unknown key 'sweep.random.max_run'"),
])
def test_bad_sweeps_are_user_errors(sweep, message):
    with pytest.raises(UserError) as info:
        expand_sweep(BASE, sweep, Schema)
    assert message in str(info.value)


def test_without_a_schema_keys_are_not_checked():
    plan = expand_sweep(BASE, {"anything.goes": [1, 2]}, None)
    assert [r.config["anything"]["goes"] for r in plan.runs] == [1, 2]


def test_split_launch_tables():
    config, sweep, launch = split_launch_tables(
        {"model": {"a": 1}, "sweep": {"model.a": [1, 2]}, "launch": {"time": "1:00:00"}})
    assert config == {"model": {"a": 1}} and sweep == {"model.a": [1, 2]}
    assert launch == {"time": "1:00:00"}
