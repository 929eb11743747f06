"""``pytc-train --preview-aug N``: what an augmentation preset does, before any training.

One patch is read from (raw, labels) (a random position with foreground, seeded), augmented N
times with the configured ``[aug]``, and written next to the unaugmented patch:

- a volume (``.h5`` file or precomputed directory): ``image`` (float32) and ``label`` layers of
  shape (Z, Y, (N + 1)·X): the unaugmented patch first, then the N augmented ones side by side
  along x, so every section of a viewer shows them all;
- a PNG grid, one row per patch (unaugmented first) and four panels: image and labels at the
  middle section (y down, x right), image and labels at the middle row (z down, x right; shows
  missing and misaligned sections and z blur).

Nothing is trained. The image URI goes to stdout; the label URI and PNG path to stderr.
"""

from __future__ import annotations

import logging
import struct
import zlib
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pytc_core.bbox import BBox, parse_bbox
from pytc_core.errors import UserError
from pytc_core.normalize import normalize_raw
from pytc_train.augment.config import AugConfig

__all__ = ["PreviewConfig", "PreviewResult", "label_colors", "preview_from_train_config",
           "run_preview", "write_png"]

log = logging.getLogger("pytc.train")


@dataclass(frozen=True)
class PreviewConfig:
    """What ``--preview-aug`` reads and writes. Patch (z, y, x) voxels; bbox global voxels
    ``z0, y0, x0, z1, y1, x1`` limiting where the patch is taken (default: whole volume)."""

    raw: str
    labels: str
    count: int = 8
    patch: tuple[int, int, int] = (32, 64, 64)
    output: str = "aug_preview.h5"
    png: str | None = None  # default: the output path with suffix .png
    bbox: tuple[int, int, int, int, int, int] | None = None
    seed: int = 0
    overwrite: bool = False
    aug: AugConfig = field(default_factory=AugConfig)


@dataclass(frozen=True)
class PreviewResult:
    image_uri: str
    label_uri: str
    png: Path
    patch_box: BBox
    margin_zyx: tuple[int, int, int]
    fired: list[list[str]]  # per augmented patch, the transforms that fired


def _output_uris(output: str) -> tuple[str, str, Path]:
    from pytc_core.volume import parse_uri

    loc = parse_uri(output)
    if loc.format == "hdf5":
        if loc.inner:
            raise UserError(f"--output {output}: give the .h5 file without a dataset",
                            "the preview writes the datasets image and label into it")
        assert loc.path is not None
        return f"{loc.path}:image", f"{loc.path}:label", loc.path.with_suffix(".png")
    if loc.format == "precomputed" and loc.path is not None:
        base = str(loc.path).rstrip("/")
        return f"{base}/image", f"{base}/label", Path(base + ".png")
    raise UserError(f"--output {output}: the preview writes an .h5 file or a local precomputed "
                    "directory", "e.g. --output preview.h5 or --output preview_layers")


def _pick_box(labels_vol: Any, region: BBox, read_shape: Sequence[int],
              rng: np.random.Generator, tries: int = 12) -> BBox:
    """A read box of ``read_shape`` inside ``region``: of a few random draws, the one with the
    most distinct label ids (the most to look at)."""
    best: tuple[int, BBox] | None = None
    for _ in range(tries):
        start = [int(rng.integers(a, b - s + 1)) for a, b, s in
                 zip(region.start, region.stop, read_shape, strict=True)]
        box = BBox.from_shape(read_shape, start)
        ids = np.unique(labels_vol.read(box))
        score = int(np.count_nonzero(ids))
        if best is None or score > best[0]:
            best = (score, box)
    assert best is not None
    return best[1]


