"""Deterministic synthetic EM volumes: neuron-like instance labels and an EM-like raw image.

Neurites are random walks with persistent direction, varying radius and side branches,
rasterised as chains of balls into a shared volume (later neurites overwrite earlier ones
where they cross, so many touch). The raw image has dark membranes at label boundaries, a
per-neuron cytoplasm intensity, a darker extracellular space, blur and noise. Same seed,
same volume. Used by tests and benchmarks so nothing depends on downloads.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from pytc_core.targets import boundary_from_labels

__all__ = ["defective_affinities", "em_like_raw", "synthetic_em_volume", "synthetic_labels"]


@lru_cache(maxsize=64)
def _ball(radius: int) -> np.ndarray:
    r = np.arange(-radius, radius + 1)
    zz, yy, xx = np.meshgrid(r, r, r, indexing="ij")
    return (zz**2 + yy**2 + xx**2) <= radius * radius + radius  # slightly fuller than a sphere


def _stamp(labels: np.ndarray, centre: np.ndarray, radius: int, value: int) -> None:
    ball = _ball(radius)
    lo = np.round(centre).astype(int) - radius
    hi = lo + ball.shape[0]
    vol_sl, ball_sl = [], []
    for a, b, n in zip(lo, hi, labels.shape, strict=True):
        if b <= 0 or a >= n:
            return
        vol_sl.append(slice(max(a, 0), min(b, n)))
        ball_sl.append(slice(max(a, 0) - a, min(b, n) - a))
    region = labels[tuple(vol_sl)]
    region[ball[tuple(ball_sl)]] = value


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(np.linalg.norm(v), 1e-9)


def synthetic_labels(
    shape: Sequence[int] = (64, 64, 64),
    seed: int = 0,
    n_neurons: int | None = None,
    radius_range: tuple[float, float] = (2.0, 6.0),
    branch_probability: float = 0.008,
    fill_fraction: float = 0.6,
    anisotropy: Sequence[float] = (1.0, 1.0, 1.0),
    min_piece: int = 20,
) -> np.ndarray:
    """Neuron-like instance labels, uint64 (Z, Y, X), ids 1..N consecutive, 0 = background.

    ``n_neurons`` defaults to adding neurites until ``fill_fraction`` of the volume is filled. ``radius_range``
    is in voxels (x/y); ``anisotropy`` (z, y, x) shrinks steps along anisotropic axes. Every id
    is one 6-connected object of at least ``min_piece`` voxels.
    """
    shape = tuple(int(s) for s in shape)
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, dtype=np.uint64)
    size = np.array(shape, dtype=float)
    mean_r = float(np.mean(radius_range))
    diag = float(np.linalg.norm(size))
    auto = n_neurons is None
    if n_neurons is None:
        per_neuron = np.pi * mean_r**2 * diag * 1.5  # voxels of a neurite with its branches
        n_neurons = max(2, int(fill_fraction * np.prod(size) / per_neuron))
    scale = 1.0 / np.asarray(anisotropy, dtype=float)
    target = fill_fraction * labels.size
    value = 0
    while value < n_neurons or (auto and value % 8 != 0) or (
            auto and value < 20 * n_neurons and np.count_nonzero(labels) < target):
        value += 1
        # start on a random face, heading inwards, so neurites cross the volume like real ones
        start = rng.random(3) * size
        axis = int(rng.integers(3))
        side = int(rng.integers(2))
        start[axis] = 0.0 if side == 0 else size[axis] - 1
        inward = np.eye(3)[axis] * (1 if side == 0 else -1)
        stack = [(start, _unit(rng.normal(size=3) * 0.5 + inward), rng.uniform(*radius_range), 0)]
        while stack:
            pos, d, r, depth = stack.pop()
            n_steps = int(diag * (1.5 if depth == 0 else 0.5))
            dirs = d + np.cumsum(rng.normal(size=(n_steps, 3)) * 0.12, axis=0)
            dirs /= np.maximum(np.linalg.norm(dirs, axis=1, keepdims=True), 1e-9)
            path = pos + np.cumsum(dirs * scale, axis=0)
            radii = np.clip(r + np.cumsum(rng.normal(size=n_steps) * 0.15),
                            radius_range[0] * 0.7, radius_range[1])
            outside = np.any((path < -radii[:, None]) | (path >= size + radii[:, None]), axis=1)
            n_in = int(np.argmax(outside)) if outside.any() else n_steps
            i = 0
            while i < n_in:
                ri = max(1, int(round(radii[i])))
                _stamp(labels, path[i], ri, value)
                i += max(1, int(ri * 0.9))
            if depth < 2:
                for j in np.flatnonzero(rng.random(n_in) < branch_probability):
                    branch_dir = _unit(np.cross(dirs[j], rng.normal(size=3)) + dirs[j] * 0.3)
                    stack.append((path[j].copy(), branch_dir,
                                  max(radius_range[0], radii[j] * 0.7), depth + 1))
    # later neurites may cut earlier ones into pieces: every 6-connected piece becomes its own
    # neuron and pieces under min_piece voxels become background, so each id is one connected
    # object with no isolated voxels (its affinities decode back to it exactly)
    import cc3d  # only when synthetic labels are made

    pieces = cc3d.connected_components(labels, connectivity=6, out_dtype=np.uint64)
    sizes = np.bincount(pieces.ravel().astype(np.intp))
    keep = sizes >= min_piece
    keep[0] = False
    remap = np.zeros(len(sizes), dtype=np.uint64)
    remap[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.uint64)
    return remap[pieces.astype(np.intp)]


def _box_blur(image: np.ndarray, passes: int = 2) -> np.ndarray:
    """Separable 3-tap box blur, ``passes`` times along each axis (≈ Gaussian, sigma ≈ 0.8·√passes)."""
    out = image.astype(np.float32, copy=True)
    for _ in range(passes):
        for axis in range(out.ndim):
            moved = np.moveaxis(out, axis, 0)
            padded = np.concatenate([moved[:1], moved, moved[-1:]], axis=0)
            out = np.moveaxis((padded[:-2] + padded[1:-1] + padded[2:]) / 3.0, 0, axis)
    return np.ascontiguousarray(out)


def em_like_raw(labels: np.ndarray, seed: int = 0, noise: float = 12.0) -> np.ndarray:
    """An EM-like uint8 image (Z, Y, X) for ``labels``: dark membranes, textured cytoplasm."""
    rng = np.random.default_rng(seed + 1)
    n = int(labels.max()) + 1
    cyto = rng.uniform(150, 200, size=n).astype(np.float32)
    cyto[0] = 110.0  # extracellular space
    image = cyto[labels.astype(np.int64)]
    image[boundary_from_labels(labels) > 0] = 40.0
    image = _box_blur(image, passes=2)
    image += rng.normal(0.0, noise, size=labels.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def synthetic_em_volume(shape: Sequence[int] = (64, 64, 64), seed: int = 0,
                        **label_kwargs) -> tuple[np.ndarray, np.ndarray]:
    """``(raw uint8, labels uint64)`` of ``shape`` (Z, Y, X); deterministic in ``seed``."""
    labels = synthetic_labels(shape, seed=seed, **label_kwargs)
    return em_like_raw(labels, seed=seed), labels


def defective_affinities(affinities: np.ndarray, seed: int = 0, sigma: float = 0.15,
                         leak_rate: float = 0.0002, leak_value: float = 0.85,
                         missing: Sequence[int] = ()) -> np.ndarray:
    """Clean (C, Z, Y, X) affinities with the defects of an imperfect model's prediction.

    Smooth Gaussian noise (``sigma``, correlated over 3 voxels), weakened boundary patches
    (5^3 blobs set to ``leak_value`` around a ``leak_rate`` share of the boundary edges) and
    missing sections (every channel of the z indices in ``missing`` = 0.5 + noise), clipped
    to [0, 1], float32. Deterministic for a seed.
    """
    rng = np.random.default_rng(seed)
    a = np.asarray(affinities, dtype=np.float32).copy()
    boundary = a < 0.5
    centres = boundary & (rng.random(a.shape) < leak_rate)
    a[(_blur_spatial(centres.astype(np.float32), 2) > 0) & boundary] = leak_value
    noise = _blur_spatial(rng.normal(0, 1, a.shape).astype(np.float32), 1)
    a += sigma * noise / max(float(noise.std()), 1e-12)
    for z in missing:
        a[:, z] = 0.5 + rng.normal(0, sigma, a[:, z].shape)
    return np.clip(a, 0, 1).astype(np.float32)


def _blur_spatial(x: np.ndarray, r: int) -> np.ndarray:
    """Mean over a (2r + 1)^3 box of the spatial axes of (C, Z, Y, X), edges replicated."""
    for axis in (1, 2, 3):
        n = x.shape[axis]
        pad = [(r + 1, r) if a == axis else (0, 0) for a in range(x.ndim)]
        c = np.cumsum(np.pad(x, pad, mode="edge"), axis=axis)
        x = (np.take(c, range(2 * r + 1, n + 2 * r + 1), axis=axis)
             - np.take(c, range(n), axis=axis)) / (2 * r + 1)
    return x
