"""Geometric transforms: flips, 90° rotations (+ axis permutation), small in-plane rotations,
elastic deformation. Image interpolated linearly, labels and masks nearest-neighbour. Axes are
(z, y, x); rotations turn the y/x plane (EM sections).

scipy interpolates through float64, which holds integers exactly only up to 2^53: integer
labels are warped as their consecutive indices (:func:`warp_ids`) and mapped back, so ids such
as MICrONS' 864691135000000001 (up to 2^64 - 1) keep their values and never merge."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import ndimage

from pytc_train.augment.base import IMAGE_KEY, Patch, PatchTransform, label_keys, map_spatial

__all__ = ["RandElasticd", "RandFlipd", "RandRot90d", "RandRotated", "rotation_margin",
           "warp_ids"]

_AXIS = {"z": -3, "y": -2, "x": -1}


def warp_ids(array: np.ndarray, warp: Any) -> np.ndarray:
    """Apply a nearest-neighbour ``warp`` (a function of one (Z, Y, X) array, see
    :func:`map_spatial`) to a label or mask array exactly: an integer array is relabelled to
    consecutive ids 0..n-1 (exact in float64), warped, and mapped back to its own ids; other
    dtypes are warped as they are."""
    if array.dtype.kind not in "iub":
        return map_spatial(array, warp)
    values, index = np.unique(array, return_inverse=True)
    small = np.int32 if len(values) < 2**31 else np.int64
    return values[map_spatial(index.reshape(array.shape).astype(small), warp)]


class RandFlipd(PatchTransform):
    """Flip each axis of ``axes`` (subset of "zyx") independently with probability ``prob``.

    ``params["axes"]``: the flipped axes (negative indices); :meth:`inverse` undoes the last call.
    """

    def __init__(self, prob: float, axes: str = "zyx") -> None:
        super().__init__(prob)
        self.axes = tuple(_AXIS[a] for a in axes)

    def randomize(self, data: Any) -> None:
        flipped = tuple(a for a in self.axes if self.R.rand() < self.prob)
        self.params = {"axes": flipped} if flipped else None
        self._do_transform = bool(flipped)

    def apply(self, d: Patch, params: dict[str, Any]) -> Patch:
        for key in [IMAGE_KEY, *label_keys(d)]:
            d[key] = np.ascontiguousarray(np.flip(d[key], params["axes"]))
        return d

    def inverse(self, d: Patch, params: dict[str, Any] | None = None) -> Patch:
        """Undo a flip (the last one by default): flipping again restores it exactly."""
        params = self.params if params is None else params
        return dict(d) if params is None else self.apply(dict(d), params)


class RandRot90d(PatchTransform):
    """Rotate by k·90° (k = 1..3) in the y/x plane (k = 2 only when y and x differ in size);
    first permute the axes in ``permute_axes`` (spatial indices 0..2 of axes with equal size and
    equal voxel size, e.g. ``(0, 1, 2)`` for a cube of isotropic voxels).

    ``params``: ``{"perm": (..3 spatial axes..), "k": int}``; :meth:`inverse` undoes it exactly.
    """

    def __init__(self, prob: float, permute_axes: tuple[int, ...] = ()) -> None:
        super().__init__(prob)
        self.permute_axes = tuple(sorted(permute_axes))

    def draw(self, d: Patch) -> dict[str, Any] | None:
        perm = [0, 1, 2]
        if len(self.permute_axes) > 1:
            shuffled = list(self.R.permutation(self.permute_axes))
            for a, b in zip(self.permute_axes, shuffled, strict=True):
                perm[a] = int(b)
        sizes_yx = (d[IMAGE_KEY].shape[-3:][perm[1]], d[IMAGE_KEY].shape[-3:][perm[2]])
        k = int(self.R.randint(1, 4)) if sizes_yx[0] == sizes_yx[1] else 2
        return {"perm": tuple(perm), "k": k}

    @staticmethod
    def _forward(a: np.ndarray, perm: tuple[int, ...], k: int) -> np.ndarray:
        lead = a.ndim - 3
        a = a.transpose(*range(lead), *(lead + p for p in perm))
        return np.ascontiguousarray(np.rot90(a, k, axes=(-2, -1)))

    def apply(self, d: Patch, params: dict[str, Any]) -> Patch:
        for key in [IMAGE_KEY, *label_keys(d)]:
            d[key] = self._forward(d[key], params["perm"], params["k"])
        return d

    def inverse(self, d: Patch, params: dict[str, Any] | None = None) -> Patch:
        """Undo a rotation (the last one by default) exactly."""
        params = self.params if params is None else params
        d = dict(d)
        if params is None:
            return d
        inv = tuple(int(i) for i in np.argsort(params["perm"]))
        for key in [IMAGE_KEY, *label_keys(d)]:
            a = np.rot90(d[key], -params["k"], axes=(-2, -1))
            lead = a.ndim - 3
            d[key] = np.ascontiguousarray(a.transpose(*range(lead), *(lead + p for p in inv)))
        return d


def rotation_margin(yx: tuple[int, int], max_degrees: float) -> tuple[int, int]:
    """Extra voxels in (y, x) (total) an input needs so that an output of size ``yx`` rotated
    by up to ``max_degrees`` in-plane samples only inside it (with 1 voxel to spare)."""
    t = math.radians(max_degrees)
    c, s = math.cos(t), abs(math.sin(t))
    hy, hx = (yx[0] - 1) / 2, (yx[1] - 1) / 2
    need_y = 2 * math.ceil(c * hy + s * hx - hy) + 2
    need_x = 2 * math.ceil(s * hy + c * hx - hx) + 2
    return need_y, need_x


class RandRotated(PatchTransform):
    """Rotate the y/x plane by an angle in [-max_degrees, max_degrees] about the patch centre,
    sampling inside a margin (``rotation_margin``) so no voxel is filled in.

    ``params["degrees"]``: the angle (counter-clockwise in (y, x) index space).
    """

    def __init__(self, prob: float, max_degrees: float, out_yx: tuple[int, int]) -> None:
        super().__init__(prob)
        self.max_degrees = max_degrees
        my, mx = rotation_margin(out_yx, max_degrees)
        self.margin_zyx = (0, my, mx)

    def draw(self, d: Patch) -> dict[str, Any] | None:
        return {"degrees": float(self.R.uniform(-self.max_degrees, self.max_degrees))}

    def apply(self, d: Patch, params: dict[str, Any]) -> Patch:
        t = math.radians(params["degrees"])
        rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
        in_shape = d[IMAGE_KEY].shape[-3:]
        out_yx = (in_shape[1] - self.margin_zyx[1], in_shape[2] - self.margin_zyx[2])
        c_out = (np.asarray(out_yx, float) - 1) / 2
        c_in = (np.asarray(in_shape[1:], float) - 1) / 2
        offset_yx = c_in - rot @ c_out
        matrix = np.eye(3)
        matrix[1:, 1:] = rot
        offset = np.array([0.0, *offset_yx])
        out_shape = (in_shape[0], *out_yx)

        def warp(order: int) -> Any:
            return lambda v: ndimage.affine_transform(v, matrix, offset, output_shape=out_shape,
                                                      order=order, mode="nearest")

        for key in label_keys(d):
            d[key] = warp_ids(d[key], warp(0))
        d[IMAGE_KEY] = map_spatial(d[IMAGE_KEY], warp(1)).astype(d[IMAGE_KEY].dtype, copy=False)
        return d


class RandElasticd(PatchTransform):
    """Smooth random in-plane displacement of at most ``magnitude`` voxels (Gaussian-smoothed
    white noise, ``sigma`` voxels), the same for every section; samples inside a margin of
    ``2·ceil(magnitude) + 2`` voxels in y and x.

    ``params["dy"], params["dx"]``: the displacement fields (Y, X) in voxels.
    """

    def __init__(self, prob: float, magnitude: float, sigma: float) -> None:
        super().__init__(prob)
        self.magnitude, self.sigma = magnitude, sigma
        m = 2 * math.ceil(magnitude) + 2
        self.margin_zyx = (0, m, m)

    def draw(self, d: Patch) -> dict[str, Any] | None:
        z, y, x = d[IMAGE_KEY].shape[-3:]
        out = (y - self.margin_zyx[1], x - self.margin_zyx[2])
        fields = []
        for _ in range(2):
            f = ndimage.gaussian_filter(self.R.standard_normal(out), self.sigma, mode="wrap")
            peak = float(np.abs(f).max())
            fields.append(f * (self.magnitude / peak) if peak > 0 else f)
        return {"dy": fields[0], "dx": fields[1]}

    def apply(self, d: Patch, params: dict[str, Any]) -> Patch:
        z, y, x = d[IMAGE_KEY].shape[-3:]
        dy, dx = params["dy"], params["dx"]
        oy, ox = self.margin_zyx[1] / 2, self.margin_zyx[2] / 2
        gy, gx = np.meshgrid(np.arange(dy.shape[0]), np.arange(dy.shape[1]), indexing="ij")
        coords = np.stack([gy + oy + dy, gx + ox + dx])

        def warp(order: int) -> Any:
            def one(v: np.ndarray) -> np.ndarray:
                return np.stack([ndimage.map_coordinates(s, coords, order=order, mode="nearest")
                                 for s in v])
            return one

        for key in label_keys(d):
            d[key] = warp_ids(d[key], warp(0))
        d[IMAGE_KEY] = map_spatial(d[IMAGE_KEY], warp(1)).astype(d[IMAGE_KEY].dtype, copy=False)
        return d
