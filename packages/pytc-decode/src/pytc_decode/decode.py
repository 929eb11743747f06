"""Decoding affinity volumes into segmentation volumes, whole or block by block.

The volume-level layer the CLI calls: checks the options, reads affinities (channels first,
spatial axes (z, y, x), sizes in voxels), runs :func:`pytc_decode.affinity_cc` or the
blockwise steps of :mod:`pytc_decode.blockwise`, writes the labels and returns
:class:`DecodeStats` for the summary.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from pytc_core.bbox import BBox
from pytc_core.blocks import BlockProgress, parse_share, plan_blocks, select_share
from pytc_core.cli import progress
from pytc_core.errors import UserError, unknown_name_error
from pytc_core.files import write_atomic
from pytc_core.volume import Volume, create_volume, parse_uri, sidecar_path
from pytc_decode.blockwise import BlockSummary, label_block, reduce_blocks, relabel_block
from pytc_decode.cc import affinity_cc, label_dtype, prepare_affinities

__all__ = [
    "DecodeConfig",
    "DecodeStats",
    "check_config",
    "decode_blockwise",
    "decode_volume",
    "default_output_uri",
    "segment_stats",
]

log = logging.getLogger("pytc.decode")

METHODS = ("cc", "mws")
STEPS = ("all", "label", "reduce", "relabel")


@dataclass
class DecodeConfig:
    """Options of ``pytc-decode`` (TOML table ``[decode]`` or a whole file)."""

    threshold: float = 0.5
    min_size: int = 0
    small: Literal["remove", "merge"] = "remove"
    mask: str | None = None
    foreground_channel: int | None = None
    foreground_threshold: float | None = None
    block_size: tuple[int, int, int] | None = None
    method: str = "cc"
    dust: bool = False
    #: long-range offsets (z, y, x) of channels 3.. for ``method = "mws"``
    offsets: list[list[int]] = field(default_factory=list)


@dataclass
class DecodeStats:
    """Summary of a segmentation: segment count, sizes (voxels), labelled voxels."""

    segments: int
    min_size: int
    median_size: float
    max_size: int
    voxels_labelled: int
    voxels_total: int
    #: with ``dust``: number of segments of 1, 2-9, 10-99, 100-999 voxels
    dust: dict[str, int] | None = None

    def line(self) -> str:
        pct = 100.0 * self.voxels_labelled / max(self.voxels_total, 1)
        text = (f"{self.segments} segments (sizes min {self.min_size} / median "
                f"{self.median_size:g} / max {self.max_size} voxels), {self.voxels_labelled} of "
                f"{self.voxels_total} voxels labelled ({pct:.1f}%)")
        if self.dust is not None:
            text += "; dust: " + ", ".join(f"{k} voxels: {v}" for k, v in self.dust.items())
        return text


def segment_stats(sizes: np.ndarray, voxels_total: int, dust: bool = False) -> DecodeStats:
    """Stats from voxel counts per id (index 0 = background, ignored)."""
    s = np.asarray(sizes, dtype=np.int64)[1:]
    s = s[s > 0]
    dust_counts = None
    if dust:
        edges = {"1": (1, 2), "2-9": (2, 10), "10-99": (10, 100), "100-999": (100, 1000)}
        dust_counts = {k: int(((s >= a) & (s < b)).sum()) for k, (a, b) in edges.items()}
    if s.size == 0:
        return DecodeStats(0, 0, 0.0, 0, 0, voxels_total, dust_counts)
    return DecodeStats(int(s.size), int(s.min()), float(np.median(s)), int(s.max()), int(s.sum()),
                       voxels_total, dust_counts)


def default_output_uri(aff_uri: str) -> str:
    """Where the segmentation goes when no ``--output`` is given: beside the affinities.

    ``dir/aff`` → ``dir/aff_seg`` (precomputed), ``x.h5:aff`` → ``x.h5:aff_seg``,
    ``x.zarr`` → ``x_seg.zarr``, ``x.zarr/aff`` → ``x.zarr/aff_seg``, ``x.npy`` → ``x_seg.npy``.
    """
    loc = parse_uri(aff_uri)
    uri = aff_uri.rstrip("/")
    if loc.format == "hdf5":
        return f"{loc.path}:{(loc.inner or 'affinities')}_seg"
    if loc.format == "zarr":
        if loc.inner:
            return f"{loc.path}/{loc.inner}_seg"
        return str(loc.path.with_name(loc.path.stem + "_seg.zarr"))
    if loc.format in ("tiff", "npy"):
        return str(loc.path.with_name(loc.path.stem + "_seg" + loc.path.suffix))
    return uri + "_seg"


def check_config(cfg: DecodeConfig, aff_vol: Volume) -> None:
    """UserError for options that cannot work with this affinity volume (before any write)."""
    from pytc_core.volume import require_channels

    require_channels(aff_vol, 3)
    if not 0.0 <= cfg.threshold <= 1.0:  # also rejects NaN
        raise UserError(f"threshold {cfg.threshold} is outside [0, 1]", "use e.g. --threshold 0.5")
    if cfg.min_size < 0:
        raise UserError(f"min size {cfg.min_size} is negative", "use 0 to keep every segment")
    if cfg.method not in METHODS:
        raise unknown_name_error("method", cfg.method, METHODS)
    if (cfg.foreground_channel is None) != (cfg.foreground_threshold is None):
        raise UserError("--foreground-threshold and --foreground-channel go together",
                        "give both, e.g. --foreground-channel 3 --foreground-threshold 0.5")
    if cfg.foreground_channel is not None:
        c = aff_vol.num_channels or 0
        if not 0 <= cfg.foreground_channel < c:
            raise UserError(f"foreground channel {cfg.foreground_channel} does not exist in "
                            f"{aff_vol.uri} ({c} channels)", f"use a channel in 0..{c - 1}")
        if not 0.0 <= cfg.foreground_threshold <= 1.0:
            raise UserError(f"foreground threshold {cfg.foreground_threshold} is outside [0, 1]",
                            "use e.g. --foreground-threshold 0.5")
    if cfg.block_size is not None and any(b <= 0 for b in cfg.block_size):
        raise UserError(f"block size {cfg.block_size} must be positive", "use e.g. --block-size 128")
    if cfg.block_size is not None and cfg.small == "merge" and cfg.min_size > 1:
        raise UserError("--small merge is not available blockwise",
                        "use --small remove with --block-size, or decode the whole volume")
    if cfg.block_size is not None and cfg.method != "cc":
        raise UserError(f"method {cfg.method} is not available blockwise", "use --method cc")
    if cfg.method == "mws":
        n = aff_vol.num_channels or 0
        if len(cfg.offsets) != n - 3:
            raise UserError(f"--method mws needs the offsets of the {n - 3} long-range channels "
                            f"of {aff_vol.uri}, got {len(cfg.offsets)}",
                            "list them in the config, e.g. offsets = [[-3, 0, 0], [0, -3, 0]]")


def _check_mask(mask_vol: Volume | None, aff_vol: Volume) -> None:
    if mask_vol is None:
        return
    if mask_vol.ndim != 3 or mask_vol.bbox != aff_vol.bbox:
        raise UserError(f"mask {mask_vol.uri} has shape {mask_vol.shape} at offset "
                        f"{mask_vol.offset}, the affinities cover {aff_vol.bbox}",
                        "pass a 3D mask over the same (z, y, x) box")


def _mask_for(aff: np.ndarray, mask: np.ndarray | None, cfg: DecodeConfig) -> np.ndarray | None:
    if cfg.foreground_channel is None:
        return mask
    fg_aff, fg_t = prepare_affinities(aff[[0, 1, cfg.foreground_channel]], cfg.foreground_threshold)
    fg = fg_aff[2] > fg_t
    return fg if mask is None else fg & (mask != 0)


def _create_output(out_uri: str, aff_vol: Volume, dtype: np.dtype, chunk: tuple[int, int, int],
                   overwrite: bool, exist_ok: bool = False) -> Volume:
    return create_volume(out_uri, aff_vol.spatial_shape, dtype, voxel_size=aff_vol.voxel_size,
                         offset=aff_vol.offset, chunk_size=chunk, layer_type="segmentation",
                         overwrite=overwrite, exist_ok=exist_ok)


def decode_volume(aff_vol: Volume, out_uri: str, cfg: DecodeConfig, *,
                  mask_vol: Volume | None = None, overwrite: bool = False) -> DecodeStats:
    """Decode the whole affinity volume in memory and write the labels to ``out_uri``."""
    check_config(cfg, aff_vol)
    _check_mask(mask_vol, aff_vol)
    if not overwrite:
        from pytc_core.volume import volume_exists

        if volume_exists(out_uri):
            raise UserError(f"output {out_uri} already exists",
                            "pass --overwrite to replace it, or choose another output")
    aff = aff_vol.read()
    mask = _mask_for(aff, None if mask_vol is None else mask_vol.read(), cfg)
    if cfg.method == "mws":
        from pytc_decode.mws import mutex_watershed

        labels = mutex_watershed(aff, cfg.offsets, cfg.threshold, cfg.min_size, mask=mask)
    else:
        labels = affinity_cc(aff, cfg.threshold, cfg.min_size, mask=mask, small=cfg.small)
    del aff
    out = _create_output(out_uri, aff_vol, labels.dtype, tuple(min(64, s) for s in labels.shape),
                         overwrite)
    out.write(labels)
    return segment_stats(np.bincount(labels.reshape(-1)), labels.size, cfg.dust)


def _block_file(workdir: Path, block: BBox, kind: str = "block", suffix: str = ".npz") -> Path:
    return workdir / (kind + "_" + "_".join(map(str, block.start)) + suffix)


def decode_blockwise(aff_vol: Volume, out_uri: str, cfg: DecodeConfig, *,
                     mask_vol: Volume | None = None, overwrite: bool = False,
                     share: str | None = None, step: str = "all",
                     show_progress: bool = True) -> DecodeStats | None:
    """Decode block by block (``cfg.block_size`` voxels, z, y, x): label, reduce, relabel.

    ``step`` runs one step only (``label`` and ``relabel`` take a ``share`` ``"i/n"`` of the
    blocks, for Slurm array tasks); ``all`` runs the three in turn. The label step keeps each
    block's local labels and face summary in the ``pytc_decode`` folder beside (or inside) the
    output; the relabel step maps them to final ids and writes the output once, so re-running
    any block is harmless. Finished blocks are recorded: an interrupted run (``all`` or a
    share) started again with the same options resumes where it stopped; ``--overwrite``
    starts afresh. The folder is removed at the end of ``all`` (after relabel shares, only the
    local labels are). Returns the stats
    after the reduce step (None after ``label``/``relabel`` shares).
    """
    check_config(cfg, aff_vol)
    _check_mask(mask_vol, aff_vol)
    if step not in STEPS:
        raise unknown_name_error("step", step, STEPS)
    if share is not None:
        parse_share(share)
        if step not in ("label", "relabel"):
            raise UserError("--blocks i/n selects the blocks of the label or relabel step",
                            "add --step label (then --step reduce, then --step relabel)")
    block_size = cfg.block_size
    box = aff_vol.bbox
    blocks = plan_blocks(box, block_size)
    dtype = label_dtype(box.size)
    chunk = tuple(b if b < 64 or b % 64 else 64 for b in block_size)
    workdir = sidecar_path(out_uri, "pytc_decode")
    if workdir is None:
        raise UserError(f"blockwise decoding needs a local output, got {out_uri}",
                        "write to a local path, then upload")
    key = f"{aff_vol.uri}|{box}|{block_size}|{cfg.threshold}|{cfg.mask}|{cfg.foreground_channel}"
    label_done = BlockProgress(workdir / "label", key)
    relabel_done = BlockProgress(workdir / "relabel", key)
    tables_file = workdir / "tables.npz"

    if step in ("all", "label"):
        from pytc_core.volume import volume_exists

        # shares of one run, or a run that was interrupted (its folder is still there), go on
        # with the existing output; anything else needs --overwrite to replace it
        resume = not overwrite and (share is not None or
                                    (workdir.exists() and volume_exists(out_uri)))
        if resume:
            _create_output(out_uri, aff_vol, dtype, chunk, False, exist_ok=True)
        else:
            _create_output(out_uri, aff_vol, dtype, chunk, overwrite)
            shutil.rmtree(workdir, ignore_errors=True)  # stale files of an earlier run
        mine = select_share(blocks, share) if share else blocks
        try:
            for block in progress(label_done.pending(mine), "label blocks", enabled=show_progress):
                aff = aff_vol.read(block)
                mask = _mask_for(aff, None if mask_vol is None else mask_vol.read(block), cfg)
                lab, summary = label_block(aff, cfg.threshold, block, box, mask)
                local = lab.astype(dtype, copy=False)
                write_atomic(_block_file(workdir, block, "labels", ".npy"),
                             lambda fh, a=local: np.save(fh, a, allow_pickle=False))
                write_atomic(_block_file(workdir, block), summary.to_bytes())
                label_done.mark_done(block)
        except UserError:
            if not resume:  # bad input found partway (e.g. NaN): leave nothing behind
                from pytc_core.volume import delete_volume

                shutil.rmtree(workdir, ignore_errors=True)
                delete_volume(out_uri)
            raise
        if step == "label":
            return None
    stats = None
    if step in ("all", "reduce"):
        missing = [b for b in blocks if not _block_file(workdir, b).exists()]
        if missing:
            raise UserError(f"{len(missing)} of {len(blocks)} blocks are not labelled yet "
                            f"(first: {missing[0]})", "run every --step label share first")
        summaries = [BlockSummary.from_bytes(_block_file(workdir, b).read_bytes()) for b in blocks]
        tables = reduce_blocks(summaries, box, cfg.min_size, dtype)
        np.savez(tables_file, starts=np.array([b.bbox.start for b in summaries]),
                 counts=np.array([t.size for t in tables.tables.values()]),
                 table=np.concatenate(list(tables.tables.values())), sizes=tables.sizes)
        stats = segment_stats(tables.sizes, box.size, cfg.dust)
        if step == "reduce":
            return stats
    if not tables_file.exists():
        raise UserError(f"{tables_file} is missing", "run --step reduce before --step relabel")
    with np.load(tables_file) as f:
        starts, counts, flat = f["starts"], f["counts"], f["table"]
        if stats is None:
            stats = segment_stats(f["sizes"], box.size, cfg.dust)
    bounds = np.concatenate([[0], np.cumsum(counts)])
    table_of = {tuple(int(v) for v in s): flat[bounds[i]:bounds[i + 1]]
                for i, s in enumerate(starts)}
    from pytc_core.volume import open_volume

    out = open_volume(out_uri)
    mine = select_share(blocks, share) if share else blocks
    for block in progress(relabel_done.pending(mine), "relabel blocks", enabled=show_progress):
        local = np.load(_block_file(workdir, block, "labels", ".npy"))
        out.write(relabel_block(local, table_of[block.start]), offset=block.start)
        relabel_done.mark_done(block)
    if step == "all":
        shutil.rmtree(workdir, ignore_errors=True)
    elif not relabel_done.pending(blocks):
        # every block is final: drop the bulky local labels, keep the (small) tables and
        # markers so a repeated relabel share still finds its blocks done
        for path in workdir.glob("labels_*.npy"):
            path.unlink(missing_ok=True)
    return stats if share is None else None
