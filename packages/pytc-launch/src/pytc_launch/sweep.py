"""Sweeps: a pytc-train config plus a ``[sweep]`` table → N run configs.

::

    [model]
    architecture = "mednext"
    [sweep]                                  # every combination (a grid)
    "model.mednext_kernel_size" = [3, 5]
    "model.mednext_size" = ["S", "B", "M"]
    [sweep.zip]                              # paired lists: one more grid axis
    "optim.lr" = [1e-3, 3e-4]
    "train.seed" = [1, 2]
    [sweep.random]                           # optional: a seeded random subset of the grid
    max_runs = 4
    seed = 0

Keys are dotted config paths, checked against the train config schema (unknown keys name
the closest valid one); values are non-empty lists. Each run's config is the base config
with its values set, validated by resolving it against the schema.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import itertools
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, get_args, get_origin, get_type_hints

from pytc_core.errors import UserError, closest_match

__all__ = ["SweepPlan", "SweepRun", "expand_sweep", "schema_paths", "split_launch_tables",
           "train_config_schema"]

log = logging.getLogger("pytc.launch")

# tables of a launch file that are not part of the train config
LAUNCH_TABLES = ("sweep", "launch")


@dataclass(frozen=True)
class SweepRun:
    """One run of a sweep: its index, its swept values (dotted key → value), its config."""

    index: int
    params: dict[str, Any]
    config: dict[str, Any]


@dataclass(frozen=True)
class SweepPlan:
    """The runs of a sweep, and how many combinations the grid had before sampling."""

    runs: list[SweepRun]
    grid_size: int
    keys: list[str]


def train_config_schema() -> type | None:
    """pytc-train's config dataclass, found at run time (launch does not import pytc-train).

    Looked up as the entry point ``pytc.config_schemas:train``, else as ``TrainConfig`` in
    ``pytc_train.train`` or ``pytc_train.config``; None when pytc-train is not installed.
    """
    for ep in entry_points(group="pytc.config_schemas", name="train"):
        loaded = ep.load()
        if isinstance(loaded, type) and dataclasses.is_dataclass(loaded):
            return loaded
    for module_name in ("pytc_train.train", "pytc_train.config"):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        schema = getattr(module, "TrainConfig", None)
        if isinstance(schema, type) and dataclasses.is_dataclass(schema):
            return schema
    return None


def _dataclass_of(tp: Any) -> type | None:
    for candidate in (tp, *get_args(tp)):
        if isinstance(candidate, type) and dataclasses.is_dataclass(candidate):
            return candidate
    return None


def schema_paths(schema: type, prefix: str = "") -> list[str]:
    """Every dotted key path of a dataclass schema (tables and their leaves)."""
    paths = []
    hints = get_type_hints(schema)
    for f in dataclasses.fields(schema):
        if not f.init:
            continue
        path = prefix + f.name
        paths.append(path)
        inner = _dataclass_of(hints[f.name])
        if inner is not None and get_origin(hints[f.name]) not in (list, tuple):
            paths += schema_paths(inner, path + ".")
    return paths


def split_launch_tables(doc: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A launch TOML → (train config tree, ``[sweep]`` table, ``[launch]`` table)."""
    config = {k: copy.deepcopy(v) for k, v in doc.items() if k not in LAUNCH_TABLES}
    sweep = doc.get("sweep", {})
    launch = doc.get("launch", {})
    for name, table in (("sweep", sweep), ("launch", launch)):
        if not isinstance(table, Mapping):
            raise UserError(f"'{name}' must be a table", f"write it as [{name}]")
    return config, dict(sweep), dict(launch)


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"model": {"size": [..]}}`` and ``{"model.size": [..]}`` → ``{"model.size": [..]}``."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def _check_key(key: str, valid: list[str] | None, where: str) -> None:
    if valid is None or key in valid:
        return
    guess = closest_match(key, valid)
    top = sorted({p.split(".")[0] for p in valid})
    hint = f"did you mean '{guess}'? " if guess else ""
    raise UserError(f"{where} key '{key}' is not in the train config schema",
                    hint + "keys are dotted config paths under " + ", ".join(top))


