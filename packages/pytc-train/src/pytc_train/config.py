"""The typed train config: ``[model]``, ``[data]``, ``[optim]``, ``[train]`` (and ``[aug]``).

Imports no torch, so ``pytc-train --help`` and config errors stay fast. Spatial sizes and
boxes are in voxels, (z, y, x); a bbox is ``(z0, y0, x0, z1, y1, x1)``, half-open, global.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from pytc_core.bbox import parse_bbox
from pytc_core.errors import UserError
from pytc_core.models.config import ModelConfig
from pytc_core.normalize import RawNormalization
from pytc_train.augment.config import AugConfig

#: channels of the 3D local shape descriptors (mean offset 3, variance 3, Pearson 3, mass 1;
#: :mod:`pytc_train.lsd`)
LSD_CHANNELS = 10

__all__ = [
    "DataConfig",
    "LossConfig",
    "OptimConfig",
    "SourceConfig",
    "TrainConfig",
    "TrainLoopConfig",
    "parse_zyx",
]

Precision = Literal["auto", "32", "16-mixed", "bf16-mixed"]


def parse_zyx(text: str, what: str) -> tuple[int, int, int]:
    """``"32,64,64"`` (or one number for all axes) as a positive (z, y, x) voxel triple."""
    try:
        parts = [int(p) for p in text.replace("x", ",").split(",") if p.strip()]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = parts * 3
    if len(parts) != 3 or any(p <= 0 for p in parts):
        raise UserError(f"bad {what} '{text}'", f"give three positive voxel counts z,y,x, e.g. "
                        f"--{what} 32,64,64")
    return tuple(parts)  # type: ignore[return-value]


@dataclass(frozen=True)
class SourceConfig:
    """One (raw, labels) pair: ``[[data.train]]`` / ``[[data.val]]`` entries.

    ``bbox`` limits sampling to ``(z0, y0, x0, z1, y1, x1)`` voxels; ``weight`` is the
    relative sampling frequency among training sources.
    """

    raw: str
    labels: str
    bbox: tuple[int, ...] | None = None
    weight: float = 1.0

    def __post_init__(self) -> None:
        if self.bbox is not None:
            parse_bbox(self.bbox, f"bbox of {self.raw}")
        if not self.weight > 0:
            raise UserError(f"weight of source {self.raw} must be > 0, got {self.weight}",
                            "give a positive sampling weight")


@dataclass(frozen=True)
class DataConfig:
    """``[data]``: sources, patch, normalisation, targets, sampling and loading.

    For one volume no source list is needed: ``raw``/``labels`` with ``bbox`` (training
    region) and ``val_bbox`` (held-out region of the same volume).
    """

    raw: str | None = None
    labels: str | None = None
    bbox: tuple[int, ...] | None = None
    val_bbox: tuple[int, ...] | None = None
    train: list[SourceConfig] = field(default_factory=list)
    val: list[SourceConfig] = field(default_factory=list)
    #: patch size in voxels (z, y, x)
    patch_size: tuple[int, int, int] = (32, 64, 64)
    #: None: chosen by auto-configuration
    batch_size: int | None = None
    num_workers: int | None = None
    #: raw normalisation: "auto" divides integer raw by its dtype's maximum (uint8: 255) and
    #: keeps float raw; "meanstd": (x - mean) / std; "percentile": (x - mean) / std clipped to
    #: [0, 1] with mean = p_low and std = p_high - p_low. Unset mean / std are measured on the
    #: first training source and written to the resolved config (pytc-infer reads them).
    normalize: Literal["auto", "percentile", "meanstd", "none"] = "auto"
    percentiles: tuple[float, float] = (1.0, 99.0)
    mean: float | None = None
    std: float | None = None
    #: affinity offsets (z, y, x) in voxels; nearest-neighbour by default
    offsets: list[list[int]] = field(default_factory=lambda: [[-1, 0, 0], [0, -1, 0], [0, 0, -1]])
    #: a training patch needs at least this fraction of labelled (non-zero) voxels...
    min_foreground: float = 0.05
    #: ...else it is redrawn, up to this many times
    max_resample: int = 20
    #: validation patches per validation run (a regular grid over each val region, subsampled)
    val_max_patches: int = 64
    #: shrink every object by this many voxels per side before the targets are computed, so
    #: touching objects get a background gap (gunpowder's GrowBoundary; 0: off)
    erode: int = 0
    #: erode along y and x only (each z slice on its own), for anisotropic data
    erode_2d: bool = False

    def __post_init__(self) -> None:
        if self.erode < 0:
            raise UserError(f"data.erode must be >= 0 voxels, got {self.erode}",
                            "give the voxels to remove per side, e.g. erode = 1 (0: off)")
        axes = ("y", "x") if self.erode_2d else ("z", "y", "x")
        sides = [self.patch_size[i] for i, a in enumerate("zyx") if a in axes]
        if self.erode and 2 * self.erode >= min(sides):
            raise UserError(f"data.erode = {self.erode} removes {2 * self.erode} voxels across "
                            f"an object, as many as the patch {tuple(self.patch_size)} spans "
                            f"along {'/'.join(axes)}: no object would survive",
                            f"use data.erode < {(min(sides) + 1) // 2} or a larger patch")
        for name in ("bbox", "val_bbox"):
            box = getattr(self, name)
            if box is not None:
                parse_bbox(box, f"data.{name}")
        if not 0 <= self.min_foreground < 1:
            raise UserError(f"data.min_foreground must be in [0, 1), got {self.min_foreground}",
                            "give a fraction of voxels")
        if any(len(o) != 3 for o in self.offsets) or not self.offsets:
            raise UserError(f"data.offsets must be a list of (z, y, x) triples, got {self.offsets}",
                            "e.g. offsets = [[-1, 0, 0], [0, -1, 0], [0, 0, -1]]")
        if self.batch_size is not None and self.batch_size < 1:
            raise UserError(f"data.batch_size must be >= 1, got {self.batch_size}", "give a positive batch size")
        if self.normalize in ("meanstd", "percentile"):
            if self.mean is not None and not math.isfinite(self.mean):
                raise UserError(f"data.mean must be a finite number, got {self.mean}",
                                "give the raw intensity to subtract, or leave it unset to "
                                "measure it")
            if self.std is not None and not (math.isfinite(self.std) and self.std > 0):
                raise UserError(f"data.std must be a positive number, got {self.std}",
                                "give the raw intensities' spread, or leave it unset to "
                                "measure it")
        if self.normalize == "percentile" and not 0 <= self.percentiles[0] < self.percentiles[1] <= 100:
            raise UserError(f"data.percentiles {list(self.percentiles)} must be low < high in "
                            "[0, 100]", "e.g. percentiles = [1.0, 99.0]")

    def normalization(self) -> RawNormalization:
        """The raw normalisation these settings describe (:mod:`pytc_core.normalize`; for
        ``meanstd`` / ``percentile`` mean and std must be set: pytc-train measures unset ones
        before training and writes them to the resolved config)."""
        if self.normalize in ("meanstd", "percentile"):
            return RawNormalization(
                self.normalize, self.mean, self.std,
                percentiles=self.percentiles if self.normalize == "percentile" else None)
        return RawNormalization(self.normalize)

    def train_sources(self) -> list[SourceConfig]:
        if self.train:
            return list(self.train)
        if self.raw is None or self.labels is None:
            raise UserError("no training data", "pass --raw URI --labels URI, or [[data.train]] "
                            "tables in the TOML file")
        return [SourceConfig(self.raw, self.labels, self.bbox)]

    def val_sources(self) -> list[SourceConfig]:
        if self.val:
            return list(self.val)
        if self.val_bbox is not None:
            if self.raw is None or self.labels is None:
                raise UserError("data.val_bbox needs data.raw and data.labels",
                                "or list [[data.val]] sources")
            return [SourceConfig(self.raw, self.labels, self.val_bbox)]
        return []


@dataclass(frozen=True)
class OptimConfig:
    """``[optim]``: AdamW with optional linear warm-up then cosine decay (per step)."""

    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    scheduler: Literal["cosine", "constant"] = "cosine"
    warmup_steps: int = 0
    #: the cosine ends at lr * min_lr_ratio
    min_lr_ratio: float = 0.01
    #: gradient-norm clipping (0: off)
    grad_clip: float = 1.0
    accumulate: int = 1
    #: a step whose loss is NaN or inf is skipped (no update); this many in a row stop the run
    max_nonfinite_steps: int = 3
    #: decay of an exponential moving average of the weights, updated after every optimiser
    #: step (ema = decay * ema + (1 - decay) * weights); validation, best.ckpt and pytc-infer
    #: use it. 0: off; e.g. 0.999
    ema: float = 0.0

    def __post_init__(self) -> None:
        if self.ema != 0 and not 0 < self.ema < 1:
            raise UserError(f"optim.ema must be a decay in (0, 1), got {self.ema}",
                            "e.g. optim.ema = 0.999, or 0 to train without weight averaging")


@dataclass(frozen=True)
class LossConfig:
    """``[loss]``: how the affinity loss is reduced and the LSD auxiliary target.

    The BCE / Dice / boundary weights stay in ``[train]``.
    """

    #: "pooled": one masked BCE over all affinity channels' valid edges together;
    #: "per_channel": each channel's masked BCE averaged over its own valid edges, then the
    #: channel means averaged (channels with few valid edges, e.g. long-range ones, count
    #: as much as the others)
    reduction: Literal["pooled", "per_channel"] = "pooled"
    #: weight of the local shape descriptor loss (Sheridan et al. 2022): 10 extra output
    #: channels after the affinities, trained (sigmoid + MSE) against LSDs of the labels;
    #: 0: off. pytc-infer writes only the affinity channels.
    lsd_weight: float = 0.0
    #: Gaussian sigma of the LSDs in voxels (z, y, x), one number for all axes
    lsd_sigma: tuple[float, ...] = (5.0,)

    def __post_init__(self) -> None:
        if not (self.lsd_weight >= 0 and math.isfinite(self.lsd_weight)):
            raise UserError(f"loss.lsd_weight must be >= 0, got {self.lsd_weight}",
                            "e.g. loss.lsd_weight = 1.0, or 0 to train without LSDs")
        if len(self.lsd_sigma) not in (1, 3) or not all(
                s > 0 and math.isfinite(s) for s in self.lsd_sigma):
            raise UserError(f"loss.lsd_sigma must be one or three positive voxel counts, got "
                            f"{list(self.lsd_sigma)}", "e.g. loss.lsd_sigma = [5.0] or [2, 5, 5]")

    def sigma_zyx(self) -> tuple[float, float, float]:
        """The LSD sigma per axis (z, y, x), voxels."""
        s = self.lsd_sigma
        return (s[0],) * 3 if len(s) == 1 else (s[0], s[1], s[2])


@dataclass(frozen=True)
class TrainLoopConfig:
    """``[train]``: steps, loss, validation, checkpoints, devices, seed, run directory."""

    max_steps: int = 1000
    #: stop after this much wall-clock time (minutes) even before max_steps
    max_minutes: float | None = None
    seed: int = 0
    #: BCE-with-logits weight, soft-Dice weight
    bce_weight: float = 1.0
    dice_weight: float = 1.0
    #: extra weight on "cut" edges (target 0) in the BCE: boundaries are rare
    boundary_weight: float = 5.0
    #: loss weights of the deep-supervision outputs (full resolution first)
    ds_weights: tuple[float, ...] = (1.0, 0.5, 0.25, 0.125, 0.0625)
    val_every: int = 100
    #: what picks best.ckpt: "boundary_f1" (F1 of cut edges, affinity 0: the rare class that
    #: separates neurons), "f1" (F1 of joined edges; on dense EM labels ~95% of edges are
    #: joined, so predicting all-joined already scores ~0.98) or "loss"
    monitor: Literal["boundary_f1", "f1", "loss"] = "boundary_f1"
    #: stop after this many validations without improvement (0: never)
    early_stop_patience: int = 0
    #: write checkpoints/last.ckpt every this many steps (and at the end, and on a signal)
    checkpoint_every: int = 100
    log_every: int = 10
    #: a progress line (step, loss, last validation score, time left) every this many steps
    #: on stderr, also under -q; 0: every log_every steps
    progress_every: int = 0
    precision: Precision = "auto"
    #: "auto", "cpu", "gpu"
    accelerator: str = "auto"
    #: number of devices (processes) on this node; 0: auto
    devices: int = 0
    num_nodes: int = 1
    #: CPU threads per process for torch (0: auto, the cores per process whatever the load:
    #: the weights depend on the thread count, so a fixed count gives the same figures)
    threads: int = 0
    run_dir: str | None = None
    #: None, "auto" (checkpoints/last.ckpt of the run directory if present) or a path
    resume: str | None = None
    #: resume although result-changing options differ from the run's saved config (the
    #: differences are recorded in the run directory's resume_changes.txt)
    resume_changed: bool = False
    #: a pytc .ckpt (weights, strict) or a DKFZ nnunet_mednext .pth
    init_from: str | None = None
    upkern: bool = False
    #: fail fast for runs that have to be bit-reproducible (slower kernels on GPU)
    deterministic: bool = False

    def __post_init__(self) -> None:
        if self.max_steps < 1:
            raise UserError(f"train.max_steps must be >= 1, got {self.max_steps}", "give a positive step count")
        if self.progress_every < 0:
            raise UserError(f"train.progress_every must be >= 0, got {self.progress_every}",
                            "give a step count, or 0 for every log_every steps")
        for name in ("val_every", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise UserError(f"train.{name} must be >= 1, got {getattr(self, name)}",
                                "give a positive step count")
        if not self.ds_weights:
            raise UserError("train.ds_weights is empty", "give at least the full-resolution weight")


@dataclass(frozen=True)
class TrainConfig:
    """The whole resolved config of a training run (TOML tables of the same names)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainLoopConfig = field(default_factory=TrainLoopConfig)
    #: ``[aug]``: augmentation preset and per-transform overrides (``pytc_train.augment``)
    aug: AugConfig = field(default_factory=AugConfig)
    #: ``[loss]``: affinity loss reduction and the LSD auxiliary target
    loss: LossConfig = field(default_factory=LossConfig)

    def affinity_channels(self) -> int:
        """Model output channels that are affinities (one per ``data.offsets``); with LSDs on,
        :data:`LSD_CHANNELS` more follow them."""
        return len(self.data.offsets)

    def output_channels(self) -> int:
        """Output channels the model must have: affinities, then LSDs when ``loss.lsd_weight``."""
        return len(self.data.offsets) + (LSD_CHANNELS if self.loss.lsd_weight > 0 else 0)
