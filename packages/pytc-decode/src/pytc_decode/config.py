"""The options of ``pytc-decode``: :class:`DecodeConfig` (TOML table ``[decode]``).

Options every method uses are top-level keys; each method's own options are its nested
table (``[decode.cc]``, ``[decode.ws]``, ``[decode.mws]``). The flat keys of earlier
releases still work as shorthands that set the method tables (:data:`FLAT_KEYS`:
``threshold = 0.4`` sets ``cc.threshold`` and ``mws.threshold``, ``seed_radius = 3`` sets
``ws.seed_radius``, ...); two renamed keys are deprecated aliases for one release, with a
one-line warning: ``merge_threshold`` (now ``agglomeration_threshold``: pytc-eval's
``merge_threshold`` is funlib's ERL node count) and ``offsets`` (now ``long_range_offsets``:
in train and infer, ``offsets`` lists every channel).

A run's resume key holds only what changes its result: :func:`result_options`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any, Literal

from pytc_decode.methods import method_of, method_table, methods_of
from pytc_decode.methods.cc import CC, CcOptions
from pytc_decode.methods.mws import MWS, MwsOptions
from pytc_decode.methods.ws import WS, WsOptions

__all__ = ["DEPRECATED_KEYS", "FLAT_KEYS", "DecodeConfig", "result_options"]

log = logging.getLogger("pytc.decode")

#: flat (shorthand) key -> the method options it sets (``table.field``)
FLAT_KEYS: dict[str, tuple[str, ...]] = {
    "threshold": ("cc.threshold", "mws.threshold"),
    "agglomeration_threshold": ("ws.agglomeration_threshold",),
    "seed_threshold": ("ws.seed_threshold",),
    "seed_radius": ("ws.seed_radius",),
    "seeds_2d": ("ws.seeds_2d",),
    "merge_function": ("ws.merge_function",),
    "quantile": ("ws.quantile",),
    "ws_halo": ("ws.halo",),
    "long_range_offsets": ("mws.long_range_offsets",),
}

#: deprecated spelling -> (its new name, the flag it had or None); removed in the next release
DEPRECATED_KEYS: dict[str, tuple[str, str | None]] = {
    "merge_threshold": ("agglomeration_threshold", "--merge-threshold"),
    "offsets": ("long_range_offsets", None),
}


def warn_deprecated(old: str) -> None:
    """The one-line warning (stderr, through logging) for a deprecated key or flag."""
    new, flag = DEPRECATED_KEYS[old]
    spelled = f"'{old}'" + (f" ({flag})" if flag else "")
    new_spelled = f"'{new}'" + (f" (--{new.replace('_', '-')})" if flag else "")
    log.warning("pytc-decode: %s is deprecated and will be removed in the next release: use "
                "%s", spelled, new_spelled)


@dataclass(frozen=True)
class DecodeConfig:
    """Options of ``pytc-decode`` (TOML table ``[decode]`` or a whole file)."""

    #: the decode method: a name of the method table below
    method: str = "cc"
    #: segments under this many voxels are removed or merged (``small``)
    min_size: int = 0
    small: Literal["remove", "merge"] = "remove"
    mask: str | None = None
    foreground_channel: int | None = None
    foreground_threshold: float | None = None
    #: blockwise decoding with blocks of this many voxels: ``128`` or ``[64, 128, 128]`` (z, y, x)
    block_size: tuple[int, int, int] | int | None = None
    #: the affinities are logits: apply a sigmoid while reading
    logits: bool = False
    #: read missing chunks of precomputed inputs as zeros (layers sparse on purpose)
    fill_missing: bool = False
    dust: bool = False

    # --- the methods, one line each: [decode.<name>] options and the method object ---------
    cc: CcOptions = method_table(CC)
    ws: WsOptions = method_table(WS)
    mws: MwsOptions = method_table(MWS)

    # --- flat shorthands (FLAT_KEYS), folded into the tables above; None once resolved ------
    threshold: float | None = None
    agglomeration_threshold: tuple[float, ...] | float | None = None
    seed_threshold: float | None = None
    seed_radius: int | None = None
    seeds_2d: bool | None = None
    merge_function: Literal["mean", "quantile"] | None = None
    quantile: float | None = None
    ws_halo: int | None = None
    long_range_offsets: tuple[tuple[int, int, int], ...] | None = None
    #: deprecated aliases (DEPRECATED_KEYS)
    merge_threshold: tuple[float, ...] | float | None = None
    offsets: tuple[tuple[int, int, int], ...] | None = None

    def __post_init__(self) -> None:
        if self.block_size is not None:
            from pytc_core.cli import parse_block_size

            object.__setattr__(self, "block_size", parse_block_size(self.block_size,
                                                                    "--block-size"))
        for old, (new, _) in DEPRECATED_KEYS.items():
            value = getattr(self, old)
            if value is not None:
                warn_deprecated(old)
                if getattr(self, new) is None:
                    object.__setattr__(self, new, value)
                object.__setattr__(self, old, None)
        tables: dict[str, dict[str, Any]] = {}
        for flat, targets in FLAT_KEYS.items():
            value = getattr(self, flat)
            if value is None:
                continue
            for target in targets:
                table, name = target.split(".")
                tables.setdefault(table, {})[name] = value
            object.__setattr__(self, flat, None)
        for table, values in tables.items():
            object.__setattr__(self, table, replace(getattr(self, table), **values))


#: the common options that do not change a run's result (only what it prints)
_SUMMARY_ONLY = ("dust",)


def result_options(cfg: Any) -> dict[str, Any]:
    """What determines a run's result (its resume key): the common options and the options
    table of the method in use, no other method's table and no summary-only option."""
    from pytc_core.config import config_to_dict

    method = method_of(cfg)
    tables = set(methods_of(cfg))
    values = {k: v for k, v in config_to_dict(cfg).items()
              if k not in tables and k not in _SUMMARY_ONLY}
    values[method.name] = config_to_dict(getattr(cfg, method.name))
    return values
