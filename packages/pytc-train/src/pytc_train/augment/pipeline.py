"""The augmentation pipeline for one patch size: build it from an :class:`AugConfig`, seed it,
apply it to the patch dicts the data module samples.

The data module reads ``patch + margin`` voxels (the margin centred: ``margin // 2`` before,
the rest after) so that the transforms that consume voxels (rotation, elastic, misalignment,
missing sections) never invent any, and gets back exactly ``patch``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
from monai.transforms.transform import Randomizable
from monai.utils import MAX_SEED

from pytc_core.errors import UserError
from pytc_train.augment.base import IMAGE_KEY, PatchTransform, center_crop, label_keys
from pytc_train.augment.config import TRANSFORM_NAMES, AugConfig
from pytc_train.augment.em import (
    RandCutBlurd,
    RandCutNoised,
    RandDefocusd,
    RandMisalignmentd,
    RandMissingPartsd,
    RandMissingSectiond,
    RandMotionBlurd,
)
from pytc_train.augment.geometric import RandElasticd, RandFlipd, RandRot90d, RandRotated
from pytc_train.augment.intensity import (
    RandBrightnessd,
    RandContrastd,
    RandGammad,
    RandGaussianNoised,
)
from pytc_train.augment.mix import PartnerTransform, RandCopyPasted, RandMixupd

__all__ = ["PARTNER_IMAGE_KEY", "PARTNER_LABEL_KEY", "EMAugment", "build_augmentation",
           "resolve_for_patch"]

Zyx = tuple[int, int, int]
PARTNER_IMAGE_KEY = "partner_image"
PARTNER_LABEL_KEY = "partner_label"


def _crop_to(array: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Centre-crop the last three axes of ``array`` to ``shape`` (a partner patch)."""
    excess = tuple(s - n for s, n in zip(array.shape[-3:], shape, strict=True))
    if any(e < 0 for e in excess):
        raise ValueError(f"partner patch {array.shape} is smaller than {tuple(shape)}")
    return center_crop(array, excess) if any(excess) else array


