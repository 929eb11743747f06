"""Affinity maps made from the raw EM alone: the baselines a trained model has to beat.

Both return affinities in the convention of :mod:`pytc_core.targets` and pytc-decode
((C, Z, Y, X) float32 in [0, 1]; channel ``c`` at voxel ``v`` scores the edge between ``v``
and ``v + offsets[c]``; edges leaving the volume are 0), so they are decoded, tuned and
evaluated exactly like a model's prediction:

- :func:`intensity_affinities`: ``min(r(v), r(v + o))`` of the raw scaled to [0, 1]. Decoding
  it by connected components at threshold ``t`` (``pytc-decode --threshold t``) gives the
  6-connected components of ``raw > t`` (cells are bright, membranes dark in EM); a bright
  voxel with no bright neighbour is left as background.
- :func:`gradient_affinities`: ``1 - max(b(v), b(v + o))`` with ``b`` the gradient magnitude
  of the Gaussian-smoothed raw, scaled by a high percentile: edges near intensity changes
  (membrane flanks) are cut.

Arrays are (z, y, x); sigmas are in voxels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pytc_core.targets import NEAREST_OFFSETS, pair_slices

__all__ = [
    "gaussian_smooth",
    "gradient_affinities",
    "gradient_magnitude",
    "intensity_affinities",
    "raw_to_unit",
]


def raw_to_unit(raw: np.ndarray) -> np.ndarray:
    """Raw intensities as float32 in [0, 1]: integer dtypes divided by their maximum (uint8:
    ÷ 255), float data min-max scaled (a constant volume gives zeros)."""
    if np.issubdtype(raw.dtype, np.integer):
        return raw.astype(np.float32) / np.float32(np.iinfo(raw.dtype).max)
    out = raw.astype(np.float32)
    if out.size == 0:
        return out
    lo, hi = float(out.min()), float(out.max())
    if hi > lo:
        out = (out - lo) / (hi - lo)
    else:
        out = np.zeros_like(out)
    return out


def gaussian_smooth(x: np.ndarray, sigma: float | Sequence[float],
                    truncate: float = 4.0) -> np.ndarray:
    """Separable Gaussian filter of a 3D array, float32; ``sigma`` in voxels (one number or
    (z, y, x); 0 leaves an axis alone). Borders are mirrored (``symmetric``), kernels cut at
    ``truncate`` sigmas: the same result as ``scipy.ndimage.gaussian_filter`` (mode
    ``reflect``)."""
    sigmas = ((float(sigma),) * x.ndim if isinstance(sigma, int | float)
              else tuple(float(s) for s in sigma))
    if len(sigmas) != x.ndim:
        raise ValueError(f"sigma {sigma} does not match a {x.ndim}D array")
    out = np.asarray(x, dtype=np.float32)
    for axis, s in enumerate(sigmas):
        if s <= 0:
            continue
        radius = int(truncate * s + 0.5)
        taps = np.arange(-radius, radius + 1, dtype=np.float64)
        kernel = np.exp(-0.5 * (taps / s) ** 2)
        kernel /= kernel.sum()
        pad = [(0, 0)] * out.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="symmetric")
        acc = np.zeros(out.shape, dtype=np.float32)
        n = out.shape[axis]
        window = [slice(None)] * out.ndim
        for i, w in enumerate(kernel):
            window[axis] = slice(i, i + n)
            acc += np.float32(w) * padded[tuple(window)]
        out = acc
    return out


def gradient_magnitude(x: np.ndarray) -> np.ndarray:
    """|∇x| per voxel (central differences inside, one-sided at the borders; per voxel), float32."""
    grads = np.gradient(np.asarray(x, dtype=np.float32))
    return np.sqrt(sum(g.astype(np.float32) ** 2 for g in grads)).astype(np.float32)


def _edge_max(values: np.ndarray, offsets: Sequence[Sequence[int]]) -> np.ndarray:
    """(C, Z, Y, X): ``max(values[v], values[v + offsets[c]])``; edges leaving the volume get
    ``nan``."""
    out = np.full((len(offsets), *values.shape), np.nan, dtype=np.float32)
    for c, off in enumerate(offsets):
        pair = pair_slices(values.shape, off)
        if pair is None:
            continue
        src, dst = pair
        out[(c, *src)] = np.maximum(values[src], values[dst])
    return out


def intensity_affinities(raw: np.ndarray,
                         offsets: Sequence[Sequence[int]] = NEAREST_OFFSETS) -> np.ndarray:
    """(C, Z, Y, X) float32: ``min(r(v), r(v + o))`` with ``r = raw_to_unit(raw)``; 0 for
    edges leaving the volume. Connected components at threshold ``t`` = components of
    ``r > t``."""
    unit = raw_to_unit(raw)
    aff = -_edge_max(-unit, offsets)  # min(a, b) = -max(-a, -b)
    return np.nan_to_num(aff, nan=0.0).astype(np.float32)


def gradient_affinities(raw: np.ndarray, sigma: float | Sequence[float] = 1.0,
                        offsets: Sequence[Sequence[int]] = NEAREST_OFFSETS,
                        percentile: float = 99.0) -> np.ndarray:
    """(C, Z, Y, X) float32: ``1 - max(b(v), b(v + o))`` where ``b`` is the gradient
    magnitude of the raw (scaled to [0, 1]) smoothed with a Gaussian of ``sigma`` voxels,
    divided by its ``percentile``-th percentile and clipped to [0, 1]; 0 for edges leaving
    the volume. A constant raw gives all-ones affinities inside."""
    boundary = gradient_magnitude(gaussian_smooth(raw_to_unit(raw), sigma))
    scale = float(np.percentile(boundary, percentile)) if boundary.size else 0.0
    if scale > 0:
        boundary = np.clip(boundary / np.float32(scale), 0.0, 1.0)
    else:
        boundary = np.zeros_like(boundary)
    aff = 1.0 - _edge_max(boundary, offsets)
    return np.nan_to_num(aff, nan=0.0).astype(np.float32)

