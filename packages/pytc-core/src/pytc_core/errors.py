"""The one exception type for bad input, and helpers that raise it."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["UserError", "closest_match", "unknown_name_error"]


class UserError(Exception):
    """Bad input from the user (missing file, wrong shape, unknown key, ...).

    Command entry points turn it into a single stderr line
    ``pytc-x: error: <what> (<how to fix>)`` and exit code 2, never a traceback.
    Library callers may catch it like any exception.
    """

    def __init__(self, what: str, fix: str | None = None) -> None:
        self.what = what
        self.fix = fix
        super().__init__(f"{what} ({fix})" if fix else what)


def closest_match(name: str, choices: Iterable[str]) -> str | None:
    """The choice closest to ``name`` (difflib ratio >= 0.5), or None."""
    matches = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return matches[0] if matches else None


def unknown_name_error(kind: str, name: str, choices: Iterable[str]) -> UserError:
    """A UserError for an unknown ``kind`` called ``name``, listing the valid choices."""
    choices = sorted(choices)
    guess = closest_match(name, choices)
    fix = f"did you mean '{guess}'? " if guess else ""
    fix += "valid: " + ", ".join(choices)
    return UserError(f"unknown {kind} '{name}'", fix)