def run_preview(config: PreviewConfig) -> PreviewResult:
    """Augment one patch ``config.count`` times; write the volume and the PNG (see module doc)."""
    from pytc_core.output_run import open_input
    from pytc_core.volume import create_volume, require_integer_labels, volume_exists
    from pytc_train.augment.pipeline import build_augmentation

    if isinstance(config.count, bool) or not isinstance(config.count, int) or config.count < 1:
        raise UserError(f"--preview-aug needs a positive number of patches, got {config.count!r}",
                        "e.g. --preview-aug 8")
    if config.count > 64:
        raise UserError(f"--preview-aug {config.count} is more than 64 patches",
                        "preview at most 64 at a time")
    image_uri, label_uri, default_png = _output_uris(config.output)
    png = Path(config.png) if config.png else default_png
    if not config.overwrite:
        for what in (image_uri, label_uri):
            if volume_exists(what):
                raise UserError(f"output exists: {what}", "pass --overwrite or another --output")
        if png.exists():
            raise UserError(f"output exists: {png}", "pass --overwrite or another --output")
    transform, margin = build_augmentation(config.aug, config.patch, seed=config.seed)
    raw_vol, lab_vol = open_input(config.raw), open_input(config.labels)
    if raw_vol.ndim != 3:
        raise UserError(f"--raw {config.raw} has shape {raw_vol.shape}",
                        "the preview takes a single-channel (z, y, x) raw volume")
    require_integer_labels(lab_vol)
    if raw_vol.spatial_shape != lab_vol.spatial_shape or raw_vol.offset != lab_vol.offset:
        raise UserError(f"raw {raw_vol.spatial_shape} at {raw_vol.offset} and labels "
                        f"{lab_vol.spatial_shape} at {lab_vol.offset} differ",
                        "give raw and labels of the same volume")
    region = raw_vol.bbox if config.bbox is None else parse_bbox(config.bbox, "bbox")
    if not raw_vol.bbox.contains(region):
        raise UserError(f"--bbox {region} is not inside the volume {raw_vol.bbox}",
                        "give a box inside the volume")
    patch = tuple(config.patch)
    read_shape = tuple(p + 2 * m for p, m in zip(patch, margin, strict=True))
    if any(r > s for r, s in zip(read_shape, region.shape, strict=True)):
        raise UserError(f"patch {patch} plus the augmentation margin {margin} per side needs "
                        f"{read_shape} voxels; the region is only {region.shape}",
                        "use a smaller --patch or a larger --bbox")
    if transform is not None and raw_vol.voxel_size is not None:
        transform, margin = build_augmentation(config.aug, patch, raw_vol.voxel_size,
                                               seed=config.seed)

    rng = np.random.default_rng(config.seed)
    box = _pick_box(lab_vol, region, read_shape, rng)
    patch_box = box.grow([-m for m in margin])
    raw = normalize_raw(raw_vol.read(box))[None]
    labels = lab_vol.read(box).astype(np.int64)
    images = [raw[(slice(None), *patch_box.relative_to(box.start))]]
    label_list = [labels[patch_box.relative_to(box.start)]]
    fired: list[list[str]] = []
    for i in range(config.count):
        d: dict[Hashable, Any] = {"image": raw, "label": labels}
        if transform is not None:
            if transform.needs_partner:
                pbox = _pick_box(lab_vol, region, read_shape, rng)
                d["partner_image"] = normalize_raw(raw_vol.read(pbox))[None]
                d["partner_label"] = lab_vol.read(pbox).astype(np.int64)
            transform.set_random_state(seed=config.seed * 1_000_003 + i)
            out = transform(d)
            fired.append(sorted(transform.last_params()))
        else:
            out = {"image": images[0], "label": label_list[0]}
            fired.append([])
        images.append(out["image"])
        label_list.append(out["label"])
        log.info("patch %d: %s", i + 1, ", ".join(fired[-1]) or "(nothing fired)")

    image_row = np.concatenate([im[0] for im in images], axis=-1).astype(np.float32)
    label_row = np.concatenate(label_list, axis=-1)
    label_dtype = np.uint32 if label_row.max(initial=0) < 2**32 else np.uint64
    vol = create_volume(image_uri, image_row.shape, np.float32, voxel_size=raw_vol.voxel_size,
                        overwrite=config.overwrite)
    vol.write(image_row)
    vol = create_volume(label_uri, label_row.shape, label_dtype, voxel_size=raw_vol.voxel_size,
                        layer_type="segmentation", overwrite=config.overwrite)
    vol.write(label_row.astype(label_dtype))
    write_png(png, preview_grid(images, label_list))
    log.info("wrote %d augmented patches of %s (margin %s per side) from %s: %s, %s, %s",
             config.count, patch, margin, patch_box, image_uri, label_uri, png)
    return PreviewResult(image_uri, label_uri, png, patch_box, margin, fired)


