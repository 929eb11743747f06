"""``[aug]``: the augmentation config (a preset plus per-transform overrides), light to import.

A preset (``light``, ``realistic`` (default), ``heavy``, ``superres``, ``instance``, ``none``)
sets every transform's probability and parameters; any field set in a transform's table
(``[aug.misalignment] prob = 0.3`` or ``--set aug.misalignment.prob=0.3``) wins over the preset.
Fields left unset are ``None`` and come from the preset; :meth:`AugConfig.resolved` fills them
in, which is what a run saves. Lengths are in voxels, angles in degrees, intensities in the
units of the normalised image (``[0, 1]`` for uint8 raw).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from pytc_core.errors import UserError, closest_match

__all__ = [
    "PRESETS",
    "TRANSFORM_NAMES",
    "AugConfig",
    "preset_names",
]

PresetName = Literal["none", "light", "realistic", "heavy", "superres", "instance"]


def _check(name: str, key: str, value: Any, kind: str, lo: float | None = None,
           hi: float | None = None, lo_open: bool = False) -> None:
    """Type and range check of one field; ``None`` (from the preset) passes."""
    if value is None:
        return
    where = f"aug.{name}.{key}"
    if kind == "bool":
        if not isinstance(value, bool):
            raise UserError(f"config key '{where}' must be true or false, got {value!r}",
                            "fix the value in the [aug] table or on the command line")
        return
    if kind == "str":
        if not isinstance(value, str):
            raise UserError(f"config key '{where}' must be a string, got {value!r}",
                            "fix the value in the [aug] table or on the command line")
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            kind == "int" and not isinstance(value, int)):
        raise UserError(f"config key '{where}' must be {'an integer' if kind == 'int' else 'a number'}"
                        f", got {value!r}", "fix the value in the [aug] table or on the command line")
    if value != value:  # NaN
        raise UserError(f"config key '{where}' is NaN", "give a number")
    bad_lo = lo is not None and (value <= lo if lo_open else value < lo)
    bad_hi = hi is not None and value > hi
    if bad_lo or bad_hi:
        lo_s = "-inf" if lo is None else f"{lo:g}"
        hi_s = "inf" if hi is None else f"{hi:g}"
        interval = f"{'(' if lo_open else '['}{lo_s}, {hi_s}]"
        raise UserError(f"config key '{where}' = {value!r} is outside {interval}",
                        "give a value in that range")


@dataclass(frozen=True)
class _Transform:
    """Fields every transform has. ``prob``: probability the transform fires on a patch."""

    prob: float | None = None

    #: field name -> (kind, lo, hi, lo_open); filled by subclasses
    _limits = {"prob": ("float", 0.0, 1.0, False)}

    def __post_init__(self) -> None:
        name = _NAME_OF.get(type(self).__name__, type(self).__name__)
        for f in dataclasses.fields(self):
            kind, lo, hi, lo_open = self._limits[f.name]
            _check(name, f.name, getattr(self, f.name), kind, lo, hi, lo_open)


def _with_prob(**extra: tuple) -> dict[str, tuple]:
    return {"prob": ("float", 0.0, 1.0, False), **extra}


@dataclass(frozen=True)
class FlipConfig(_Transform):
    """Flip each of the axes in ``axes`` (any of "zyx") with probability ``prob``."""

    axes: str | None = None
    _limits = _with_prob(axes=("str", None, None, False))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.axes is not None and (not self.axes or set(self.axes) - set("zyx")
                                      or len(set(self.axes)) != len(self.axes)):
            raise UserError(f"config key 'aug.flip.axes' = {self.axes!r} must name distinct "
                            "axes among z, y, x", "e.g. axes = \"zyx\" or \"yx\"")


@dataclass(frozen=True)
class Rot90Config(_Transform):
    """Rotate by k·90° in the y/x plane; with ``permute``, also permute axes of equal size and
    equal (isotropic) voxel size."""

    permute: bool | None = None
    _limits = _with_prob(permute=("bool", None, None, False))


@dataclass(frozen=True)
class RotateConfig(_Transform):
    """Rotate in the y/x plane by an angle in [-max_degrees, max_degrees] (reads a margin)."""

    max_degrees: float | None = None
    _limits = _with_prob(max_degrees=("float", 0.0, 45.0, True))


@dataclass(frozen=True)
class ElasticConfig(_Transform):
    """Smooth in-plane displacement (same for every section) of at most ``magnitude`` voxels,
    smoothed over ``sigma`` voxels (reads a margin)."""

    magnitude: float | None = None
    sigma: float | None = None
    _limits = _with_prob(magnitude=("float", 0.0, 64.0, True), sigma=("float", 0.0, None, True))


@dataclass(frozen=True)
class ContrastConfig(_Transform):
    """Scale around the mean by a factor in [1 - max_delta, 1 + max_delta]."""

    max_delta: float | None = None
    per_section: bool | None = None
    _limits = _with_prob(max_delta=("float", 0.0, 1.0, False),
                      per_section=("bool", None, None, False))


@dataclass(frozen=True)
class BrightnessConfig(_Transform):
    """Add an offset in [-max_delta, max_delta]."""

    max_delta: float | None = None
    per_section: bool | None = None
    _limits = _with_prob(max_delta=("float", 0.0, 1.0, False),
                      per_section=("bool", None, None, False))


@dataclass(frozen=True)
class GammaConfig(_Transform):
    """Gamma correction with log(gamma) in [-max_log_gamma, max_log_gamma] (on the min-max range)."""

    max_log_gamma: float | None = None
    _limits = _with_prob(max_log_gamma=("float", 0.0, 2.0, False))


@dataclass(frozen=True)
class NoiseConfig(_Transform):
    """Additive Gaussian noise of standard deviation up to ``max_std``."""

    max_std: float | None = None
    _limits = _with_prob(max_std=("float", 0.0, 1.0, False))


@dataclass(frozen=True)
class MisalignmentConfig(_Transform):
    """Translate one section (or, with probability ``stack_prob``, every section above one) in
    y/x by up to ``max_shift`` voxels; labels follow (reads a margin of 2·max_shift in y and x)."""

    max_shift: int | None = None
    stack_prob: float | None = None
    _limits = _with_prob(max_shift=("int", 1, None, False), stack_prob=("float", 0.0, 1.0, False))


@dataclass(frozen=True)
class MissingSectionConfig(_Transform):
    """Delete 1..max_sections sections and close the gap, image and labels alike
    (reads max_sections extra sections)."""

    max_sections: int | None = None
    _limits = _with_prob(max_sections=("int", 1, None, False))


@dataclass(frozen=True)
class MissingPartsConfig(_Transform):
    """Blank an irregular region (up to ``max_fraction`` of the area) of 1..max_sections
    sections to ``fill``; with ``mask_loss`` the region is excluded from the loss."""

    max_sections: int | None = None
    max_fraction: float | None = None
    fill: float | None = None
    mask_loss: bool | None = None
    _limits = _with_prob(max_sections=("int", 1, None, False),
                      max_fraction=("float", 0.0, 1.0, True), fill=("float", None, None, False),
                      mask_loss=("bool", None, None, False))


@dataclass(frozen=True)
class MotionBlurConfig(_Transform):
    """Blur 1..max_sections sections along y or x with a line of ``length`` voxels."""

    max_sections: int | None = None
    length: int | None = None
    _limits = _with_prob(max_sections=("int", 1, None, False), length=("int", 2, None, False))


@dataclass(frozen=True)
class DefocusConfig(_Transform):
    """Gaussian-blur 1..max_sections sections in y/x with sigma in [0.5, max_sigma] voxels."""

    max_sections: int | None = None
    max_sigma: float | None = None
    _limits = _with_prob(max_sections=("int", 1, None, False),
                      max_sigma=("float", 0.5, None, False))


@dataclass(frozen=True)
class CutBlurConfig(_Transform):
    """Down- then up-sample along z by a factor 2..max_factor: a random sub-volume, or with
    probability ``whole_prob`` the whole patch (super-resolution training)."""

    max_factor: int | None = None
    whole_prob: float | None = None
    _limits = _with_prob(max_factor=("int", 2, None, False), whole_prob=("float", 0.0, 1.0, False))


@dataclass(frozen=True)
class CutNoiseConfig(_Transform):
    """Gaussian noise of std up to ``max_std`` inside a random sub-volume."""

    max_std: float | None = None
    _limits = _with_prob(max_std=("float", 0.0, 1.0, False))


@dataclass(frozen=True)
class MixupConfig(_Transform):
    """Blend the image with an earlier patch's image at weight in [0.05, max_ratio]; labels stay."""

    max_ratio: float | None = None
    _limits = _with_prob(max_ratio=("float", 0.05, 0.5, False))


