"""Patches for training: lazy reads from (raw, labels) volumes by URI, weighted mixing of
sources, foreground resampling, affinity targets, a seeded index sampler, the DataModule.

Every training patch is a pure function of ``(seed, patch index)``: the sampler hands out
indices ``0, 1, 2, ...`` (split across DDP ranks) starting where the run stands, and the
dataset draws source, position and augmentation from ``numpy.random.default_rng([seed,
index])``. So a run is reproducible whatever the worker count, and a resumed run sees exactly
the patches an uninterrupted one would. Arrays are (C, Z, Y, X) / (Z, Y, X), voxels.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from pytc_core.bbox import BBox
from pytc_core.contract import DataContract, IntensityStats, sample_intensities
from pytc_core.errors import UserError
from pytc_core.normalize import fit_normalization
from pytc_core.normalize import normalize_raw as core_normalize_raw
from pytc_core.output_run import open_input
from pytc_core.targets import affinities_from_labels, erode_labels
from pytc_core.volume import Volume
from pytc_core.volume.padded import read_padded
from pytc_train.config import DataConfig, SourceConfig

__all__ = [
    "PatchDataModule",
    "PatchIndexSampler",
    "TrainPatches",
    "ValPatches",
    "VolumePair",
    "check_sources",
    "data_contract_for",
    "normalize_raw",
    "norm_stats_for",
    "targets_from_sample",
]

log = logging.getLogger("pytc.train")
Transform = Callable[[dict], dict]


@dataclass(frozen=True)
class VolumePair:
    """A checked (raw, labels) source: URIs, sampling box (global voxels) and weight."""

    raw: str
    labels: str
    box: BBox
    weight: float
    channels: int

    @property
    def name(self) -> str:
        return f"{self.raw} + {self.labels} {list(self.box.start + self.box.stop)}"


def _open(uri: str, what: str) -> Volume:
    try:
        return open_input(uri)
    except UserError:
        raise
    except Exception as exc:  # a format library's own error on a damaged file
        raise UserError(f"cannot open {what} {uri}: {exc}", "check the URI") from None


def check_sources(sources: Sequence[SourceConfig], patch: Sequence[int], in_channels: int,
                  role: str) -> list[VolumePair]:
    """Open every source once and check it: 3D integer labels, raw of the same spatial shape
    and voxel size, bbox inside the volume, patch no larger than the bbox. UserError else."""
    pairs = []
    for src in sources:
        raw, labels = _open(src.raw, "raw"), _open(src.labels, "labels")
        if raw.ndim not in (3, 4):
            raise UserError(f"raw {src.raw} has shape {raw.shape}; it must be 3D (Z, Y, X) or "
                            "(C, Z, Y, X)", "pass a 3D EM volume")
        if labels.ndim != 3:
            raise UserError(f"labels {src.labels} have shape {labels.shape}; they must be 3D "
                            "(Z, Y, X)", "pass an instance segmentation volume")
        if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == np.bool_):
            raise UserError(f"labels {src.labels} have dtype {labels.dtype}; labels must be "
                            "integers", "pass an instance segmentation (uint32/uint64), not "
                            "probabilities")
        if raw.spatial_shape != labels.spatial_shape or raw.offset != labels.offset:
            raise UserError(f"raw {src.raw} (shape {raw.spatial_shape}, offset {raw.offset}) and "
                            f"labels {src.labels} (shape {labels.spatial_shape}, offset "
                            f"{labels.offset}) do not cover the same voxels",
                            "pass labels made for this raw volume")
        if tuple(map(float, raw.voxel_size)) != tuple(map(float, labels.voxel_size)):
            raise UserError(f"raw {src.raw} has voxel size {raw.voxel_size} nm, labels "
                            f"{src.labels} {labels.voxel_size} nm",
                            "pass labels at the raw's resolution")
        channels = raw.num_channels or 1
        if channels != in_channels:
            raise UserError(f"raw {src.raw} has {channels} channel(s), model.in_channels is "
                            f"{in_channels}", f"set model.in_channels = {channels}")
        box = raw.bbox if src.bbox is None else BBox(tuple(src.bbox[:3]), tuple(src.bbox[3:]))
        if not raw.bbox.contains(box):
            raise UserError(f"{role} bbox {list(src.bbox or ())} is not inside {src.raw} "
                            f"(extent {list(raw.bbox.start + raw.bbox.stop)})",
                            "give a bbox inside the volume")
        if any(p > s for p, s in zip(patch, box.shape, strict=True)):
            raise UserError(f"patch {tuple(patch)} is larger than the {role} region "
                            f"{box.shape} of {src.raw}",
                            f"use a patch of at most {box.shape} voxels (z, y, x) or a larger bbox")
        pairs.append(VolumePair(src.raw, src.labels, box, float(src.weight), channels))
    return pairs


def norm_stats_for(config: DataConfig, pair: VolumePair, samples: int = 8,
                   seed: int = 0) -> tuple[float, float] | None:
    """(mean, std) for percentile / meanstd normalisation fitted
    (:func:`pytc_core.normalize.fit_normalization`) to random patches of ``pair`` (None when
    not needed or already set)."""
    if config.normalize in ("auto", "none") or (config.mean is not None and config.std is not None):
        return None
    vol = open_input(pair.raw)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(samples):
        start = [int(rng.integers(a, b - p + 1)) for a, b, p in
                 zip(pair.box.start, pair.box.stop, config.patch_size, strict=True)]
        values.append(vol.read(BBox.from_shape(config.patch_size, start)).ravel())
    fitted = fit_normalization(np.concatenate(values), config.normalize, config.percentiles)
    assert fitted.mean is not None and fitted.std is not None
    return fitted.mean, fitted.std


def normalize_raw(raw: np.ndarray, config: DataConfig) -> np.ndarray:
    """Raw voxels as float32 (C, Z, Y, X), normalised by ``config.normalization()`` with
    :func:`pytc_core.normalize.normalize_raw` (the function pytc-infer uses)."""
    x = core_normalize_raw(raw, config.normalization())
    return x[None] if x.ndim == 3 else x


def _as_numpy(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _center_crop(array: np.ndarray, patch: Sequence[int]) -> np.ndarray:
    spatial = array.shape[-3:]
    if any(s < p for s, p in zip(spatial, patch, strict=True)):
        raise ValueError(f"the augmentation returned spatial shape {spatial}, smaller than the "
                         f"patch {tuple(patch)}")
    z, y, x = (slice((s - p) // 2, (s - p) // 2 + p) for s, p in zip(spatial, patch, strict=True))
    return array[..., z, y, x]


def targets_from_sample(sample: dict, patch: Sequence[int],
                        offsets: Sequence[Sequence[int]], *, erode: int = 0,
                        erode_2d: bool = False,
                        lsd_sigma: Sequence[float] | None = None) -> dict[str, torch.Tensor]:
    """Crop a (possibly transformed) patch dict to ``patch`` and add affinity targets.

    Returns tensors ``image`` (C, Z, Y, X), ``target`` and ``mask`` (K, Z, Y, X) for K offsets;
    the mask is 0 for edges leaving the patch or touching a voxel with ``mask`` 0. ``erode``
    voxels per side are first taken off every object (:func:`pytc_core.targets.erode_labels`,
    in-plane with ``erode_2d``; on the read patch before the crop). With ``lsd_sigma``
    (voxels, z, y, x) also ``lsd`` (10, Z, Y, X), the local shape descriptors of the (eroded)
    labels (:mod:`pytc_train.lsd`), and ``lsd_mask`` (1, Z, Y, X), 0 outside the volume.
    """
    image = _center_crop(_as_numpy(sample["image"]).astype(np.float32, copy=False), patch)
    label = _as_numpy(sample["label"])
    if label.ndim == 4:  # a transform that kept a channel axis
        label = label[0]
    label = np.rint(label).astype(np.int64) if label.dtype.kind == "f" else label.astype(np.int64)
    if erode:
        label = erode_labels(label, erode, in_plane=erode_2d)
    label = _center_crop(label, patch)
    target, valid = affinities_from_labels(label, offsets)
    mask = None
    if "mask" in sample:
        mask = _center_crop(_as_numpy(sample["mask"]), patch)
        if mask.ndim == 4:
            mask = mask[0]
        both, _ = affinities_from_labels((mask > 0.5).astype(np.int64), offsets)
        valid *= both
    out = {"image": torch.from_numpy(np.ascontiguousarray(image)),
           "target": torch.from_numpy(target), "mask": torch.from_numpy(valid)}
    if lsd_sigma is not None:
        from pytc_train.lsd import lsd_from_labels

        inside = np.ones((1, *label.shape), np.float32) if mask is None else \
            (mask > 0.5).astype(np.float32)[None]
        out["lsd"] = torch.from_numpy(lsd_from_labels(label, lsd_sigma))
        out["lsd_mask"] = torch.from_numpy(np.ascontiguousarray(inside))
    return out


class _Handles:
    """Volume handles opened lazily once per process (workers must not share file handles)."""

    def __init__(self) -> None:
        self._pid = -1
        self._open: dict[str, Volume] = {}

    def __call__(self, uri: str) -> Volume:
        if self._pid != os.getpid():
            self._pid, self._open = os.getpid(), {}
        if uri not in self._open:
            self._open[uri] = open_input(uri)
        return self._open[uri]

    def __getstate__(self) -> dict:
        return {"_pid": -1, "_open": {}}


class TrainPatches(Dataset):
    """Random training patches: item ``i`` is drawn from ``default_rng([seed, i])``.

    Each item picks a source in proportion to its weight, then a position in its box whose
    labels hold at least ``min_foreground`` non-zero voxels (redrawn up to ``max_resample``
    times; then the most labelled draw is kept). With a ``transform`` (see
    ``pytc_train.augment``), a box ``read_margin`` voxels larger on every side is read,
    transformed, and centre-cropped back to the patch.
    """

    def __init__(self, pairs: Sequence[VolumePair], config: DataConfig, seed: int,
                 length: int, transform: Transform | None = None,
                 read_margin: Sequence[int] = (0, 0, 0),
                 lsd_sigma: Sequence[float] | None = None) -> None:
        self.pairs = list(pairs)
        self.lsd_sigma = lsd_sigma
        self.config = config
        self.seed = int(seed)
        self.length = int(length)
        self.transform = transform
        self.read_margin = tuple(int(m) for m in read_margin)
        weights = np.array([p.weight for p in self.pairs], dtype=np.float64)
        self.probabilities = weights / weights.sum()
        self._handles = _Handles()

    def __len__(self) -> int:
        return self.length

    def draw(self, index: int, stream: int = 0) -> tuple[int, BBox, float]:
        """(source index, patch box, foreground fraction) of item ``index``, labels only
        (``stream`` > 0: an independent extra draw for the same item, e.g. a mixup partner)."""
        key = [self.seed, int(index)] + ([int(stream) + 1] if stream else [])
        rng = np.random.default_rng(key)
        s = int(rng.choice(len(self.pairs), p=self.probabilities))
        pair = self.pairs[s]
        best: tuple[float, BBox] | None = None
        for _ in range(max(1, self.config.max_resample)):
            start = [int(rng.integers(a, b - p + 1)) for a, b, p in
                     zip(pair.box.start, pair.box.stop, self.config.patch_size, strict=True)]
            box = BBox.from_shape(self.config.patch_size, start)
            if self.config.min_foreground <= 0:
                return s, box, 1.0
            fg = float(np.count_nonzero(self._handles(pair.labels).read(box))) / box.size
            if best is None or fg > best[0]:
                best = (fg, box)
            if fg >= self.config.min_foreground:
                break
        assert best is not None
        return s, best[1], best[0]

    def sample(self, index: int, stream: int = 0) -> dict:
        """The patch dict handed to the transform: image, label, mask (read with the margin)."""
        s, box, _ = self.draw(index, stream)
        pair = self.pairs[s]
        read_box = box.grow(self.read_margin)
        raw_vol = self._handles(pair.raw)
        raw = read_padded(raw_vol, read_box)
        label = read_padded(self._handles(pair.labels), read_box)
        mask = np.zeros(read_box.shape, dtype=np.float32)
        mask[read_box.intersect(raw_vol.bbox).relative_to(read_box.start)] = 1.0
        return {"image": normalize_raw(raw, self.config), "label": label.astype(np.int64),
                "mask": mask}

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = self.sample(index)
        if self.transform is not None:
            if getattr(self.transform, "needs_partner", False):  # mixup / copy-paste
                partner = self.sample(index, stream=1)
                sample["partner_image"], sample["partner_label"] = partner["image"], partner["label"]
            if hasattr(self.transform, "set_random_state"):
                seed = int(np.random.default_rng([self.seed, int(index), 1]).integers(2**31))
                self.transform.set_random_state(seed=seed)
            if getattr(self.transform, "needs_partner", False):  # mixup / copy-paste
                other = int(np.random.default_rng([self.seed, int(index), 2]).integers(2**62))
                partner = self.sample(other)
                sample["partner_image"], sample["partner_label"] = (partner["image"],
                                                                    partner["label"])
            sample = self.transform(sample)
        return targets_from_sample(sample, self.config.patch_size, self.config.offsets,
                                   erode=self.config.erode, erode_2d=self.config.erode_2d,
                                   lsd_sigma=self.lsd_sigma)


def grid_starts(start: int, stop: int, size: int) -> list[int]:
    """Starts of patches of ``size`` covering ``[start, stop)`` (the last one flush with stop)."""
    starts = list(range(start, stop - size + 1, size))
    if starts[-1] + size < stop:
        starts.append(stop - size)
    return starts


class ValPatches(Dataset):
    """A fixed grid of patches covering each validation box (evenly thinned to ``max_patches``);
    targets from the labels as they are (``data.erode`` applies to training patches only)."""

    def __init__(self, pairs: Sequence[VolumePair], config: DataConfig) -> None:
        self.config = config
        self.pairs = list(pairs)
        items = []
        for s, pair in enumerate(self.pairs):
            axes = [grid_starts(a, b, p) for a, b, p in
                    zip(pair.box.start, pair.box.stop, config.patch_size, strict=True)]
            items += [(s, (z, y, x)) for z in axes[0] for y in axes[1] for x in axes[2]]
        if len(items) > config.val_max_patches:
            keep = np.linspace(0, len(items) - 1, config.val_max_patches).round().astype(int)
            items = [items[i] for i in keep]
        self.items = items
        self._handles = _Handles()

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        s, start = self.items[index]
        pair = self.pairs[s]
        box = BBox.from_shape(self.config.patch_size, start)
        raw = self._handles(pair.raw).read(box)
        label = self._handles(pair.labels).read(box).astype(np.int64)
        # the labels as they are (no data.erode, no LSDs): validation scores the affinities
        # against the real boundaries, comparable whatever the training targets
        return targets_from_sample({"image": normalize_raw(raw, self.config), "label": label},
                                   self.config.patch_size, self.config.offsets)


class PatchIndexSampler(Sampler[int]):
    """``total`` indices ``j*world + rank`` for ``j = start, start+1, ...``.

    ``start`` is the number of patches this rank has already consumed (a resumed run goes on
    where the interrupted one stopped; the length stays ``total`` so Lightning's restored
    epoch counters never end the epoch early, ``max_steps`` ends the run); DDP ranks take
    interleaved indices.
    """

    def __init__(self, total: int, start: int = 0, rank: int = 0, world: int = 1) -> None:
        self.total, self.start, self.rank, self.world = int(total), int(start), int(rank), int(world)

    def __len__(self) -> int:
        return self.total

    def __iter__(self) -> Iterator[int]:
        for j in range(self.start, self.start + self.total):
            yield j * self.world + self.rank


class PatchDataModule(pl.LightningDataModule):
    """Training and validation loaders over checked sources.

    ``steps``: optimiser steps of the whole run; the sampler starts at the trainer's
    ``global_step`` (so resume continues the patch sequence) and takes this rank's share.
    """

    def __init__(self, config: DataConfig, train_pairs: Sequence[VolumePair],
                 val_pairs: Sequence[VolumePair], *, batch_size: int, num_workers: int,
                 steps: int, accumulate: int = 1, seed: int = 0,
                 transform: Transform | None = None, read_margin: Sequence[int] = (0, 0, 0),
                 pin_memory: bool = False, lsd_sigma: Sequence[float] | None = None) -> None:
        super().__init__()
        self.config = config
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.per_rank = int(steps) * int(accumulate) * self.batch_size
        self.accumulate = int(accumulate)
        self.pin_memory = pin_memory
        self.train_set = TrainPatches(train_pairs, config, seed, self.per_rank, transform,
                                      read_margin, lsd_sigma)
        self.val_set = ValPatches(val_pairs, config) if val_pairs else None

    def _loader_options(self) -> dict:
        options: dict = {"num_workers": self.num_workers, "pin_memory": self.pin_memory}
        if self.num_workers > 0:
            options.update(persistent_workers=True, prefetch_factor=4)
        return options

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        step = trainer.global_step if trainer is not None else 0
        start = step * self.accumulate * self.batch_size
        self.train_set.length = self.per_rank * world
        sampler = PatchIndexSampler(self.per_rank, start, rank, world)
        return DataLoader(self.train_set, batch_size=self.batch_size, sampler=sampler,
                          drop_last=True, **self._loader_options())

    def val_dataloader(self) -> DataLoader | list:
        if self.val_set is None:
            return []
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        indices = list(range(rank, len(self.val_set), world))
        return DataLoader(self.val_set, batch_sampler=validation_batches(indices,
                                                                         self.batch_size))


def validation_batches(indices: Sequence[int], batch_size: int) -> list[list[int]]:
    """``indices`` in batches of ``batch_size``, a lone last patch joined to the batch before
    it: a batch of one patch whose deepest level is one voxel (a 16-voxel MedNeXt patch) is
    a single value per channel, which group norm refuses; every patch is still scored once."""
    batches = [list(indices[i:i + batch_size]) for i in range(0, len(indices), batch_size)]
    if batch_size > 1 and len(batches) > 1 and len(batches[-1]) == 1:
        batches[-2].extend(batches.pop())
    return batches


def data_contract_for(config: DataConfig, pairs: Sequence[VolumePair],
                      seed: int = 0) -> DataContract:
    """The data contract of training on ``pairs`` with ``config`` (normalisation resolved):
    the first source's voxel size (nm, z y x) and raw dtype, intensity statistics of 8 random
    patches of each source, the normalisation, offsets and patch
    (:class:`pytc_core.contract.DataContract`, stored in the checkpoint for pytc-infer)."""
    first = open_input(pairs[0].raw)
    values = [sample_intensities(open_input(p.raw), p.box, size=config.patch_size,
                                 seed=seed + i) for i, p in enumerate(pairs)]
    vz, vy, vx = (float(v) for v in first.voxel_size)
    pz, py, px = (int(v) for v in config.patch_size)
    return DataContract((vz, vy, vx), first.dtype.name,
                        IntensityStats.of(np.concatenate(values)),
                        dataclasses.replace(config.normalization(), dtype=first.dtype.name),
                        tuple((int(o[0]), int(o[1]), int(o[2])) for o in config.offsets),
                        (pz, py, px))
