"""EM acquisition artefacts: misaligned, missing and partly missing sections, motion blur,
defocus, cut-blur (z resolution loss) and cut-noise. Axes (z, y, x); lengths in voxels.

Misalignment and missing sections change what the labels see (labels follow the image);
the others touch the image only (missing parts can also mask the blanked region out of the
loss through the ``"mask"`` key).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from pytc_train.augment.base import IMAGE_KEY, Patch, PatchTransform, label_keys

__all__ = [
    "LOSS_MASK_KEY",
    "RandCutBlurd",
    "RandCutNoised",
    "RandDefocusd",
    "RandMisalignmentd",
    "RandMissingPartsd",
    "RandMissingSectiond",
    "RandMotionBlurd",
    "downsample_upsample_z",
]

#: the key of the (Z, Y, X) uint8 loss mask (0 = leave out of the loss) missing parts writes
LOSS_MASK_KEY = "mask"


class RandMisalignmentd(PatchTransform):
    """Translate one section, or (probability ``stack_prob``) every section from one on, by an
    integer (dy, dx) with |dy|, |dx| <= ``max_shift``, image and labels alike.

    Consumes a margin of ``2·max_shift`` in y and x: with ``m = max_shift`` the output is
    ``out[z, y, x] = in[z, m + y - dy, m + x - dx]`` for shifted sections and
    ``in[z, m + y, m + x]`` for the others, so every output voxel is real data.
    ``params``: ``{"sections": (z0, z1), "offset": (dy, dx)}`` (sections z0 <= z < z1 moved).
    """

    def __init__(self, prob: float, max_shift: int, stack_prob: float) -> None:
        super().__init__(prob)
        self.max_shift, self.stack_prob = max_shift, stack_prob
        self.margin_zyx = (0, 2 * max_shift, 2 * max_shift)

    def draw(self, d: Patch) -> dict[str, Any] | None:
        z = d[IMAGE_KEY].shape[-3]
        m = self.max_shift
        while True:
            dy, dx = (int(v) for v in self.R.randint(-m, m + 1, size=2))
            if dy or dx:
                break
        if z > 1 and self.R.rand() < self.stack_prob:
            z0 = int(self.R.randint(1, z))
            sections = (z0, z)
        else:
            z0 = int(self.R.randint(0, z))
            sections = (z0, z0 + 1)
        return {"sections": sections, "offset": (dy, dx)}

    def apply(self, d: Patch, params: dict[str, Any]) -> Patch:
        m = self.max_shift
        (z0, z1), (dy, dx) = params["sections"], params["offset"]
        for key in [IMAGE_KEY, *label_keys(d)]:
            a = d[key]
            y, x = a.shape[-2] - 2 * m, a.shape[-1] - 2 * m
            out = a[..., m:m + y, m:m + x].copy()
            out[..., z0:z1, :, :] = a[..., z0:z1, m - dy:m - dy + y, m - dx:m - dx + x]
            d[key] = out
        return d


class RandMissingSectiond(PatchTransform):
    """Delete 1..max_sections sections and close the gap (as a lost section looks after
    alignment), image and labels alike; never zero-fills.

    Consumes ``max_sections`` extra sections: the output takes ``Z + n`` consecutive input
    sections (n deleted ones strictly inside them), so it has exactly Z sections.
    ``params``: ``{"deleted": [input z...], "kept": [input z for each output section]}``.
    """

    def __init__(self, prob: float, max_sections: int) -> None:
        super().__init__(prob)
        self.max_sections = max_sections
        self.margin_zyx = (max_sections, 0, 0)

    def draw(self, d: Patch) -> dict[str, Any] | None:
        z_in = d[IMAGE_KEY].shape[-3]
        k = self.max_sections
        z_out = z_in - k
        n = int(self.R.randint(1, k + 1))
        start = int(self.R.randint(0, k - n + 1))
        interior = np.arange(start + 1, start + z_out + n - 1)
        deleted = sorted(int(i) for i in self.R.choice(interior, size=n, replace=False))
        kept = [i for i in range(start, start + z_out + n) if i not in deleted]
        return {"deleted": deleted, "kept": kept}

    def apply(self, d: Patch, params: dict[str, Any]) -> Patch:
        kept = np.asarray(params["kept"])
        for key in [IMAGE_KEY, *label_keys(d)]:
            d[key] = np.ascontiguousarray(np.take(d[key], kept, axis=-3))
        return d


def _pick_sections(R: np.random.RandomState, z: int, max_sections: int) -> list[int]:
    n = int(R.randint(1, min(max_sections, z) + 1))
    return sorted(int(i) for i in R.choice(z, size=n, replace=False))


class RandMissingPartsd(PatchTransform):
    """Blank irregular regions (smooth-noise blobs covering up to ``max_fraction`` of the
    section) of 1..max_sections sections to ``fill``; labels unchanged. With ``mask_loss``
    the dict always gets a ``"mask"`` (uint8 (Z, Y, X), 0 in blanked voxels) to multiply into
    the loss mask (also when the transform does not fire, so every batch has the key).

    ``params``: ``{"sections": [z...], "regions": bool (n, Y, X)}``.
    """

    def __init__(self, prob: float, max_sections: int, max_fraction: float, fill: float,
                 mask_loss: bool) -> None:
        super().__init__(prob)
        self.max_sections, self.max_fraction = max_sections, max_fraction
        self.fill, self.mask_loss = fill, mask_loss

    def draw(self, d: Patch) -> dict[str, Any] | None:
        z, y, x = d[IMAGE_KEY].shape[-3:]
        sections = _pick_sections(self.R, z, self.max_sections)
        regions = []
        for _ in sections:
            noise = ndimage.gaussian_filter(self.R.standard_normal((y, x)), max(y, x) / 10)
            fraction = self.R.uniform(self.max_fraction / 4, self.max_fraction)
            regions.append(noise > np.quantile(noise, 1 - fraction))
        return {"sections": sections, "regions": np.stack(regions)}

    def __call__(self, data: Any) -> Patch:
        d = super().__call__(data)
        if self.mask_loss and LOSS_MASK_KEY not in d:
            d[LOSS_MASK_KEY] = np.ones(d[IMAGE_KEY].shape[-3:], np.uint8)
        return d

    def apply(self, d: Patch, params: dict[str, Any]) -> Patch:
        image = d[IMAGE_KEY].copy()
        for z, region in zip(params["sections"], params["regions"], strict=True):
            image[:, z][:, region] = self.fill
        d[IMAGE_KEY] = image
        if self.mask_loss:
            old = d.get(LOSS_MASK_KEY)
            mask = np.ones(image.shape[-3:], np.uint8) if old is None else old.copy()
            for z, region in zip(params["sections"], params["regions"], strict=True):
                mask[..., z, :, :][..., region] = 0
            d[LOSS_MASK_KEY] = mask
        return d


class RandMotionBlurd(PatchTransform):
    """Blur 1..max_sections sections along y or x (a line kernel of ``length`` voxels), as a
    section imaged while the stage drifted. ``params``: ``{"sections": [...], "axes": [-2|-1]}``."""

    def __init__(self, prob: float, max_sections: int, length: int) -> None:
        super().__init__(prob)
        self.max_sections, self.length = max_sections, length

    def draw(self, d: Patch) -> dict[str, Any] | None:
        sections = _pick_sections(self.R, d[IMAGE_KEY].shape[-3], self.max_sections)
        return {"sections": sections, "axes": [int(self.R.choice([-2, -1])) for _ in sections]}

    def apply(self, d: Patch, params: dict[str, Any]) -> Patch:
        image = d[IMAGE_KEY].copy()
        for z, axis in zip(params["sections"], params["axes"], strict=True):
            image[:, z] = ndimage.uniform_filter1d(image[:, z], self.length, axis=axis,
                                                   mode="reflect")
        d[IMAGE_KEY] = image
        return d


class RandDefocusd(PatchTransform):
    """Gaussian-blur 1..max_sections sections in y/x with sigma in [0.5, max_sigma] voxels.
    ``params``: ``{"sections": [...], "sigmas": [...]}``."""

    def __init__(self, prob: float, max_sections: int, max_sigma: float) -> None:
        super().__init__(prob)
        self.max_sections, self.max_sigma = max_sections, max_sigma

    def draw(self, d: Patch) -> dict[str, Any] | None:
        sections = _pick_sections(self.R, d[IMAGE_KEY].shape[-3], self.max_sections)
        return {"sections": sections,
                "sigmas": [float(self.R.uniform(0.5, self.max_sigma)) for _ in sections]}

    def apply(self, d: Patch, params: dict[str, Any]) -> Patch:
        image = d[IMAGE_KEY].copy()
        for z, sigma in zip(params["sections"], params["sigmas"], strict=True):
            for c in range(image.shape[0]):
                image[c, z] = ndimage.gaussian_filter(image[c, z], sigma, mode="reflect")
        d[IMAGE_KEY] = image
        return d


def downsample_upsample_z(block: np.ndarray, factor: int) -> np.ndarray:
    """Average groups of ``factor`` sections (thick sections), then interpolate linearly back
    to every section (clamped at the ends). ``block``: (..., Z, Y, X); same shape out."""
    z = block.shape[-3]
    groups = -(-z // factor)
    pad = groups * factor - z
    padded = np.concatenate([block, np.repeat(block[..., -1:, :, :], pad, axis=-3)], axis=-3) \
        if pad else block
    coarse = padded.reshape(*block.shape[:-3], groups, factor, *block.shape[-2:]).mean(axis=-3)
    centers = (np.arange(groups) * factor + (factor - 1) / 2).clip(max=z - 1)
    pos = np.interp(np.arange(z), centers, np.arange(groups))
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, groups - 1)
    w = (pos - lo).reshape(-1, 1, 1)
    out = np.take(coarse, lo, axis=-3) * (1 - w) + np.take(coarse, hi, axis=-3) * w
    return out.astype(block.dtype, copy=False)


def _random_box(R: np.random.RandomState, shape: tuple[int, ...], min_z: int = 1) -> tuple:
    """A random sub-box of ``shape`` (z, y, x) with 30..70 % of each side (z at least min_z)."""
    box = []
    for i, n in enumerate(shape):
        size = max(int(round(n * R.uniform(0.3, 0.7))), min_z if i == 0 else 1, 1)
        size = min(size, n)
        start = int(R.randint(0, n - size + 1))
        box.append((start, start + size))
    return tuple(box)


class RandCutBlurd(PatchTransform):
    """Lose z resolution: average groups of f sections (f = 2..max_factor) and interpolate back,
    in a random sub-box or (probability ``whole_prob``) the whole patch; labels unchanged.
    ``params``: ``{"box": ((z0, z1), (y0, y1), (x0, x1)), "factor": f}``."""

    def __init__(self, prob: float, max_factor: int, whole_prob: float) -> None:
        super().__init__(prob)
        self.max_factor, self.whole_prob = max_factor, whole_prob

    def draw(self, d: Patch) -> dict[str, Any] | None:
        shape = d[IMAGE_KEY].shape[-3:]
        factor = int(self.R.randint(2, self.max_factor + 1))
        if self.R.rand() < self.whole_prob:
            box = tuple((0, n) for n in shape)
        else:
            box = _random_box(self.R, shape, min_z=min(2 * factor, shape[0]))
        return {"box": box, "factor": factor}

    def apply(self, d: Patch, params: dict[str, Any]) -> Patch:
        image = d[IMAGE_KEY].copy()
        (z0, z1), (y0, y1), (x0, x1) = params["box"]
        image[:, z0:z1, y0:y1, x0:x1] = downsample_upsample_z(image[:, z0:z1, y0:y1, x0:x1],
                                                              params["factor"])
        d[IMAGE_KEY] = image
        return d


class RandCutNoised(PatchTransform):
    """Gaussian noise (std in [max_std/2, max_std]) inside a random sub-box; labels unchanged.
    ``params``: ``{"box": ..., "std": s}``."""

    def __init__(self, prob: float, max_std: float) -> None:
        super().__init__(prob)
        self.max_std = max_std

    def draw(self, d: Patch) -> dict[str, Any] | None:
        if self.max_std <= 0:
            return None
        return {"box": _random_box(self.R, d[IMAGE_KEY].shape[-3:]),
                "std": float(self.R.uniform(self.max_std / 2, self.max_std))}

    def apply(self, d: Patch, params: dict[str, Any]) -> Patch:
        image = d[IMAGE_KEY].copy()
        (z0, z1), (y0, y1), (x0, x1) = params["box"]
        region = image[:, z0:z1, y0:y1, x0:x1]
        noise = self.R.standard_normal(region.shape).astype(image.dtype) * params["std"]
        image[:, z0:z1, y0:y1, x0:x1] = region + noise
        d[IMAGE_KEY] = image
        return d
