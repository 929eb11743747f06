"""What every patch transform shares: the patch dict, key roles, and margin cropping.

A patch dict holds ``"image"`` (float, (C, Z, Y, X)), ``"label"`` (integer, (Z, Y, X)) and
optionally masks ((Z, Y, X) or (C, Z, Y, X)); every array whose last three axes match the
image's is transformed: the image with interpolation, every other key with nearest-neighbour
(labels and masks keep their values). Other entries pass through untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any

import numpy as np
from monai.transforms.transform import MapTransform, RandomizableTransform

__all__ = ["IMAGE_KEY", "PatchTransform", "center_crop", "label_keys", "map_spatial"]

IMAGE_KEY = "image"
Patch = dict[Hashable, Any]


def label_keys(d: Mapping[Hashable, Any]) -> list[Hashable]:
    """Keys other than the image whose arrays share the image's (Z, Y, X) shape."""
    shape = d[IMAGE_KEY].shape[-3:]
    return [k for k, v in d.items() if k != IMAGE_KEY and isinstance(v, np.ndarray)
            and v.ndim in (3, 4) and v.shape[-3:] == shape]


def map_spatial(array: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Apply ``fn`` to each (Z, Y, X) volume of a (Z, Y, X) or (C, Z, Y, X) array."""
    if array.ndim == 3:
        return fn(array)
    return np.stack([fn(a) for a in array])


def center_crop(array: np.ndarray, margin_zyx: tuple[int, int, int]) -> np.ndarray:
    """Remove ``margin // 2`` voxels before and ``margin - margin // 2`` after on each of the
    last three axes (the same centring the data module uses to read the margin)."""
    index = [slice(None)] * (array.ndim - 3)
    for m, n in zip(margin_zyx, array.shape[-3:], strict=True):
        index.append(slice(m // 2, n - (m - m // 2)))
    return array[tuple(index)]


class PatchTransform(RandomizableTransform, MapTransform):
    """A random transform of a patch dict. ``randomize`` draws everything (with ``self.R``)
    into ``self.params`` (``None`` when the transform does not fire); ``apply`` does the work.

    ``margin_zyx``: total voxels per axis the transform consumes (input = output + margin);
    when it does not fire it still crops its margin, so the output shape never varies.
    """

    margin_zyx: tuple[int, int, int] = (0, 0, 0)

    def __init__(self, prob: float) -> None:
        RandomizableTransform.__init__(self, prob)
        MapTransform.__init__(self, keys=(IMAGE_KEY, "label"), allow_missing_keys=True)
        self.params: dict[str, Any] | None = None
        self.set_random_state()  # an own RandomState, not the class-wide one

    def randomize(self, data: Any) -> None:
        super().randomize(None)
        self.params = self.draw(data) if self._do_transform else None
        if self.params is None:
            self._do_transform = False

    def draw(self, d: Patch) -> dict[str, Any] | None:
        """The random parameters of one application (``None`` to skip this patch)."""
        return {}

    def apply(self, d: Patch, params: dict[str, Any]) -> Patch:
        raise NotImplementedError

    def __call__(self, data: Mapping[Hashable, Any]) -> Patch:
        d = dict(data)
        self.randomize(d)
        if self.params is not None:
            return self.apply(d, self.params)
        if any(self.margin_zyx):
            for key in [IMAGE_KEY, *label_keys(d)]:
                d[key] = np.ascontiguousarray(center_crop(d[key], self.margin_zyx))
        return d
