"""EM augmentations for pytc-train: MONAI dict transforms over patch dicts, named presets.

``AugConfig`` (the ``[aug]`` table) imports light; the transforms (MONAI, SciPy) load on first
use. ``build_augmentation(cfg, patch_zyx) -> (transform, margin_zyx)`` is the data module's
entry point.
"""

from pytc_core.lazy import lazy_exports
from pytc_train.augment.config import PRESETS, TRANSFORM_NAMES, AugConfig, preset_names

_EXPORTS = {
    "EMAugment": "pipeline",
    "PARTNER_IMAGE_KEY": "pipeline",
    "PARTNER_LABEL_KEY": "pipeline",
    "PartnerTransform": "mix",
    "build_augmentation": "pipeline",
    "resolve_for_patch": "pipeline",
    "LOSS_MASK_KEY": "em",
    "RandCutBlurd": "em",
    "RandCutNoised": "em",
    "RandDefocusd": "em",
    "RandMisalignmentd": "em",
    "RandMissingPartsd": "em",
    "RandMissingSectiond": "em",
    "RandMotionBlurd": "em",
    "downsample_upsample_z": "em",
    "RandElasticd": "geometric",
    "RandFlipd": "geometric",
    "RandRot90d": "geometric",
    "RandRotated": "geometric",
    "rotation_margin": "geometric",
    "RandBrightnessd": "intensity",
    "RandContrastd": "intensity",
    "RandGammad": "intensity",
    "RandGaussianNoised": "intensity",
    "RandCopyPasted": "mix",
    "RandMixupd": "mix",
    "paste_object": "mix",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = ["PRESETS", "TRANSFORM_NAMES", "AugConfig", "preset_names", *_EXPORTS]