def preview_from_train_config(config: Any, count: int, *, overwrite: bool = False
                              ) -> PreviewResult:
    """``pytc-train --preview-aug N``: preview ``config.aug`` on the first training source of a
    train config (its raw, labels, bbox, patch size and seed), written to
    ``<train.run_dir>/aug_preview.h5`` (``aug_preview.h5`` without a run directory)."""
    sources = config.data.train_sources()
    src = sources[0]
    run_dir = config.train.run_dir
    output = str(Path(run_dir) / "aug_preview.h5") if run_dir else "aug_preview.h5"
    bbox = tuple(src.bbox) if src.bbox is not None else None  # checked by run_preview
    return run_preview(PreviewConfig(raw=src.raw, labels=src.labels, count=count,
                                     patch=tuple(config.data.patch_size), output=output,
                                     bbox=bbox, seed=config.train.seed, overwrite=overwrite,
                                     aug=config.aug))


def label_colors(labels: np.ndarray) -> np.ndarray:
    """uint8 RGB (..., 3) for integer labels: 0 black, every id its own hashed colour."""
    ids = labels.astype(np.uint64)
    h = (ids * np.uint64(2654435761) + np.uint64(12345)) & np.uint64(0xFFFFFF)
    rgb = np.stack([(h >> np.uint64(s)) & np.uint64(255) for s in (16, 8, 0)], -1)
    rgb = (rgb.astype(np.uint16) // 2 + 96).astype(np.uint8)  # bright, distinguishable
    rgb[labels == 0] = 0
    return rgb


def _gray(image: np.ndarray, lo: float, hi: float) -> np.ndarray:
    scaled = (np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)
    return np.repeat(scaled[..., None], 3, -1)


def preview_grid(images: Sequence[np.ndarray], labels: Sequence[np.ndarray], scale: int = 3,
                 gap: int = 4) -> np.ndarray:
    """The PNG grid (H, W, 3) uint8: a row per patch; panels image/labels at the middle section
    and at the middle row (see the module doc). Grey scale fixed by the first (unaugmented)
    patch's 1st..99th percentile, so intensity changes show."""
    lo, hi = np.percentile(images[0][0], [1, 99])
    rows = []
    for image, label in zip(images, labels, strict=True):
        z, y, x = label.shape
        panels = [_gray(image[0, z // 2], lo, hi), label_colors(label[z // 2]),
                  _gray(image[0, :, y // 2], lo, hi), label_colors(label[:, y // 2])]
        height = max(p.shape[0] for p in panels)
        padded = []
        for p in panels:
            block = np.full((height, p.shape[1], 3), 40, np.uint8)
            block[:p.shape[0]] = p
            padded.append(block)
            padded.append(np.full((height, gap // scale or 1, 3), 255, np.uint8))
        rows.append(np.concatenate(padded[:-1], axis=1))
        rows.append(np.full((gap // scale or 1, rows[-1].shape[1], 3), 255, np.uint8))
    grid = np.concatenate(rows[:-1], axis=0)
    return np.repeat(np.repeat(grid, scale, 0), scale, 1)


def write_png(path: str | Path, rgb: np.ndarray) -> Path:
    """Write an (H, W, 3) uint8 array as an RGB PNG (stdlib zlib; atomically)."""
    from pytc_core.files import write_atomic

    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[i].tobytes() for i in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, png)