@dataclass(frozen=True)
class CopyPasteConfig(_Transform):
    """Paste one object (>= min_voxels) of an earlier patch, image and label, under a new id."""

    min_voxels: int | None = None
    _limits = _with_prob(min_voxels=("int", 1, None, False))


#: table name in [aug] -> config class, in pipeline order
_TABLES: dict[str, type[_Transform]] = {
    "rotate": RotateConfig,
    "elastic": ElasticConfig,
    "misalignment": MisalignmentConfig,
    "missing_section": MissingSectionConfig,
    "flip": FlipConfig,
    "rot90": Rot90Config,
    "copy_paste": CopyPasteConfig,
    "mixup": MixupConfig,
    "missing_parts": MissingPartsConfig,
    "motion_blur": MotionBlurConfig,
    "defocus": DefocusConfig,
    "cut_blur": CutBlurConfig,
    "cut_noise": CutNoiseConfig,
    "contrast": ContrastConfig,
    "brightness": BrightnessConfig,
    "gamma": GammaConfig,
    "noise": NoiseConfig,
}
_NAME_OF = {cls.__name__: name for name, cls in _TABLES.items()}
TRANSFORM_NAMES: tuple[str, ...] = tuple(_TABLES)

#: every transform's parameters when a preset turns it on (prob is set per preset)
_BASE: dict[str, dict[str, Any]] = {
    "rotate": {"max_degrees": 15.0},
    "elastic": {"magnitude": 4.0, "sigma": 12.0},
    "misalignment": {"max_shift": 6, "stack_prob": 0.5},
    "missing_section": {"max_sections": 2},
    "flip": {"axes": "zyx"},
    "rot90": {"permute": True},
    "copy_paste": {"min_voxels": 200},
    "mixup": {"max_ratio": 0.3},
    "missing_parts": {"max_sections": 1, "max_fraction": 0.3, "fill": 0.0, "mask_loss": False},
    "motion_blur": {"max_sections": 2, "length": 9},
    "defocus": {"max_sections": 2, "max_sigma": 3.0},
    "cut_blur": {"max_factor": 4, "whole_prob": 0.0},
    "cut_noise": {"max_std": 0.2},
    "contrast": {"max_delta": 0.2, "per_section": False},
    "brightness": {"max_delta": 0.05, "per_section": True},
    "gamma": {"max_log_gamma": 0.3},
    "noise": {"max_std": 0.05},
}

