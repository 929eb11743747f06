"""Lazy package exports (PEP 562), so a stage's ``--help`` does not import numba or torch."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any],
                                                                    Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` whose names live in its submodules.

    ``exports`` maps a public name to the submodule defining it (``{"rand_voi": "voi"}``); the
    submodule is imported on first access and the name cached in the package.
    """
    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(f"{package}.{module}"), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*exports, "__version__"})

    return __getattr__, __dir__
