"""Two-patch transforms: mixup and copy-paste. The partner is the patch handed in with
:meth:`give_partner` (the pipeline does this with the dict's ``partner_image`` /
``partner_label``, so a data module that reads one keeps every item a function of its seed),
else one of the last few patches this transform saw (a small buffer, per DataLoader worker)."""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from pytc_train.augment.base import IMAGE_KEY, Patch, PatchTransform

__all__ = ["PartnerTransform", "RandCopyPasted", "RandMixupd", "paste_object"]

LABEL_KEY = "label"


class PartnerTransform(PatchTransform):
    """Keeps the last ``buffer`` (image, label) pairs it saw (before its own change)."""

    def __init__(self, prob: float, buffer: int = 4) -> None:
        super().__init__(prob)
        self.partners: deque[tuple[np.ndarray, np.ndarray]] = deque(maxlen=buffer)
        self.given: tuple[np.ndarray, np.ndarray] | None = None

    def give_partner(self, image: np.ndarray, label: np.ndarray) -> None:
        """Use this (image, label) as the partner of the next call only."""
        self.given = (image, label)

    def partner(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The partner of ``params["partner"]`` (-1: the one given for this call)."""
        if index < 0:
            assert self.given is not None
            return self.given
        return self.partners[index]

    def push_partner(self, image: np.ndarray, label: np.ndarray) -> None:
        """Offer a patch as a future partner (copied)."""
        self.partners.append((np.array(image, copy=True), np.array(label, copy=True)))

    def _partner(self, d: Patch) -> int | None:
        if self.given is not None:
            img, lab = self.given
            ok = img.shape == d[IMAGE_KEY].shape and lab.shape == d[LABEL_KEY].shape
            return -1 if ok else None
        fits = [i for i, (img, lab) in enumerate(self.partners)
                if img.shape == d[IMAGE_KEY].shape and lab.shape == d[LABEL_KEY].shape]
        return int(self.R.choice(fits)) if fits else None

    def __call__(self, data: Any) -> Patch:
        image, label = data[IMAGE_KEY], data.get(LABEL_KEY)
        try:
            d = super().__call__(data)
        finally:
            given, self.given = self.given, None
        if label is not None and given is None:
            self.push_partner(image, label)
        return d


class RandMixupd(PartnerTransform):
    """``image = (1 - r) · image + r · partner_image`` with r in [0.05, max_ratio]; the labels
    stay those of the patch (the partner is a faint distraction, PyTC-style).
    ``params``: ``{"ratio": r, "partner": buffer index}``."""

    def __init__(self, prob: float, max_ratio: float, buffer: int = 4) -> None:
        super().__init__(prob, buffer)
        self.max_ratio = max_ratio

    def draw(self, d: Patch) -> dict[str, Any] | None:
        partner = self._partner(d) if LABEL_KEY in d else None
        if partner is None:
            return None
        return {"ratio": float(self.R.uniform(0.05, self.max_ratio)), "partner": partner}

    def apply(self, d: Patch, params: dict[str, Any]) -> Patch:
        other, _ = self.partner(params["partner"])
        r = params["ratio"]
        image = d[IMAGE_KEY]
        d[IMAGE_KEY] = ((1 - r) * image + r * other).astype(image.dtype, copy=False)
        return d


def paste_object(image: np.ndarray, label: np.ndarray, src_image: np.ndarray,
                 src_label: np.ndarray, src_id: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Copy object ``src_id`` of (src_image, src_label) into (image, label) at the same place:
    its voxels take the source's intensities and a label id not used in ``label``.

    Arrays: image (C, Z, Y, X), label (Z, Y, X). Returns (image, label, new_id) (new arrays).
    """
    region = src_label == src_id
    label = label.copy()
    image = image.copy()
    present = np.unique(label[~region])
    new_id = int(present.max()) + 1 if present.size else 1
    if new_id > np.iinfo(label.dtype).max:  # dtype full at the top: take the smallest free id
        free = np.setdiff1d(np.arange(1, present.size + 2), present)
        new_id = int(free[0])
    new_id = max(new_id, 1)
    label[region] = new_id
    image[:, region] = src_image[:, region]
    return image, label, new_id


class RandCopyPasted(PartnerTransform):
    """Paste one object (label != 0, at least ``min_voxels``) of a partner patch, image and
    label, at its place into this patch, under a label id unique in this patch.
    ``params``: ``{"partner": index, "source_id": id}``; after the call ``self.new_id``."""

    def __init__(self, prob: float, min_voxels: int, buffer: int = 4) -> None:
        super().__init__(prob, buffer)
        self.min_voxels = min_voxels
        self.new_id: int | None = None

    def draw(self, d: Patch) -> dict[str, Any] | None:
        partner = self._partner(d) if LABEL_KEY in d else None
        if partner is None:
            return None
        ids, counts = np.unique(self.partner(partner)[1], return_counts=True)
        big = ids[(counts >= self.min_voxels) & (ids != 0)]
        if big.size == 0:
            return None
        return {"partner": partner, "source_id": int(self.R.choice(big))}

    def apply(self, d: Patch, params: dict[str, Any]) -> Patch:
        src_image, src_label = self.partner(params["partner"])
        image, label, self.new_id = paste_object(d[IMAGE_KEY], d[LABEL_KEY], src_image,
                                                 src_label, params["source_id"])
        d[IMAGE_KEY], d[LABEL_KEY] = image, label
        return d