#: preset -> transform -> fields (prob at least); transforms not named are off (prob 0)
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "none": {},
    "light": {
        "flip": {"prob": 0.5},
        "rot90": {"prob": 0.5},
        "contrast": {"prob": 0.3, "max_delta": 0.1},
        "brightness": {"prob": 0.3, "max_delta": 0.03},
        "noise": {"prob": 0.1, "max_std": 0.02},
    },
    # the default for training: geometric symmetries, intensity jitter, and the common EM
    # acquisition artefacts at moderate rates (BANIS-like, with sections deleted not zeroed)
    "realistic": {
        "flip": {"prob": 0.5},
        "rot90": {"prob": 0.5},
        "misalignment": {"prob": 0.15},
        "missing_section": {"prob": 0.1},
        "missing_parts": {"prob": 0.1},
        "motion_blur": {"prob": 0.1},
        "defocus": {"prob": 0.1},
        "contrast": {"prob": 0.5},
        "brightness": {"prob": 0.5},
        "gamma": {"prob": 0.3},
        "noise": {"prob": 0.2},
    },
    "heavy": {
        "rotate": {"prob": 0.3},
        "elastic": {"prob": 0.3},
        "misalignment": {"prob": 0.3, "max_shift": 8},
        "missing_section": {"prob": 0.2, "max_sections": 3},
        "flip": {"prob": 0.5},
        "rot90": {"prob": 0.5},
        "copy_paste": {"prob": 0.1},
        "mixup": {"prob": 0.1},
        "missing_parts": {"prob": 0.2, "max_sections": 2},
        "motion_blur": {"prob": 0.2},
        "defocus": {"prob": 0.2},
        "cut_blur": {"prob": 0.2},
        "cut_noise": {"prob": 0.2},
        "contrast": {"prob": 0.7, "max_delta": 0.3},
        "brightness": {"prob": 0.7, "max_delta": 0.1},
        "gamma": {"prob": 0.5, "max_log_gamma": 0.5},
        "noise": {"prob": 0.3, "max_std": 0.08},
    },
    # super-resolution along z: train a model to restore thin sections from thick ones
    "superres": {
        "flip": {"prob": 0.5},
        "rot90": {"prob": 0.5},
        "cut_blur": {"prob": 0.8, "whole_prob": 0.5},
        "contrast": {"prob": 0.3, "max_delta": 0.1},
        "brightness": {"prob": 0.3, "max_delta": 0.05},
    },
    # instance segmentation: more shape variety and object-level mixing
    "instance": {
        "rotate": {"prob": 0.3},
        "elastic": {"prob": 0.3},
        "flip": {"prob": 0.5},
        "rot90": {"prob": 0.5},
        "copy_paste": {"prob": 0.5},
        "mixup": {"prob": 0.2},
        "contrast": {"prob": 0.5},
        "brightness": {"prob": 0.5},
        "noise": {"prob": 0.2},
    },
}