class EMAugment(Randomizable):
    """Named patch transforms applied in order, from a ``patch + margin`` read to ``patch``.

    ``margin_zyx`` is per side: the input may be any (C, Z, Y, X) image at least
    ``patch + 2 * margin`` (the excess is centre-cropped first). Accepts numpy arrays or
    torch tensors (returned as the same type). ``set_random_state(seed)`` (once, or per
    item as pytc-train's data module does) determines everything drawn, except the partner
    of mixup / copy-paste when the dict carries none (``partner_image`` / ``partner_label``,
    wanted when ``needs_partner``): then an earlier patch is used.
    ``last_params()`` tells what fired on the last patch.
    """

    def __init__(self, transforms: Sequence[tuple[str, PatchTransform]], patch_zyx: Zyx,
                 consumed_zyx: Zyx, seed: int | None = None) -> None:
        self.transforms = list(transforms)
        self.patch_zyx = tuple(patch_zyx)
        #: voxels per axis (total) the transforms consume
        self.consumed_zyx = tuple(consumed_zyx)
        #: voxels per side the data module reads around the patch
        self.margin_zyx = tuple(-(-c // 2) for c in self.consumed_zyx)
        self.set_random_state(seed)

    @property
    def read_zyx(self) -> Zyx:
        """Shape of the (Z, Y, X) read the pipeline expects: patch + 2 · margin."""
        z, y, x = (p + 2 * m for p, m in zip(self.patch_zyx, self.margin_zyx, strict=True))
        return z, y, x

    @property
    def needs_partner(self) -> bool:
        """True when mixup or copy-paste is on: hand a second patch in as ``partner_image`` /
        ``partner_label`` (same read shape) to keep every item a function of its seed."""
        return any(isinstance(t, PartnerTransform) for _, t in self.transforms)

    def set_random_state(self, seed: int | None = None,
                         state: np.random.RandomState | None = None) -> EMAugment:
        """Seed this pipeline and (from it, like MONAI's Compose) every transform."""
        super().set_random_state(seed=seed, state=state)
        self._seed = seed
        for _, t in self.transforms:
            t.set_random_state(seed=int(self.R.randint(MAX_SEED, dtype="uint32")))
        return self

    def last_params(self) -> dict[str, Any]:
        """``{transform name: parameters}`` of the transforms that fired on the last patch."""
        return {name: t.params for name, t in self.transforms if t.params is not None}

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        torch_keys = {}
        for key, value in d.items():
            if type(value).__module__.startswith("torch"):
                torch_keys[key] = value
                d[key] = value.detach().cpu().numpy()
        partner = (d.pop(PARTNER_IMAGE_KEY, None), d.pop(PARTNER_LABEL_KEY, None))
        image = d[IMAGE_KEY]
        need = tuple(p + c for p, c in zip(self.patch_zyx, self.consumed_zyx, strict=True))
        if image.ndim != 4 or any(s < n for s, n in zip(image.shape[-3:], need, strict=True)):
            raise ValueError(f"augmentation expects an image (C, Z, Y, X) of at least "
                             f"{self.read_zyx} (patch {self.patch_zyx} + 2 x margin "
                             f"{self.margin_zyx}), got {image.shape}")
        excess = tuple(s - n for s, n in zip(image.shape[-3:], need, strict=True))
        if any(excess):
            for key in [IMAGE_KEY, *label_keys(d)]:
                d[key] = center_crop(d[key], excess)
        for _, t in self.transforms:
            if isinstance(t, PartnerTransform) and partner[0] is not None \
                    and partner[1] is not None:
                shape = d[IMAGE_KEY].shape[-3:]
                t.give_partner(_crop_to(np.asarray(partner[0]), shape),
                               _crop_to(np.asarray(partner[1]), shape))
            d = t(d)
        if tuple(d[IMAGE_KEY].shape[-3:]) != self.patch_zyx:  # pragma: no cover - a bug
            raise RuntimeError(f"augmentation returned {d[IMAGE_KEY].shape}, not {self.patch_zyx}")
        for key, original in torch_keys.items():
            if key in d and isinstance(d[key], np.ndarray):
                import torch

                d[key] = torch.from_numpy(np.ascontiguousarray(d[key])).to(original.device)
        return d

    def __repr__(self) -> str:
        names = ", ".join(name for name, _ in self.transforms)
        return f"EMAugment([{names}], patch={self.patch_zyx}, margin={self.margin_zyx})"


def _zyx(values: Sequence[int], what: str) -> Zyx:
    try:
        out = tuple(int(v) for v in values)
    except (TypeError, ValueError):
        raise UserError(f"{what} must be 3 integers (z, y, x), got {values!r}",
                        "e.g. 32,64,64") from None
    if len(out) != 3 or min(out) < 1 or any(isinstance(v, bool) for v in values):
        raise UserError(f"{what} must be 3 positive integers (z, y, x), got {values!r}",
                        "e.g. 32,64,64")
    return out


#: (transform, field) -> (the limit for a patch (z, y, x), its formula, the smallest useful value)
_PATCH_LIMITS: dict[tuple[str, str], tuple[Any, str, float]] = {
    ("misalignment", "max_shift"): (lambda z, yx: yx // 4, "min(y, x) / 4", 1),
    ("missing_section", "max_sections"): (lambda z, yx: z // 4, "z / 4", 1),
    ("elastic", "magnitude"): (lambda z, yx: yx / 4, "min(y, x) / 4", 0.5),
    ("cut_blur", "max_factor"): (lambda z, yx: z // 2, "z / 2", 2),
    ("motion_blur", "length"): (lambda z, yx: yx, "min(y, x)", 2),
    ("missing_parts", "max_sections"): (lambda z, yx: z, "z", 1),
    ("motion_blur", "max_sections"): (lambda z, yx: z, "z", 1),
    ("defocus", "max_sections"): (lambda z, yx: z, "z", 1),
}


def resolve_for_patch(cfg: AugConfig, patch_zyx: Sequence[int]) -> AugConfig:
    """``cfg.resolved()`` fitted to the patch: a value the user set that the patch cannot take
    is a UserError; a preset value is lowered to the patch's limit (the transform turned off
    when even the smallest value does not fit). This is what runs and what a run saves."""
    if not isinstance(cfg, AugConfig):
        raise UserError(f"augmentation config must be an AugConfig, got {type(cfg).__name__}",
                        "build it with AugConfig(...) or resolve_config")
    z, y, x = _zyx(patch_zyx, "patch")
    yx = min(y, x)
    r: Any = cfg.resolved()  # every field set
    for (name, key), (limit_of, formula, smallest) in _PATCH_LIMITS.items():
        table = getattr(r, name)
        value, limit = getattr(table, key), limit_of(z, yx)
        if table.prob == 0 or value <= limit:
            continue
        if getattr(getattr(cfg, name), key) is not None:  # the user's own value
            raise UserError(f"patch {z},{y},{x} is too small for aug.{name}.{key} = {value} "
                            f"(at most {formula} = {limit:g})",
                            f"lower aug.{name}.{key} or use a larger --patch")
        fitted = {"prob": 0.0} if limit < smallest else {key: type(value)(limit)}
        r = dataclasses.replace(r, **{name: dataclasses.replace(table, **fitted)})
    if r.misalignment.prob > 0 and z < 2:
        if cfg.misalignment.prob is not None:
            raise UserError(f"patch {z},{y},{x} has one section: misalignment needs 2 or more",
                            "set aug.misalignment.prob = 0 or use a larger --patch")
        r = dataclasses.replace(r, misalignment=dataclasses.replace(r.misalignment, prob=0.0))
    return r


def _permute_axes(patch: Zyx, voxel_size: Sequence[float] | None) -> tuple[int, ...]:
    """Spatial axes that may be permuted: equal patch size and equal voxel size as z's or y's."""
    if voxel_size is None:
        return ()
    groups: dict[tuple[int, float], list[int]] = {}
    for axis, (n, v) in enumerate(zip(patch, voxel_size, strict=True)):
        groups.setdefault((n, float(v)), []).append(axis)
    best = max(groups.values(), key=len)
    return tuple(best) if len(best) > 1 and 0 in best else ()


def build_augmentation(cfg: AugConfig, patch_zyx: Sequence[int],
                       voxel_size_zyx: Sequence[float] | None = None, seed: int | None = None
                       ) -> tuple[EMAugment | None, Zyx]:
    """The pipeline for ``cfg`` and a ``patch_zyx`` output, and the margin to read.

    ``margin_zyx``: voxels per side the data module reads around the patch (``box.grow``);
    the pipeline takes any image at least ``patch + 2 · margin`` and returns ``patch``. ``voxel_size_zyx`` (nm) enables axis permutation when z
    has the same voxel size and patch size as y/x. Returns ``(None, (0, 0, 0))`` when
    nothing is enabled (preset ``none``). Preset values too large for the patch are lowered
    (:func:`resolve_for_patch`); user-set ones raise UserError.
    """
    patch = _zyx(patch_zyx, "patch")
    r: Any = resolve_for_patch(cfg, patch)  # every field set
    if voxel_size_zyx is not None and len(tuple(voxel_size_zyx)) != 3:
        raise UserError(f"voxel size must be 3 numbers (z, y, x), got {voxel_size_zyx!r}",
                        "e.g. 40,8,8")

    # from the output backwards: the margin each consumer needs depends on its output shape
    enabled = [n for n in TRANSFORM_NAMES if getattr(r, n).prob > 0]
    if not enabled:
        return None, (0, 0, 0)
    consumers = {"rotate", "elastic", "misalignment", "missing_section"}
    shape = list(patch)
    built: dict[str, PatchTransform] = {}
    for name in reversed([n for n in enabled if n in consumers]):
        t = _make(name, r, tuple(shape), patch, voxel_size_zyx)
        built[name] = t
        shape = [s + m for s, m in zip(shape, t.margin_zyx, strict=True)]
    transforms = []
    for name in enabled:
        t = built.get(name) or _make(name, r, patch, patch, voxel_size_zyx)
        transforms.append((name, t))
    consumed = tuple(s - p for s, p in zip(shape, patch, strict=True))
    pipeline = EMAugment(transforms, patch, consumed, seed=seed)  # type: ignore[arg-type]
    return pipeline, pipeline.margin_zyx  # type: ignore[return-value]


def _make(name: str, r: Any, out_zyx: tuple[int, ...], patch: Zyx,
          voxel_size: Sequence[float] | None) -> PatchTransform:
    c = getattr(r, name)
    p = c.prob
    if name == "rotate":
        return RandRotated(p, c.max_degrees, (out_zyx[1], out_zyx[2]))
    if name == "elastic":
        return RandElasticd(p, c.magnitude, c.sigma)
    if name == "misalignment":
        return RandMisalignmentd(p, c.max_shift, c.stack_prob)
    if name == "missing_section":
        return RandMissingSectiond(p, c.max_sections)
    if name == "flip":
        return RandFlipd(p, c.axes)
    if name == "rot90":
        return RandRot90d(p, _permute_axes(patch, voxel_size) if c.permute else ())
    if name == "copy_paste":
        return RandCopyPasted(p, c.min_voxels)
    if name == "mixup":
        return RandMixupd(p, c.max_ratio)
    if name == "missing_parts":
        return RandMissingPartsd(p, c.max_sections, c.max_fraction, c.fill, c.mask_loss)
    if name == "motion_blur":
        return RandMotionBlurd(p, c.max_sections, c.length)
    if name == "defocus":
        return RandDefocusd(p, c.max_sections, c.max_sigma)
    if name == "cut_blur":
        return RandCutBlurd(p, c.max_factor, c.whole_prob)
    if name == "cut_noise":
        return RandCutNoised(p, c.max_std)
    if name == "contrast":
        return RandContrastd(p, c.max_delta, c.per_section)
    if name == "brightness":
        return RandBrightnessd(p, c.max_delta, c.per_section)
    if name == "gamma":
        return RandGammad(p, c.max_log_gamma)
    if name == "noise":
        return RandGaussianNoised(p, c.max_std)
    raise AssertionError(name)  # pragma: no cover



