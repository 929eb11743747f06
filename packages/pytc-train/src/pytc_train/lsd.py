"""Local shape descriptors (Sheridan et al. 2022) of instance labels: an auxiliary target.

Per object and voxel, Gaussian-weighted moments of the object's voxels around the voxel
(sigma in voxels, z, y, x; kernels cut at 3 sigma, zero outside the array), as 10 channels in
[0, 1] (lsd-lite's ``get_lsds`` with ``voxel_size = 1`` and the paper's ordering):

====== ==============================================================================
0-2    mean offset to the local centre of mass, z, y, x: ``offset / sigma / 2 + 0.5``
3-5    variance along z, y, x (at least 1e-3) divided by ``sigma**2``
6-8    Pearson correlation zy, zx, yx: ``cov / (2 sqrt(var_i var_j)) + 0.5``
9      mass: the Gaussian-filtered object mask
====== ==============================================================================

clipped to [0, 1]; background voxels are 0. lsd-lite filters the whole array once per
object (10 Gaussian filters each); here each object is filtered only within its bounding box
grown by the kernel radius, which gives the same values (within float32 rounding) far faster
on patches holding many small objects (``bench/bench_recipe.py --lsd-speed``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from pytc_train.config import LSD_CHANNELS

__all__ = ["LSD_CHANNELS", "lsd_from_labels"]

_TRUNCATE = 3.0


def lsd_from_labels(labels: np.ndarray, sigma: float | Sequence[float]) -> np.ndarray:
    """(10, Z, Y, X) float32 local shape descriptors of (Z, Y, X) integer ``labels``
    (0 = background); ``sigma`` in voxels, one number or (z, y, x). See the module docstring."""
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"labels must be 3D (Z, Y, X), got shape {labels.shape}")
    sig = (np.full(3, float(sigma)) if isinstance(sigma, int | float)
           else np.asarray([float(s) for s in sigma]))
    if sig.shape != (3,) or not np.all(sig > 0):
        raise ValueError(f"sigma must be one or three positive numbers, got {sigma}")
    radius = [int(_TRUNCATE * s + 0.5) for s in sig]
    out = np.zeros((LSD_CHANNELS, *labels.shape), dtype=np.float32)
    ids, dense = np.unique(labels, return_inverse=True)
    dense = dense.reshape(labels.shape)  # 0 .. len(ids) - 1; 0 is background when present
    shift = 0 if ids[0] == 0 else 1  # find_objects skips the value 0
    boxes = ndimage.find_objects(dense + shift)  # value v's box at index v - 1
    for k in range(1 - shift, len(ids)):
        box = boxes[k + shift - 1]
        assert box is not None
        crop = tuple(slice(max(0, b.start - r), min(n, b.stop + r))
                     for b, r, n in zip(box, radius, labels.shape, strict=True))
        mask = dense[crop] == k
        out[(slice(None), *crop)] += _descriptor(mask, sig, [c.start for c in crop]) * mask
    np.clip(out, 0.0, 1.0, out=out)
    return out


def _descriptor(mask: np.ndarray, sigma: np.ndarray, start: Sequence[int]) -> np.ndarray:
    """The 10 descriptor channels of one object (``mask``) over its crop, unmasked."""

    def smooth(x: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(x, sigma=tuple(sigma), mode="constant", cval=0.0,
                                       truncate=_TRUNCATE)

    m = mask.astype(np.float32)
    coords = np.stack(np.meshgrid(*(np.arange(s, s + n, dtype=np.float32)
                                    for s, n in zip(start, mask.shape, strict=True)),
                                  indexing="ij"))
    masked = coords * m
    mass = smooth(m)
    empty = mass == 0
    mass[empty] = 1.0
    centre = np.stack([smooth(masked[d]) for d in range(3)]) / mass
    offset = (centre - coords) / sigma.reshape(3, 1, 1, 1).astype(np.float32) * 0.5 + 0.5
    # second moments: the diagonal (zz, yy, xx), then zy, yx, zx
    pairs = [(0, 0), (1, 1), (2, 2), (0, 1), (1, 2), (0, 2)]
    cov = np.stack([smooth(masked[i] * masked[j]) / mass - centre[i] * centre[j]
                    for i, j in pairs])
    variance = np.maximum(cov[:3], 1e-3)
    pearson = np.stack([cov[3 + k] / (2 * np.sqrt(variance[i] * variance[j])) + 0.5
                        for k, (i, j) in enumerate(pairs[3:])])
    variance = variance / (sigma.reshape(3, 1, 1, 1).astype(np.float32) ** 2)
    mass[empty] = 0.0
    pearson = pearson[[0, 2, 1]]  # the paper's order: zy, zx, yx
    return np.concatenate([offset, variance, pearson, mass[None]]).astype(np.float32)