def preset_names() -> list[str]:
    """The preset names, ``none`` first."""
    return list(PRESETS)


@dataclass(frozen=True)
class AugConfig:
    """The ``[aug]`` table: a preset and per-transform overrides (``None`` = from the preset)."""

    preset: PresetName = "realistic"
    rotate: RotateConfig = field(default_factory=RotateConfig)
    elastic: ElasticConfig = field(default_factory=ElasticConfig)
    misalignment: MisalignmentConfig = field(default_factory=MisalignmentConfig)
    missing_section: MissingSectionConfig = field(default_factory=MissingSectionConfig)
    flip: FlipConfig = field(default_factory=FlipConfig)
    rot90: Rot90Config = field(default_factory=Rot90Config)
    copy_paste: CopyPasteConfig = field(default_factory=CopyPasteConfig)
    mixup: MixupConfig = field(default_factory=MixupConfig)
    missing_parts: MissingPartsConfig = field(default_factory=MissingPartsConfig)
    motion_blur: MotionBlurConfig = field(default_factory=MotionBlurConfig)
    defocus: DefocusConfig = field(default_factory=DefocusConfig)
    cut_blur: CutBlurConfig = field(default_factory=CutBlurConfig)
    cut_noise: CutNoiseConfig = field(default_factory=CutNoiseConfig)
    contrast: ContrastConfig = field(default_factory=ContrastConfig)
    brightness: BrightnessConfig = field(default_factory=BrightnessConfig)
    gamma: GammaConfig = field(default_factory=GammaConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            guess = closest_match(str(self.preset), PRESETS)
            raise UserError(f"unknown augmentation preset '{self.preset}'",
                            (f"did you mean '{guess}'? " if guess else "")
                            + "valid: " + ", ".join(PRESETS))
        for name, cls in _TABLES.items():
            value = getattr(self, name)
            if isinstance(value, dict):  # built by hand from a mapping
                object.__setattr__(self, name, _table_from_mapping(name, value))
            elif not isinstance(value, cls):
                raise UserError(f"config key 'aug.{name}' must be a table, got {value!r}",
                                f"write it as [aug.{name}]")

    @classmethod
    def from_preset(cls, preset: str, **overrides: dict[str, Any]) -> AugConfig:
        """``AugConfig(preset, name={field: value})`` with the tables given as plain dicts."""
        unknown = [n for n in overrides if n not in _TABLES]
        if unknown:
            raise _unknown_transform(unknown[0])
        return cls(preset=preset, **{n: _table_from_mapping(n, v)  # type: ignore[arg-type]
                                     for n, v in overrides.items()})

    def resolved(self) -> AugConfig:
        """Every field filled in: the user's value, else the preset's, else the base value
        (probability 0 for a transform the preset leaves off). Idempotent."""
        preset = PRESETS[self.preset]
        tables = {}
        for name, cls in _TABLES.items():
            user = getattr(self, name)
            values = {"prob": 0.0, **_BASE[name], **preset.get(name, {})}
            for f in dataclasses.fields(user):
                if getattr(user, f.name) is not None:
                    values[f.name] = getattr(user, f.name)
            tables[name] = cls(**values)
        return AugConfig(preset=self.preset, **tables)  # type: ignore[arg-type]

    def enabled(self) -> list[str]:
        """Names of the transforms with a non-zero probability after resolution, in order."""
        r = self.resolved()
        return [n for n in _TABLES if getattr(r, n).prob > 0]


def _unknown_transform(name: str) -> UserError:
    guess = closest_match(name, _TABLES)
    return UserError(f"unknown augmentation '{name}'",
                     (f"did you mean '{guess}'? " if guess else "")
                     + "valid: " + ", ".join(_TABLES))


def _table_from_mapping(name: str, values: Any) -> _Transform:
    cls = _TABLES[name]
    if not isinstance(values, dict):
        raise UserError(f"config key 'aug.{name}' must be a table, got {values!r}",
                        f"write it as [aug.{name}]")
    fields = [f.name for f in dataclasses.fields(cls)]
    for key in values:
        if key not in fields:
            guess = closest_match(key, fields)
            raise UserError(f"unknown config key 'aug.{name}.{key}'",
                            (f"did you mean 'aug.{name}.{guess}'? " if guess else "")
                            + "valid keys: " + ", ".join(f"aug.{name}.{f}" for f in fields))
    return cls(**values)