def _check_values(key: str, values: Any, where: str) -> list[Any]:
    if not isinstance(values, list):
        raise UserError(f"{where} key '{key}' must be a list of values, got {values!r}",
                        f'write e.g. "{key}" = [{values!r}]')
    if not values:
        raise UserError(f"{where} key '{key}' has an empty list of values",
                        "give at least one value, or remove the key")
    return values


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    node = tree
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UserError(f"sweep key '{key}': '{part}' is not a table in the config",
                            "check the key")
        node = child
    node[parts[-1]] = copy.deepcopy(value)


def expand_sweep(config: Mapping[str, Any], sweep: Mapping[str, Any],
                 schema: type | None = None, *, max_runs: int | None = None,
                 seed: int | None = None) -> SweepPlan:
    """Expand a ``[sweep]`` table over the base ``config`` into run configs.

    ``schema``: the train config dataclass every key and run config is checked against
    (None: no check). Grid keys form all combinations; ``[sweep.zip]`` lists (equal
    lengths) are paired and form one more axis; ``max_runs`` (or ``[sweep.random]
    max_runs``) keeps a random subset of that many combinations, seeded by ``seed``
    (default 0), in grid order.
    """
    sweep = dict(sweep)
    zipped = sweep.pop("zip", {})
    rand = sweep.pop("random", {})
    if not isinstance(zipped, Mapping):
        raise UserError("'sweep.zip' must be a table", "write it as [sweep.zip]")
    if not isinstance(rand, Mapping):
        raise UserError("'sweep.random' must be a table", "write it as [sweep.random]")
    unknown_rand = [k for k in rand if k not in ("max_runs", "seed")]
    if unknown_rand:
        raise UserError(f"unknown key 'sweep.random.{unknown_rand[0]}'",
                        "[sweep.random] takes max_runs and seed")
    max_runs = max_runs if max_runs is not None else rand.get("max_runs")
    seed = seed if seed is not None else rand.get("seed", 0)
    if max_runs is not None and (isinstance(max_runs, bool) or not isinstance(max_runs, int)
                                 or max_runs < 1):
        raise UserError(f"max_runs must be a positive integer, got {max_runs!r}",
                        "e.g. --max-runs 8")

    valid = schema_paths(schema) if schema is not None else None
    grid = _flatten(sweep)
    pairs = _flatten(zipped)
    for key, values in grid.items():
        _check_key(key, valid, "sweep")
        _check_values(key, values, "sweep")
    for key, values in pairs.items():
        _check_key(key, valid, "sweep.zip")
        _check_values(key, values, "sweep.zip")
    both = set(grid) & set(pairs)
    if both:
        raise UserError(f"sweep key '{sorted(both)[0]}' is both in [sweep] and [sweep.zip]",
                        "keep it in one of them")
    if pairs:
        lengths = {k: len(v) for k, v in pairs.items()}
        if len(set(lengths.values())) > 1:
            desc = ", ".join(f"'{k}' has {n}" for k, n in lengths.items())
            raise UserError(f"[sweep.zip] lists have unequal lengths ({desc})",
                            "give every [sweep.zip] list the same number of values")
    if not grid and not pairs:
        raise UserError("the [sweep] table has no keys to sweep",
                        'add e.g. "model.mednext_kernel_size" = [3, 5] under [sweep]')

    axes: list[list[dict[str, Any]]] = [[{key: v} for v in values] for key, values in grid.items()]
    if pairs:
        n = len(next(iter(pairs.values())))
        axes.append([{k: vals[i] for k, vals in pairs.items()} for i in range(n)])
    combos = [dict(kv for part in combo for kv in part.items())
              for combo in itertools.product(*axes)]
    grid_size = len(combos)
    if max_runs is not None and max_runs < grid_size:
        keep = sorted(random.Random(seed).sample(range(grid_size), max_runs))
        combos = [combos[i] for i in keep]

    runs = []
    for index, params in enumerate(combos):
        tree = copy.deepcopy(dict(config))
        for key, value in params.items():
            _set_dotted(tree, key, value)
        if schema is not None:
            _validate(schema, tree, index, params)
        runs.append(SweepRun(index, params, tree))
    return SweepPlan(runs, grid_size, [*grid, *pairs])


def _validate(schema: type, tree: dict[str, Any], index: int, params: dict[str, Any]) -> None:
    from pytc_core.config import resolve_config

    try:
        resolve_config(schema, overrides=copy.deepcopy(tree))
    except UserError as exc:
        desc = ", ".join(f"{k}={v!r}" for k, v in params.items())
        raise UserError(f"run {index} ({desc}): {exc.what}", exc.fix) from None
