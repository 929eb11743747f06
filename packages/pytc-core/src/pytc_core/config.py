"""Typed TOML configuration shared by every command.

A stage describes its options as a dataclass schema (nested dataclasses for tables). The
resolved config comes from three layers, later ones winning: the schema's defaults, a TOML
file (``--config run.toml``), and values given on the command line (dotted keys such as
``model.architecture``). Unknown keys and wrong types are user errors naming the valid keys
and the closest match. The resolved config is dumped as TOML beside every output.

One TOML file may configure a whole pipeline: each stage reads its own table (``[decode]``,
``[eval]``, ...) and ignores the tables of the other stages, which are listed once in
:data:`STAGE_TABLES`; a top-level table that belongs to no stage is still an error.

``--set`` keys follow one rule in every command: a key is written as in the file, with its
table (``decode.merge_threshold``, as under ``[decode]``; ``train.max_steps``), or bare when
that names one key (``merge_threshold``; ``max_steps``, the only table of pytc-train's config
that has it). An error about a key from the file names the file.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tomllib
import types
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, cast, get_args, get_origin, get_type_hints

import tomli_w

from pytc_core.errors import UserError, closest_match
from pytc_core.files import write_atomic
from pytc_core.version import __version__
from pytc_core.volume import parse_uri, sidecar_path
from pytc_core.volume.precomputed import to_cloudpath

__all__ = [
    "STAGE_TABLES",
    "parse_set_options",
    "config_to_dict",
    "config_to_toml",
    "load_toml",
    "resolve_config",
    "save_config_next_to",
    "set_key",
]

T = TypeVar("T")
_MISSING = object()


class _KeyError(UserError):
    """A UserError about config key ``key`` (dotted), so the error can say where it came from."""

    def __init__(self, key: str, what: str, fix: str | None = None) -> None:
        super().__init__(what, fix)
        self.key = key

#: Top-level tables of a pipeline TOML file, each read by one stage (or shared by the stages
#: that train and run a model). A stage ignores the ones it does not read; any other top-level
#: table is an error. Add a stage's table here when a stage adds one.
STAGE_TABLES = frozenset({
    "train", "infer", "decode", "eval", "launch",   # one per command
    "model", "data", "optim", "aug", "loss",        # shared by train and infer
    "sweep", "slurm",                               # pytc-launch
})


def load_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse a TOML file; a missing file or a syntax error is a UserError with the line number."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file not found: {p}", "check the --config path")
    try:
        with open(p, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{p}: TOML syntax error: {exc}", "fix the file at that line") from None


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if origin is not None:
        return f"{getattr(origin, '__name__', origin)}[{', '.join(_type_name(a) for a in get_args(tp))}]"
    return "none" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _parse_text(value: str) -> Any:
    """A command-line string as a TOML value when it parses as one (``3``, ``[1, 2]``, ``true``)."""
    try:
        return tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        return value


def _coerce(value: Any, tp: Any, key: str, from_text: bool) -> Any:
    """Check ``value`` against type ``tp`` and convert losslessly (int → float, list → tuple)."""
    def bad() -> UserError:
        return _KeyError(key, f"config key '{key}' must be {_type_name(tp)}, got {value!r}",
                         "fix the value in the TOML file or on the command line")

    if tp is Any:
        return value
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None or (from_text and value in ("none", "None") and type(None) in args):
            if type(None) in args:
                return None
            raise bad()
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key, from_text)
            except UserError:
                continue
        raise bad()
    if origin is Literal:
        if value in get_args(tp):
            return value
        choices = [str(a) for a in get_args(tp)]
        guess = closest_match(str(value), choices)
        raise _KeyError(key, f"config key '{key}' must be one of {', '.join(choices)}, got "
                        f"{value!r}", f"did you mean '{guess}'?" if guess else "pick one of those")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise _KeyError(key, f"config key '{key}' must be a table",
                            f"write it as [{key}] in the TOML file")
        return _build(cast(type, tp), value, key + ".", from_text)
    if from_text and isinstance(value, str):
        parsed = _parse_text(value)
        if tp is not str or isinstance(parsed, str):  # a quoted string loses its quotes
            value = parsed
    if origin is tuple and _is_scalar(value):
        args = get_args(tp)
        if len(args) > 1 and args[-1] is not Ellipsis and len(set(args)) == 1:
            # one number for every axis: block_size = 128 means (128, 128, 128)
            value = [value] * len(args)
    if origin in (list, tuple):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise bad()
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise _KeyError(key, f"config key '{key}' needs {len(args)} values, got "
                                f"{len(value)}", f"give {_type_name(tp)}")
            return tuple(_coerce(v, a, key, from_text) for v, a in zip(value, args, strict=True))
        inner = args[0] if args else Any
        items = [_coerce(v, inner, key, from_text) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise bad()
        if from_text:  # a free-form table's --set values: TOML literals, like any other key
            return {k: _parse_text(v) if isinstance(v, str) else v for k, v in value.items()}
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad()
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad()
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad()
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad()
        return value
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise bad()


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _build(schema: type[T], values: Mapping[str, Any], prefix: str, from_text: bool) -> T:
    fields = {f.name: f for f in dataclasses.fields(schema) if f.init}  # type: ignore[arg-type]
    hints = get_type_hints(schema)
    unknown = [k for k in values if k not in fields]
    if unknown:
        key = unknown[0]
        guess = closest_match(key, fields)
        hint = f"did you mean '{prefix}{guess}'? " if guess else ""
        raise _KeyError(prefix + key, f"unknown config key '{prefix}{key}'",
                        hint + "valid keys: " + ", ".join(prefix + f for f in fields))
    kwargs = {name: _coerce(v, hints[name], prefix + name, from_text) for name, v in values.items()}
    missing = [n for n, f in fields.items() if n not in kwargs and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise _KeyError(prefix + missing[0], f"missing required config key '{prefix}{missing[0]}'",
                        "set it in the TOML file or on the command line")
    try:
        return schema(**kwargs)
    except (ValueError, TypeError) as exc:  # __post_init__ validation
        if isinstance(exc, UserError):
            raise
        raise UserError(f"invalid config: {exc}", "fix the value") from None


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UserError(f"config key '{key}': '{part}' is not a table", "check the key")
        node = child
    node[parts[-1]] = value


def _stage_tree(data: dict[str, Any], schema: type, section: str | None,
                path: str | os.PathLike[str]) -> dict[str, Any]:
    """The part of a parsed TOML file that configures ``schema`` (see :func:`resolve_config`)."""
    fields = {f.name for f in dataclasses.fields(schema) if f.init}
    if section is not None and section in data:
        if not isinstance(data[section], dict):
            raise UserError(f"{path}: '{section}' must be a table",
                            f"write the options under [{section}]")
        for key, value in data.items():
            if key != section and key not in STAGE_TABLES:
                raise _unknown_table(path, key, value, STAGE_TABLES)
        return data[section]
    # the whole file is this stage's config, minus the other stages' tables
    tree = {k: v for k, v in data.items() if k in fields or k not in STAGE_TABLES}
    for key, value in tree.items():
        if key not in fields and isinstance(value, dict):
            raise _unknown_table(path, key, value, fields | STAGE_TABLES)
    return tree


def _unknown_table(path: str | os.PathLike[str], key: str, value: Any,
                   known: Iterable[str]) -> UserError:
    known = sorted(known)
    guess = closest_match(key, known)
    hint = f"did you mean [{guess}]? " if guess else ""
    what = f"unknown table [{key}]" if isinstance(value, dict) else \
        f"top-level key '{key}' belongs to no stage's table"
    return UserError(f"{path}: {what}",
                     hint + "tables a pipeline file may hold: " + ", ".join(sorted(STAGE_TABLES)))


def resolve_config(schema: type[T], config_file: str | os.PathLike[str] | None = None,
                   overrides: Mapping[str, Any] | None = None, section: str | None = None,
                   text_overrides: Mapping[str, str] | None = None) -> T:
    """Resolve ``schema`` from defaults < TOML file < ``overrides``.

    ``config_file``: a TOML file, or None. With ``section``, its table ``[section]`` is used
    when present (so one file configures several stages; every other top-level key must be
    another stage's table, :data:`STAGE_TABLES`). Without it (or when the file has no such
    table) the whole file is the config, except the other stages' tables, which are ignored.
    ``overrides``: typed values from the command line under flat dotted keys; None values are
    ignored (flag not given). ``text_overrides``: ``key -> "string"`` values (``--set k=v``)
    parsed as TOML literals, each key with the stage's table prefix (``section.key``) or
    without, or bare when one table holds it (:func:`set_key`). Raises UserError on unknown
    keys and tables and wrong types; an error about a key from ``config_file`` names the file.
    """
    tree: dict[str, Any] = {}
    if config_file is not None:
        tree = _deep_copy(_stage_tree(load_toml(config_file), schema, section, config_file))
    given: set[str] = set()  # keys given on the command line (the others come from the file)
    for key, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(tree, key, value)
            given.add(key)
    text_keys = set()
    for key, value in (text_overrides or {}).items():
        key = set_key(schema, key, section)
        _set_dotted(tree, key, value)
        text_keys.add(key)
    try:
        return _build(schema, tree, "", from_text=bool(text_keys))
    except _KeyError as exc:
        if config_file is None or _given(exc.key, given | text_keys):
            raise
        raise UserError(f"{config_file}: {exc.what}", exc.fix) from None


def _given(key: str, keys: Iterable[str]) -> bool:
    """Whether ``key`` is, lies inside or holds one of the dotted ``keys``."""
    return any(key == k or key.startswith(k + ".") or k.startswith(key + ".") for k in keys)


def set_key(schema: type, key: str, section: str | None = None) -> str:
    """The dotted key of ``schema`` that the ``--set`` key ``key`` names (one rule for every
    command): ``section.rest`` is ``rest`` when the schema is the stage's table ``[section]``
    (``decode.merge_threshold`` in pytc-decode); a bare key that is no field of the schema is
    the field of the one table that has it (``max_steps`` → ``train.max_steps``). A bare key
    that several tables hold, and a key of another stage's table, are UserErrors; any other
    key is returned unchanged (an unknown one is named, with the valid keys, when resolved).
    """
    fields = {f.name for f in dataclasses.fields(schema) if f.init}
    head, dot, rest = key.partition(".")
    if head not in fields and dot and head == section:
        key = rest
        head, dot, rest = key.partition(".")
    if head in fields:
        return key
    hints = get_type_hints(schema)
    tables = sorted(name for name in fields if dataclasses.is_dataclass(hints[name]))
    if dot:
        if head in STAGE_TABLES and head not in fields:
            own = f"[{section}]" if section else ", ".join(f"[{t}]" for t in tables)
            raise UserError(f"config key '{key}' belongs to the [{head}] table, which this "
                            f"command does not read", f"it reads {own}; give '{key}' to the "
                            f"command that reads [{head}]")
        return key
    holders = [t for t in tables
               if head in {f.name for f in dataclasses.fields(hints[t]) if f.init}]
    if len(holders) > 1:
        raise UserError(f"config key '{key}' is in several tables: "
                        + ", ".join(f"{t}.{key}" for t in holders),
                        f"write it with its table, e.g. --set {holders[0]}.{key}=...")
    return f"{holders[0]}.{key}" if holders else key


def parse_set_options(items: list[str] | tuple[str, ...] | None) -> dict[str, str]:
    """``--set key=value`` options (any config key, dotted for tables) as ``{key: "value"}``.

    The values are parsed as TOML literals by :func:`resolve_config` (``text_overrides``).
    """
    out: dict[str, str] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"bad --set '{item}'", "write it as --set key=value, e.g. --set threshold=0.4")
        out[key.strip()] = value.strip()
    return out


def _deep_copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)
                if getattr(value, f.name) is not None}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return value.item()
    return value


def config_to_dict(config: Any) -> dict[str, Any]:
    """A dataclass config (or mapping) as a plain TOML-able dict; None values are dropped."""
    return _plain(config)


def config_to_toml(config: Any) -> str:
    """The config as TOML text (None values dropped: TOML has no null)."""
    return tomli_w.dumps(config_to_dict(config))


def save_config_next_to(output_uri: str, config: Any, command: str = "pytc") -> Path | None:
    """Write ``pytc_config.toml`` with the resolved config beside (or inside) ``output_uri``.

    Returns the path written, or None for a remote output (where it is stored with the layer
    through CloudFiles instead).
    """
    header = (f"# resolved config of `{command}` (pytc {__version__}), written "
              f"{datetime.now(UTC).isoformat(timespec='seconds')}\n"
              f"# command line: {' '.join(sys.argv)}\n")
    text = header + config_to_toml(config)
    path = sidecar_path(output_uri, "pytc_config.toml")
    if path is None:
        from cloudfiles import CloudFiles  # heavy: only for remote outputs

        if parse_uri(output_uri).format == "precomputed":
            CloudFiles(to_cloudpath(output_uri)).put("pytc_config.toml", text.encode(),
                                                     content_type="text/plain")
        return None
    return write_atomic(path, text.encode())

