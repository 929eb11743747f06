"""The decode stage: an affinity volume (URI) → a segmentation volume (URI), whole or blockwise.

:class:`DecodeConfig` holds every option (TOML table ``[decode]``); :func:`run_decode` opens
the volumes, checks the options, runs the method (whole volume) or the three blockwise steps
:func:`label_step`, :func:`reduce_step` and :func:`relabel_step` through the core block runner
(:func:`pytc_core.blocks.run_blocks`), writes the labels and the resolved config beside them,
and returns a :class:`DecodeResult`. Affinities are channels first, spatial axes (z, y, x),
sizes in voxels.

Methods are whole-volume segmenters in :data:`SEGMENTERS` (``name -> fn(aff, mask, cfg)``);
a new method is one function and one entry there (plus :data:`BLOCKWISE_METHODS` when it has
blockwise steps).
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np

from pytc_core.bbox import BBox
from pytc_core.blocks import BlockProgress, BlockRunResult, plan_blocks, run_blocks
from pytc_core.cli import current_command, progress_counter
from pytc_core.errors import UserError, unknown_name_error
from pytc_core.files import write_atomic
from pytc_core.output_run import OutputRun, claim_output, open_input
from pytc_core.volume import Volume, parse_uri, sidecar_path
from pytc_decode.blockwise import BlockSummary, label_block, reduce_blocks, relabel_block
from pytc_decode.cc import (
    affinity_cc,
    apply_sigmoid,
    check_value_range,
    label_dtype,
    merge_small,
    prepare_affinities,
)
from pytc_decode.ws_blockwise import WsBlockSummary, agglomerate_blocks, ws_fragment_block

__all__ = [
    "BLOCKWISE_METHODS",
    "SEGMENTERS",
    "STEPS",
    "DecodeConfig",
    "DecodeResult",
    "DecodeStats",
    "check_config",
    "default_output_uri",
    "label_step",
    "reduce_step",
    "relabel_step",
    "run_decode",
    "segment_stats",
]

log = logging.getLogger("pytc.decode")

STEPS = ("all", "label", "reduce", "relabel")


@dataclass(frozen=True)
class DecodeConfig:
    """Options of ``pytc-decode`` (TOML table ``[decode]`` or a whole file)."""

    threshold: float = 0.5
    min_size: int = 0
    small: Literal["remove", "merge"] = "remove"
    mask: str | None = None
    foreground_channel: int | None = None
    foreground_threshold: float | None = None
    #: blockwise decoding with blocks of this many voxels: ``128`` or ``[64, 128, 128]`` (z, y, x)
    block_size: tuple[int, int, int] | int | None = None
    method: str = "cc"
    #: the affinities are logits: apply a sigmoid while reading
    logits: bool = False
    #: read missing chunks of precomputed inputs as zeros (layers sparse on purpose)
    fill_missing: bool = False
    dust: bool = False
    #: long-range offsets (z, y, x) of channels 3.. for ``method = "mws"``
    offsets: tuple[tuple[int, int, int], ...] = ()
    #: ``method = "ws"``: merge fragments while ``1 - mean boundary affinity`` is below this
    #: (higher merges more); several thresholds give one segmentation each from one pass
    merge_threshold: tuple[float, ...] | float = (0.5,)
    #: ``ws`` seeds: maxima of the distance transform of the voxels none of whose edges is at
    #: or below ``seed_threshold``, one per ``seed_radius`` voxels; per z-section with
    #: ``seeds_2d`` (anisotropic data)
    seed_threshold: float = 0.5
    seed_radius: int = 2
    seeds_2d: bool = False
    #: ``ws`` initial edge scores: ``mean`` boundary affinity or its ``quantile``
    merge_function: Literal["mean", "quantile"] = "mean"
    quantile: float = 0.5
    #: ``ws`` blockwise: voxels of context around each block for its seeds and flooding
    ws_halo: int = 8

    def __post_init__(self) -> None:
        if self.block_size is not None:
            from pytc_core.cli import parse_block_size

            object.__setattr__(self, "block_size", parse_block_size(self.block_size,
                                                                    "--block-size"))
        if isinstance(self.merge_threshold, int | float):
            object.__setattr__(self, "merge_threshold", (float(self.merge_threshold),))

    @property
    def merge_thresholds(self) -> tuple[float, ...]:
        """``merge_threshold`` as a tuple (one or several thresholds)."""
        t = self.merge_threshold
        return (float(t),) if isinstance(t, int | float) else tuple(t)


@dataclass(frozen=True)
class DecodeStats:
    """Summary of a segmentation: segment count, sizes (voxels), labelled voxels."""

    segments: int
    min_size: int
    median_size: float
    max_size: int
    voxels_labelled: int
    voxels_total: int
    #: with ``dust``: (smallest, largest, segments, voxels) per size bin 1, 2-9, 10-99, ...
    histogram: tuple[tuple[int, int, int, int], ...] | None = None

    def line(self) -> str:
        pct = 100.0 * self.voxels_labelled / max(self.voxels_total, 1)
        return (f"{self.segments} segments (sizes min {self.min_size} / "
                f"median {self.median_size:g} / max {self.max_size} voxels), "
                f"{self.voxels_labelled} of {self.voxels_total} voxels labelled ({pct:.1f}%)")

    def histogram_text(self, width: int = 30) -> str:
        """The size histogram as aligned lines: bin, segments, share of labelled voxels, bar."""
        if not self.histogram:
            return "segment sizes: no segments"
        most = max(n for _, _, n, _ in self.histogram) or 1
        lines = ["segment sizes (voxels)   segments   % of labelled voxels"]
        for lo, hi, n, vox in self.histogram:
            name = str(lo) if lo == hi else f"{lo}-{hi}"
            pct = 100.0 * vox / max(self.voxels_labelled, 1)
            bar = "#" * (round(width * n / most) if n else 0)
            lines.append(f"{name:>22}   {n:>8}   {pct:>6.1f}%  {bar}".rstrip())
        return "\n".join(lines)


def size_histogram(sizes: np.ndarray) -> tuple[tuple[int, int, int, int], ...]:
    """(smallest, largest, segments, voxels) per decade of segment size (voxels): 1, 2-9,
    10-99, 100-999, ... up to the bin of the largest segment (empty bins included)."""
    s = np.asarray(sizes, dtype=np.int64)
    if s.size == 0:
        return ()
    edges = [1, 2]
    while edges[-1] <= s.max():
        edges.append(10 if edges[-1] == 2 else edges[-1] * 10)
    out = []
    for lo, nxt in zip(edges[:-1], edges[1:], strict=True):
        sel = (s >= lo) & (s < nxt)
        out.append((lo, nxt - 1, int(sel.sum()), int(s[sel].sum())))
    return tuple(out)


def segment_stats(sizes: np.ndarray, voxels_total: int, dust: bool = False) -> DecodeStats:
    """Stats from voxel counts per id (index 0 = background, not counted)."""
    s = np.asarray(sizes, dtype=np.int64)[1:]
    s = s[s > 0]
    hist = size_histogram(s) if dust else None
    if s.size == 0:
        return DecodeStats(0, 0, 0.0, 0, 0, voxels_total, hist)
    return DecodeStats(int(s.size), int(s.min()), float(np.median(s)), int(s.max()), int(s.sum()),
                       voxels_total, hist)


@dataclass(frozen=True)
class DecodeResult:
    """What :func:`run_decode` did."""

    #: the segmentation's URI
    output: str
    step: str
    #: the segmentation's summary (None after a label step or a share of the relabel step)
    stats: DecodeStats | None
    #: blockwise: the blocks this call's steps planned, skipped (done before) and processed
    blocks: dict[str, BlockRunResult] = field(default_factory=dict)
    #: seconds per phase (read/segment/write, or label/reduce/relabel)
    timings: dict[str, float] = field(default_factory=dict)
    #: ``ws`` with several merge thresholds: the further (output, stats), one per threshold
    more: tuple[tuple[str, DecodeStats], ...] = ()

    @property
    def outputs(self) -> list[str]:
        """Every segmentation written (one per merge threshold for a multi-threshold ``ws``)."""
        return [self.output, *(uri for uri, _ in self.more)]

    def summary(self) -> str:
        """One human-readable line for stderr (a line per segmentation)."""
        if self.stats is not None:
            return "\n".join(f"{uri}: {stats.line()}" for uri, stats in
                             ((self.output, self.stats), *self.more))
        done = ", ".join(f"{k} {r.processed} of {r.planned} blocks"
                         + (f" ({r.skipped} done before)" if r.skipped else "")
                         for k, r in self.blocks.items())
        return f"{self.output}: step {self.step} done: {done}"


# --- methods ----------------------------------------------------------------------------------

Segmenter = Callable[[np.ndarray, "np.ndarray | None", DecodeConfig], np.ndarray]


def _segment_cc(aff: np.ndarray, mask: np.ndarray | None, cfg: DecodeConfig) -> np.ndarray:
    return affinity_cc(aff, cfg.threshold, cfg.min_size, mask=mask, small=cfg.small)


def _segment_mws(aff: np.ndarray, mask: np.ndarray | None, cfg: DecodeConfig) -> np.ndarray:
    from pytc_decode.mws import mutex_watershed

    merge = cfg.small == "merge" and cfg.min_size > 1
    labels = mutex_watershed(aff, cfg.offsets, cfg.threshold, 0 if merge else cfg.min_size,
                             mask=mask)
    if merge:
        merge_small(labels, prepare_affinities(aff[:3], cfg.threshold)[0], cfg.min_size)
    return labels


def _segment_ws(aff: np.ndarray, mask: np.ndarray | None, cfg: DecodeConfig,
                voxel_size: tuple[float, ...] = (1.0, 1.0, 1.0)) -> list[np.ndarray]:
    """Seeded watershed + agglomeration: one segmentation per merge threshold."""
    from pytc_decode.ws import affinity_watershed

    check_value_range(aff[:3], "the first three channels")
    segs = affinity_watershed(
        aff, list(cfg.merge_thresholds), seed_threshold=cfg.seed_threshold,
        seed_radius=cfg.seed_radius, seeds_2d=cfg.seeds_2d, merge_function=cfg.merge_function,
        quantile=cfg.quantile, voxel_size=voxel_size, mask=mask, min_size=cfg.min_size,
        small=cfg.small)
    assert isinstance(segs, list)
    return segs


#: whole-volume methods: ``name -> fn(affinities (C, Z, Y, X), mask (Z, Y, X) | None, cfg)``
SEGMENTERS: dict[str, Segmenter] = {
    "cc": _segment_cc, "mws": _segment_mws, "ws": lambda a, m, c: _segment_ws(a, m, c)[0]}
#: methods with blockwise steps (label / reduce / relabel; for ws: fragments / agglomerate /
#: relabel)
BLOCKWISE_METHODS = ("cc", "ws")


# --- checks and helpers -----------------------------------------------------------------------

def default_output_uri(aff_uri: str) -> str:
    """Where the segmentation goes when no ``--output`` is given: beside the affinities.

    ``dir/aff`` → ``dir/aff_seg`` (precomputed), ``x.h5:aff`` → ``x.h5:aff_seg``,
    ``x.zarr`` → ``x_seg.zarr``, ``x.zarr/aff`` → ``x.zarr/aff_seg``, ``x.npy`` → ``x_seg.npy``.
    """
    return suffixed_uri(aff_uri, "_seg", "affinities")


def suffixed_uri(uri: str, suffix: str, dataset: str = "segmentation") -> str:
    """``uri`` with ``suffix`` added to its volume's name, in the same format and place
    (``dataset`` names an HDF5 file's dataset when the URI gives none)."""
    loc = parse_uri(uri)
    if loc.format == "hdf5":
        return f"{loc.path}:{(loc.inner or dataset)}{suffix}"
    if loc.format == "zarr" and loc.path is not None:
        if loc.inner:
            return f"{loc.path}/{loc.inner}{suffix}"
        return str(loc.path.with_name(loc.path.stem + suffix + ".zarr"))
    if loc.format in ("tiff", "npy") and loc.path is not None:
        return str(loc.path.with_name(loc.path.stem + suffix + loc.path.suffix))
    return uri.rstrip("/") + suffix


def threshold_output_uris(out_uri: str, thresholds: Sequence[float | None]) -> list[str]:
    """The outputs of a multi-threshold ``ws`` decode: ``out_uri`` itself for one threshold,
    else one per threshold with ``_t<threshold>`` added (``seg`` → ``seg_t0.3``, ...)."""
    if len(thresholds) == 1:
        return [out_uri]
    return [suffixed_uri(out_uri, f"_t{t:g}") for t in thresholds]


def check_config(cfg: DecodeConfig, aff_vol: Volume) -> None:
    """UserError for options that cannot work with this affinity volume (before any write)."""
    from pytc_core.volume import require_channels

    require_channels(aff_vol, 3)
    if not 0.0 <= cfg.threshold <= 1.0:  # also rejects NaN
        raise UserError(f"threshold {cfg.threshold} is outside [0, 1]", "use e.g. --threshold 0.5")
    if cfg.min_size < 0:
        raise UserError(f"min size {cfg.min_size} is negative", "use 0 to keep every segment")
    if cfg.method not in SEGMENTERS:
        raise unknown_name_error("method", cfg.method, list(SEGMENTERS))
    if (cfg.foreground_channel is None) != (cfg.foreground_threshold is None):
        raise UserError("--foreground-threshold and --foreground-channel go together",
                        "give both, e.g. --foreground-channel 3 --foreground-threshold 0.5")
    if cfg.foreground_channel is not None:
        c = aff_vol.num_channels or 0
        if not 0 <= cfg.foreground_channel < c:
            raise UserError(f"foreground channel {cfg.foreground_channel} does not exist in "
                            f"{aff_vol.uri} ({c} channels)", f"use a channel in 0..{c - 1}")
        assert cfg.foreground_threshold is not None
        if not 0.0 <= cfg.foreground_threshold <= 1.0:
            raise UserError(f"foreground threshold {cfg.foreground_threshold} is outside [0, 1]",
                            "use e.g. --foreground-threshold 0.5")
    if cfg.logits and np.dtype(aff_vol.dtype).kind != "f":
        raise UserError(f"--logits needs float affinities, {aff_vol.uri} holds {aff_vol.dtype}",
                        "integer affinities are read as value / max already: drop --logits")
    if cfg.block_size is not None and cfg.small == "merge" and cfg.min_size > 1:
        raise UserError("--small merge is not available blockwise",
                        "use --small remove with --block-size, or decode the whole volume")
    if cfg.block_size is not None and cfg.method not in BLOCKWISE_METHODS:
        raise UserError(f"method {cfg.method} is not available blockwise",
                        f"use --method {' or '.join(BLOCKWISE_METHODS)}, or drop --block-size")
    if cfg.method == "ws":
        check_ws_config(cfg)
    elif len(cfg.merge_thresholds) != 1:
        raise UserError("several merge thresholds need --method ws",
                        "add --method ws, or give one threshold")
    if cfg.method == "mws":
        n = aff_vol.num_channels or 0
        if len(cfg.offsets) != n - 3:
            raise UserError(f"--method mws needs the offsets of the {n - 3} long-range channels "
                            f"of {aff_vol.uri}, got {len(cfg.offsets)}",
                            "list them in the config, e.g. offsets = [[-3, 0, 0], [0, -3, 0]]")


def check_ws_config(cfg: DecodeConfig) -> None:
    """UserError for ``ws`` options out of range (before any data is read)."""
    if not cfg.merge_thresholds:
        raise UserError("the list of merge thresholds is empty",
                        "give one or more, e.g. --merge-threshold 0.5 or 0.2,0.3,0.5")
    for t in cfg.merge_thresholds:
        if not 0.0 <= t <= 1.0:  # also rejects NaN
            raise UserError(f"merge threshold {t} is outside [0, 1]",
                            "use e.g. --merge-threshold 0.5")
    if len(set(cfg.merge_thresholds)) != len(cfg.merge_thresholds):
        raise UserError(f"merge thresholds {list(cfg.merge_thresholds)} repeat a value",
                        "list each threshold once")
    if not 0.0 <= cfg.seed_threshold <= 1.0:
        raise UserError(f"seed threshold {cfg.seed_threshold} is outside [0, 1]",
                        "use e.g. --set seed_threshold=0.5")
    if cfg.seed_radius < 0:
        raise UserError(f"seed radius {cfg.seed_radius} is negative", "use e.g. 2 (voxels)")
    if cfg.ws_halo < 0:
        raise UserError(f"ws_halo {cfg.ws_halo} is negative", "use e.g. 8 (voxels)")
    if cfg.block_size is not None and len(cfg.merge_thresholds) > 1:
        raise UserError("several merge thresholds are whole-volume only",
                        "give one --merge-threshold with --block-size (one run per threshold)")
    if cfg.block_size is not None and cfg.merge_function != "mean":
        raise UserError(f"merge_function {cfg.merge_function} is whole-volume only",
                        "use merge_function = 'mean' with --block-size")
    if not 0.0 <= cfg.quantile <= 1.0:
        raise UserError(f"quantile {cfg.quantile} is outside [0, 1]", "use e.g. 0.5 (median)")


def _check_mask(mask_vol: Volume | None, aff_vol: Volume) -> None:
    if mask_vol is None:
        return
    if mask_vol.ndim != 3 or mask_vol.bbox != aff_vol.bbox:
        raise UserError(f"mask {mask_vol.uri} has shape {mask_vol.shape} at offset "
                        f"{mask_vol.offset}, the affinities cover {aff_vol.bbox}",
                        "pass a 3D mask over the same (z, y, x) box")


def _read_inputs(aff_vol: Volume, mask_vol: Volume | None, cfg: DecodeConfig,
                 box: BBox | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Affinities (sigmoid applied with ``logits``) and the voxels to segment (mask and
    foreground channel combined; None = all) of ``box`` (default: the whole volume)."""
    aff = aff_vol.read(box)
    if cfg.logits:
        aff = apply_sigmoid(aff)
    mask = None if mask_vol is None else mask_vol.read(box)
    if cfg.foreground_channel is None:
        return aff, mask
    assert cfg.foreground_threshold is not None
    fg_channel = aff[cfg.foreground_channel]
    check_value_range(fg_channel, f"the foreground channel {cfg.foreground_channel}")
    fg_aff, fg_t = prepare_affinities(aff[[0, 1, cfg.foreground_channel]],
                                      cfg.foreground_threshold)
    fg = fg_aff[2] > fg_t
    return aff, (fg if mask is None else fg & (mask != 0))


def _create_output(claim: OutputRun, aff_vol: Volume, dtype: np.dtype, chunk: tuple[int, ...],
                   restart: bool = False) -> Volume:
    """The output volume: created, or reopened when ``claim`` resumes this run's output
    (``restart``: a whole-volume decode writes it again from scratch)."""
    return claim.create(aff_vol.spatial_shape, dtype, voxel_size=aff_vol.voxel_size,
                        offset=aff_vol.offset, chunk_size=chunk, layer_type="segmentation",
                        restart=restart)


def _finish_output(claim: OutputRun, cfg: DecodeConfig) -> None:
    """The resolved config beside the output, then the output marked complete."""
    from pytc_core.config import save_config_next_to

    save_config_next_to(claim.uri, cfg, command="pytc-decode")
    claim.complete()


@contextmanager
def _timed(timings: dict[str, float], phase: str) -> Iterator[None]:
    t0 = time.perf_counter()
    try:
        yield
    finally:
        timings[phase] = timings.get(phase, 0.0) + time.perf_counter() - t0
        log.debug("phase %s: %.2f s", phase, timings[phase])


# --- whole volume -----------------------------------------------------------------------------

def _decode_whole(aff_vol: Volume, mask_vol: Volume | None, claims: Sequence[OutputRun],
                  cfgs: Sequence[DecodeConfig], cfg: DecodeConfig, timings: dict[str, float]
                  ) -> list[DecodeStats]:
    """Decode in memory and write one segmentation per claimed output (several only for a
    multi-threshold ``ws``; ``cfgs`` is each output's config); the stats of each."""
    with _timed(timings, "read"):
        aff, mask = _read_inputs(aff_vol, mask_vol, cfg)
    with _timed(timings, "segment"):
        if cfg.method == "ws":  # one agglomeration pass for every threshold
            segs = _segment_ws(aff, mask, cfg, aff_vol.voxel_size)
        else:
            segs = [SEGMENTERS[cfg.method](aff, mask, cfg)]
    del aff
    stats = []
    with _timed(timings, "write"):
        for claim, out_cfg, labels in zip(claims, cfgs, segs, strict=True):
            out = _create_output(claim, aff_vol, labels.dtype,
                                 tuple(min(64, s) for s in labels.shape), restart=True)
            out.write(labels)
            _finish_output(claim, out_cfg)
            stats.append(segment_stats(np.bincount(labels.reshape(-1)), labels.size, cfg.dust))
    return stats


# --- blockwise --------------------------------------------------------------------------------

@dataclass(frozen=True)
class BlockwiseRun:
    """Everything the three blockwise steps share: inputs, output, plan, scratch folder."""

    aff_vol: Volume
    mask_vol: Volume | None
    out_uri: str
    cfg: DecodeConfig
    blocks: tuple[BBox, ...]
    workdir: Path
    key: str

    @property
    def box(self) -> BBox:
        return self.aff_vol.bbox

    @property
    def dtype(self) -> np.dtype:
        return label_dtype(self.box.size)

    @property
    def chunk(self) -> tuple[int, ...]:
        assert isinstance(self.cfg.block_size, tuple)
        return tuple(b if b < 64 or b % 64 else 64 for b in self.cfg.block_size)

    @property
    def tables_file(self) -> Path:
        return self.workdir / "tables.npz"

    def progress(self, step: str) -> BlockProgress:
        return BlockProgress(self.workdir / step, self.key)

    def block_file(self, block: BBox, kind: str = "block", suffix: str = ".npz") -> Path:
        return self.workdir / (kind + "_" + "_".join(map(str, block.start)) + suffix)


def plan_run(aff_vol: Volume, mask_vol: Volume | None, out_uri: str,
             cfg: DecodeConfig) -> BlockwiseRun:
    """The block plan, scratch folder and run key of a blockwise decode."""
    from pytc_core.config import config_to_dict
    from pytc_decode.resume import input_identity, run_key

    assert cfg.block_size is not None
    workdir = sidecar_path(out_uri, "pytc_decode")
    if workdir is None:
        raise UserError(f"blockwise decoding needs a local output, got {out_uri}",
                        "write to a local path, then upload")
    blocks = tuple(plan_blocks(aff_vol.bbox, cfg.block_size))
    # the whole config except what only changes the printed summary
    description = {
        "config": config_to_dict(replace(cfg, dust=False)),
        "affinities": input_identity(aff_vol, out_uri),
        "mask": None if mask_vol is None else input_identity(mask_vol, out_uri),
    }
    return BlockwiseRun(aff_vol, mask_vol, out_uri, cfg, blocks, workdir,
                        run_key(description))


def label_step(run: BlockwiseRun, claim: OutputRun, *, share: tuple[int, int] | None = None,
               show_progress: bool = True) -> BlockRunResult:
    """Step 1: label each block of this share on its own; keep its local labels and summary.

    Creates the output (or, for a share or an interrupted run, reuses it) and the scratch
    folder with the run's key; blocks already labelled by this run are skipped.
    """
    from pytc_decode.resume import check_run

    if claim.resuming:  # an interrupted run or a share of this run: keep its finished blocks
        check_run(run.workdir, run.key, create=False)  # refuse before touching anything
    else:
        shutil.rmtree(run.workdir, ignore_errors=True)  # files of an earlier run
    _create_output(claim, run.aff_vol, run.dtype, run.chunk)
    check_run(run.workdir, run.key, create=True)
    box, cfg = run.box, run.cfg

    def context(block: BBox) -> BBox:  # ws grows fragments with a halo of context
        return block.grow(cfg.ws_halo).intersect(box) if cfg.method == "ws" else block

    def read(block: BBox) -> tuple[np.ndarray, np.ndarray | None]:
        return _read_inputs(run.aff_vol, run.mask_vol, cfg, context(block))

    def process(block: BBox, data: tuple[np.ndarray, np.ndarray | None]) -> None:
        aff, mask = data
        summary: BlockSummary | WsBlockSummary
        if cfg.method == "ws":
            check_value_range(aff[:3], "the first three channels")
            lab, summary = ws_fragment_block(
                aff, context(block), block, box, seed_threshold=cfg.seed_threshold,
                seed_radius=cfg.seed_radius, seeds_2d=cfg.seeds_2d,
                voxel_size=run.aff_vol.voxel_size, mask=mask)
        else:
            lab, summary = label_block(aff, cfg.threshold, block, box, mask)
        local = lab.astype(run.dtype, copy=False)
        write_atomic(run.block_file(block, "labels", ".npy"),
                     lambda fh: np.save(fh, local, allow_pickle=False))
        write_atomic(run.block_file(block), summary.to_bytes())
        claim.made_progress()  # an interrupt now keeps the finished blocks for a resume

    # bad input found partway (e.g. NaN) in a fresh run: the claim removes everything
    return run_blocks(run.blocks, process, done=run.progress("label"), share=share,
                      read=read, description="label blocks",
                      progress=progress_counter if show_progress else None)


def reduce_step(run: BlockwiseRun) -> DecodeStats:
    """Step 2: join the blocks' segments across faces, number them globally, write the tables."""
    from pytc_decode.resume import check_run

    check_run(run.workdir, run.key, create=False)
    missing = [b for b in run.blocks if not run.block_file(b).exists()]
    if missing:
        raise UserError(f"{len(missing)} of {len(run.blocks)} blocks are not labelled yet "
                        f"(first: {missing[0]})", "run every --step label share first")
    if run.cfg.method == "ws":
        ws_summaries = [WsBlockSummary.from_bytes(run.block_file(b).read_bytes())
                        for b in run.blocks]
        tables = agglomerate_blocks(ws_summaries, run.box, run.cfg.merge_thresholds[0],
                                    run.cfg.min_size, run.dtype)
    else:
        summaries = [BlockSummary.from_bytes(run.block_file(b).read_bytes())
                     for b in run.blocks]
        tables = reduce_blocks(summaries, run.box, run.cfg.min_size, run.dtype)
    starts = np.array(list(tables.tables))
    counts = np.array([t.size for t in tables.tables.values()])
    flat = np.concatenate(list(tables.tables.values()))
    write_atomic(run.tables_file, lambda fh: np.savez(fh, starts=starts, counts=counts,
                                                      table=flat, sizes=tables.sizes))
    return segment_stats(tables.sizes, run.box.size, run.cfg.dust)


def relabel_step(run: BlockwiseRun, claim: OutputRun, *, share: tuple[int, int] | None = None,
                 show_progress: bool = True) -> tuple[BlockRunResult, DecodeStats]:
    """Step 3: map each block's local labels to the final ids and write them to the output.

    Returns what was done and the segmentation's stats (from the reduce step's tables).
    """
    from pytc_decode.resume import check_run

    check_run(run.workdir, run.key, create=False)
    if not run.tables_file.exists():
        raise UserError(f"{run.tables_file} is missing",
                        "run --step reduce before --step relabel")
    with np.load(run.tables_file) as f:
        starts, counts, flat = f["starts"], f["counts"], f["table"]
        stats = segment_stats(f["sizes"], run.box.size, run.cfg.dust)
    bounds = np.concatenate([[0], np.cumsum(counts)])
    table_of = {tuple(int(v) for v in s): flat[bounds[i]:bounds[i + 1]]
                for i, s in enumerate(starts)}
    out = claim.open()

    def read(block: BBox) -> np.ndarray:
        return np.load(run.block_file(block, "labels", ".npy"))

    def process(block: BBox, local: np.ndarray) -> None:
        out.write(relabel_block(local, table_of[block.start]), offset=block.start)
        claim.made_progress()

    done = run.progress("relabel")
    result = run_blocks(run.blocks, process, done=done, share=share, read=read,
                        description="relabel blocks",
                        progress=progress_counter if show_progress else None)
    if share is None or not done.pending(run.blocks):
        _finish_output(claim, run.cfg)  # every block of the output is written
    if share is None:
        shutil.rmtree(run.workdir, ignore_errors=True)
    elif not done.pending(run.blocks):
        # every block is final: drop the bulky local labels, keep the (small) tables and
        # markers so a repeated relabel share still finds its blocks done
        for path in run.workdir.glob("labels_*.npy"):
            path.unlink(missing_ok=True)
    return result, stats


def _decode_blockwise(run: BlockwiseRun, claim: OutputRun, step: str,
                      share: tuple[int, int] | None, show_progress: bool,
                      timings: dict[str, float],
                      blocks: dict[str, BlockRunResult]) -> DecodeStats | None:
    stats = None
    if step in ("all", "label"):
        with _timed(timings, "label"):
            blocks["label"] = label_step(run, claim, share=share, show_progress=show_progress)
    if step in ("all", "reduce"):
        with _timed(timings, "reduce"):
            stats = reduce_step(run)
    if step in ("all", "relabel"):
        with _timed(timings, "relabel"):
            blocks["relabel"], relabel_stats = relabel_step(run, claim, share=share,
                                                            show_progress=show_progress)
        stats = stats or (relabel_stats if share is None else None)
    return stats


# --- the stage --------------------------------------------------------------------------------

def run_decode(aff_uri: str, config: DecodeConfig = DecodeConfig(), *, output: str | None = None,
               overwrite: bool = False, step: str = "all", share: tuple[int, int] | None = None,
               show_progress: bool = True) -> DecodeResult:
    """Decode the affinity volume at ``aff_uri`` into a segmentation volume.

    Whole volume in memory, or block by block with ``config.block_size`` (identical result):
    ``step`` runs one blockwise step only (``label`` and ``relabel`` take ``share=(i, n)``,
    task i of n, for Slurm array tasks); ``all`` runs the three in turn. An interrupted run
    started again with the same options resumes where it stopped; with other options or
    changed inputs it is refused (``overwrite=True`` starts afresh). The resolved config is
    written beside the output (``pytc_config.toml``) by every step.
    """
    cfg = config
    log.debug("resolved config:\n%s", _config_text(cfg))
    if step not in STEPS:
        raise unknown_name_error("step", step, STEPS)
    if cfg.block_size is None and (share is not None or step != "all"):
        raise UserError("--blocks and --step need --block-size", "add e.g. --block-size 128")
    if share is not None and step not in ("label", "relabel"):
        raise UserError("--blocks i/n selects the blocks of the label or relabel step",
                        "add --step label (then --step reduce, then --step relabel)")
    aff_vol = open_input(aff_uri, fill_missing=cfg.fill_missing)
    out_uri = output or default_output_uri(aff_uri)
    mask_vol = open_input(cfg.mask, fill_missing=cfg.fill_missing) if cfg.mask else None
    check_config(cfg, aff_vol)
    _check_mask(mask_vol, aff_vol)
    timings: dict[str, float] = {}
    blocks: dict[str, BlockRunResult] = {}
    more: tuple[tuple[str, DecodeStats], ...] = ()
    run: BlockwiseRun | None = None
    if cfg.block_size is None:
        from pytc_core.output_run import run_key

        ws_thresholds = cfg.merge_thresholds if cfg.method == "ws" else ()
        out_uris = threshold_output_uris(out_uri, ws_thresholds or (None,))
        # each output's config (and run key) holds its own threshold
        out_cfgs = ([replace(cfg, merge_threshold=(t,)) for t in ws_thresholds]
                    if len(out_uris) > 1 else [cfg])
        keys = [run_key("decode", [aff_uri, cfg.mask], replace(c, dust=False)) for c in out_cfgs]
    else:
        run = plan_run(aff_vol, mask_vol, out_uri, cfg)
        out_uris, out_cfgs = [out_uri], [cfg]
        keys = [hashlib.sha256(run.key.encode()).hexdigest()[:16]]

    def explain(_record: object) -> None:  # scratch of a blockwise run with other options
        if run is not None:
            from pytc_decode.resume import check_run

            check_run(run.workdir, run.key, create=False)  # names what differs

    with ExitStack() as stack:
        # before any input data is read: each output's checks, its lease, fresh run or resume
        claims = [stack.enter_context(claim_output(
            uri, stage="decode", key=key, inputs=[aff_uri, cfg.mask], overwrite=overwrite,
            join=step != "all", explain_mismatch=explain, command=current_command()))
            for uri, key in zip(out_uris, keys, strict=True)]
        if run is None:
            log.debug("plan: whole volume %s in memory, method %s", aff_vol.bbox, cfg.method)
            all_stats = _decode_whole(aff_vol, mask_vol, claims, out_cfgs, cfg, timings)
            stats: DecodeStats | None = all_stats[0]
            out_uri, cfg = out_uris[0], out_cfgs[0]
            more = tuple(zip(out_uris[1:], all_stats[1:], strict=True))
        else:
            assert isinstance(cfg.block_size, tuple)
            mine = len(run.blocks) if share is None else len(run.blocks[share[0]::share[1]])
            log.debug("block plan: %d blocks of %s voxels over %s; step %s, this task %d "
                      "blocks%s; scratch %s", len(run.blocks), "x".join(map(str, cfg.block_size)),
                      aff_vol.bbox, step, mine, "" if share is None else
                      f" (share {share[0]}/{share[1]})", run.workdir)
            stats = _decode_blockwise(run, claims[0], step, share, show_progress, timings,
                                      blocks)
            for name, r in blocks.items():
                log.debug("%s: %d of %d blocks processed, %d done before", name, r.processed,
                          r.planned, r.skipped)
            if not claims[0].completed:  # a step or share of a blockwise run: its config, too
                from pytc_core.config import save_config_next_to

                save_config_next_to(out_uri, cfg, command="pytc-decode")
    if timings:
        log.debug("timings: %s", ", ".join(f"{k} {v:.2f} s" for k, v in timings.items()))
    return DecodeResult(out_uri, step, stats, blocks, timings, more)


def _config_text(cfg: DecodeConfig) -> str:
    from pytc_core.config import config_to_toml

    return config_to_toml(cfg).strip() or "(defaults)"
