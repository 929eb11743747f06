"""The decode methods, one module each, all behind :class:`~pytc_decode.methods.base.DecodeMethod`.

The table of methods is :class:`pytc_decode.config.DecodeConfig`'s method fields: one line
per method (``cc: CcOptions = method_table(CC)``) that names its ``[decode.<name>]`` options
table and its method object. Adding a method is one module here (options dataclass + a
:class:`DecodeMethod` subclass) plus that one line; the stage, the local blockwise loop and the
Slurm steps find it through :func:`methods_of`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pytc_core.errors import unknown_name_error
from pytc_decode.methods.base import DecodeMethod

__all__ = ["DecodeMethod", "method_of", "method_table", "methods_of"]

_KEY = "pytc_decode_method"


def method_table(method: DecodeMethod) -> Any:
    """The config field of ``method``: its options table, defaults from ``options_type``."""
    return dataclasses.field(default_factory=method.options_type, metadata={_KEY: method})


def methods_of(cfg: Any) -> dict[str, DecodeMethod]:
    """Every method a config (or config class) knows: ``name -> method``, in field order."""
    return {f.name: f.metadata[_KEY] for f in dataclasses.fields(cfg) if _KEY in f.metadata}


def method_of(cfg: Any) -> DecodeMethod:
    """The method ``cfg.method`` names (UserError with the valid names otherwise)."""
    methods = methods_of(cfg)
    if cfg.method not in methods:
        raise unknown_name_error("method", cfg.method, list(methods))
    return methods[cfg.method]
