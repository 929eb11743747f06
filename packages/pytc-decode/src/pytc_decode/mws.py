"""Mutex watershed on affinities with long-range channels (optional ``mwatershed`` package).

Install with ``uv pip install 'pytc-decode[mws]'`` (or ``pip install mwatershed``). Every
channel ``c`` is an edge between ``v`` and ``v + offset_c`` (channels 0-2 the nearest
neighbours ``(-1, 0, 0), (0, -1, 0), (0, 0, -1)``, then the given long-range offsets); edge
weights are ``affinity - threshold``, so edges above the threshold attract and edges below
repel, processed greedily by magnitude.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pytc_core.errors import UserError
from pytc_core.targets import NEAREST_OFFSETS
from pytc_decode.cc import (
    check_value_range,
    label_dtype,
    prepare_affinities,
    relabel_consecutive,
    value_scale,
)

__all__ = ["mutex_watershed"]

_BLOCKED = -1e6  # weight of edges touching voxels outside the mask: never merged


def _shifted(mask: np.ndarray, offset: Sequence[int]) -> np.ndarray:
    """``out[v] = mask[v + offset]`` (False where v + offset is outside)."""
    out = np.zeros_like(mask)
    src, dst = [], []
    for n, d in zip(mask.shape, offset, strict=True):
        if abs(d) >= n:
            return out
        src.append(slice(max(d, 0), n + min(d, 0)))
        dst.append(slice(max(-d, 0), n - max(d, 0)))
    out[tuple(dst)] = mask[tuple(src)]
    return out


def mutex_watershed(affinities: np.ndarray, long_range_offsets: Sequence[Sequence[int]] = (),
                    threshold: float = 0.5, min_size: int = 0, *,
                    mask: np.ndarray | None = None,
                    offsets: Sequence[Sequence[int]] | None = None) -> np.ndarray:
    """Segment (C, Z, Y, X) affinities with the mutex watershed.

    ``long_range_offsets`` (z, y, x voxels) of channels 3..C-1 (``offsets`` is its deprecated
    name: a warning; removed in the next release). Values in [0, 1] (unsigned integers as
    fractions of their maximum); others are a UserError. One-voxel segments and segments under
    ``min_size`` voxels become background, as do voxels outside ``mask``. Returns consecutive
    ids numbered by first voxel in C order (uint32, or uint64 for huge volumes).
    """
    if offsets is not None:
        import logging

        logging.getLogger("pytc.decode").warning(
            "pytc-decode: mutex_watershed(offsets=...) is deprecated and will be removed in the "
            "next release: use long_range_offsets=... (offsets lists every channel in train "
            "and infer)")
        long_range_offsets = offsets
    try:
        import mwatershed
    except ImportError:
        raise UserError("--method mws needs the mwatershed package",
                        "install it: uv pip install 'pytc-decode[mws]'") from None
    aff, t = prepare_affinities(affinities, threshold)  # every channel (float16 widened)
    if not np.isfinite(aff).all():
        raise UserError("affinities contain NaN/inf values",
                        "fix the producing step (e.g. a diverged model) or clean the volume")
    check_value_range(aff, "the affinity channels")
    all_offsets = [list(o) for o in NEAREST_OFFSETS] + [list(o) for o in long_range_offsets]
    if len(all_offsets) != aff.shape[0] or any(len(o) != 3 for o in all_offsets):
        raise UserError(f"{aff.shape[0]} channels but {len(all_offsets)} offsets (3 nearest + "
                        f"{len(long_range_offsets)} long-range)", "give one (z, y, x) offset per long-range channel")
    scale = value_scale(aff.dtype)
    weights = aff.astype(np.float64) / scale - t / scale
    if mask is not None:
        inside = np.asarray(mask) != 0
        for c, off in enumerate(all_offsets):
            weights[c][~(inside & _shifted(inside, off))] = _BLOCKED
    raw = np.asarray(mwatershed.agglom(weights, offsets=all_offsets))
    del weights
    ids, first, inverse, sizes = np.unique(raw.reshape(-1), return_index=True,
                                           return_inverse=True, return_counts=True)
    keep = (sizes >= max(min_size, 2)) & (ids != 0)  # mwatershed gives singletons id 0
    if mask is not None:
        keep &= np.asarray(mask).reshape(-1)[first] != 0
    order = np.argsort(first, kind="stable")  # rank of each id by first voxel
    rank = np.empty_like(order)
    rank[order] = np.arange(1, order.size + 1)
    dtype = label_dtype(raw.size)
    by_first = np.zeros(order.size + 1, dtype=bool)
    by_first[rank[keep]] = True
    labels = rank[inverse].astype(dtype).reshape(raw.shape)
    return relabel_consecutive(labels, by_first)
