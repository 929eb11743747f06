"""The decode stage: an affinity volume (URI) → a segmentation volume (URI), whole or blockwise.

:func:`run_decode` opens the volumes, checks the options, runs the method
(:class:`~pytc_decode.methods.base.DecodeMethod`) on the whole volume or the three blockwise
steps of :mod:`pytc_decode.steps` through the core block runner, writes the labels and the
resolved config beside them, and returns a :class:`DecodeResult`. It never names a method:
whatever differs between methods is behind their interface. Affinities are channels first,
spatial axes (z, y, x), sizes in voxels.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import BinaryIO

import numpy as np

from pytc_core.bbox import BBox
from pytc_core.blocks import BlockProgress, BlockRunResult, plan_blocks, run_blocks
from pytc_core.cli import current_command, progress_counter
from pytc_core.errors import UserError, unknown_name_error
from pytc_core.files import write_atomic
from pytc_core.memory import format_bytes, memory_budget
from pytc_core.merge_history import MergeHistory, merges_location, read_merge_history
from pytc_core.output import check_shareable
from pytc_core.output_run import OutputRun, claim_output, open_input
from pytc_core.timing import PhaseTimer
from pytc_core.volume import Volume, sidecar_path
from pytc_decode.config import DecodeConfig, result_options
from pytc_decode.kernels import remap, thread_map
from pytc_decode.methods import DecodeMethod, method_of, methods_of
from pytc_decode.resume import check_run
from pytc_decode.rethreshold import add_extents, block_extents, threshold_tables
from pytc_decode.stats import DecodeStats, segment_stats
from pytc_decode.steps import (
    STEPS,
    BlockwiseRun,
    history_fields,
    label_step,
    plan_run,
    reduce_step,
    relabel_step,
)
from pytc_decode.volumes import (
    check_mask,
    create_output,
    default_output_uri,
    finish_output,
    output_chunk,
    read_inputs,
    suffixed_uri,
)

__all__ = ["DecodeResult", "check_config", "run_decode"]

log = logging.getLogger("pytc.decode")


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
    #: a method with several outputs (``ws`` with several agglomeration thresholds): the
    #: further (output, stats); stats None where ``stats`` is (a blockwise step or share)
    more: tuple[tuple[str, DecodeStats | None], ...] = ()

    @property
    def outputs(self) -> list[str]:
        """Every segmentation written (one per agglomeration threshold for a multi-threshold
        ``ws``)."""
        return [self.output, *(uri for uri, _ in self.more)]

    def summary(self) -> str:
        """One human-readable line for stderr (a line per segmentation)."""
        if self.stats is not None:
            return "\n".join(f"{uri}: {stats.line()}" for uri, stats in
                             ((self.output, self.stats), *self.more) if stats is not None)
        done = ", ".join(f"{k} {r.processed} of {r.planned} blocks"
                         + (f" ({r.skipped} done before)" if r.skipped else "")
                         for k, r in self.blocks.items())
        return f"{', '.join(self.outputs)}: step {self.step} done: {done}"


def check_config(cfg: DecodeConfig, aff_vol: Volume) -> None:
    """UserError for options that cannot work with this affinity volume (before any write):
    the common options here, the method's own through its :meth:`DecodeMethod.check`."""
    from pytc_core.volume import require_channels

    require_channels(aff_vol, 3)
    method = method_of(cfg)
    if cfg.min_size < 0:
        raise UserError(f"min size {cfg.min_size} is negative", "use 0 to keep every segment")
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
    if cfg.block_size is not None and not method.blockwise:
        names = [m.name for m in methods_of(cfg).values() if m.blockwise]
        raise UserError(f"method {method.name} is not available blockwise",
                        f"use --method {' or '.join(names)}, or drop --block-size")
    method.check(cfg, aff_vol)


def _decode_whole(aff_vol: Volume, mask_vol: Volume | None, claims: Sequence[OutputRun],
                  cfgs: Sequence[DecodeConfig], method: DecodeMethod, cfg: DecodeConfig,
                  timer: PhaseTimer, frag_claim: OutputRun | None = None,
                  fragments_only: bool = False) -> list[DecodeStats]:
    """Decode in memory and write one segmentation per claimed output (``cfgs`` is each
    output's config); with ``frag_claim``, the fragments and their merge history there too
    (``fragments_only``: nothing else). The stats of each (the fragments' last)."""
    with timer.phase("read"):
        aff, mask = read_inputs(aff_vol, mask_vol, cfg)
    with timer.phase("segment"):
        if frag_claim is None:
            segs = method.segment(aff, mask, cfg, aff_vol.voxel_size)
        else:
            fragments, history = method.fragments(aff, mask, cfg, aff_vol.voxel_size)
            segs = ([] if fragments_only
                    else method.segment_fragments(fragments, history, aff, cfg))
    del aff
    with timer.phase("write"):
        stats = _write_segmentations(claims, cfgs, segs, aff_vol, cfg.dust)
        if frag_claim is not None:
            _write_fragments(frag_claim, aff_vol, fragments, history, method, cfg)
            stats.append(segment_stats(np.bincount(fragments.reshape(-1)), fragments.size,
                                       cfg.dust))
    return stats


def _write_segmentations(claims: Sequence[OutputRun], cfgs: Sequence[DecodeConfig],
                         segs: Sequence[np.ndarray], like: Volume, dust: bool
                         ) -> list[DecodeStats]:
    """Write each (Z, Y, X) segmentation to its claimed output (created like ``like``, its
    config beside it, then marked complete); their stats, in order.

    Several thresholds' outputs are written at once, on up to numba's thread count of
    threads: chunk compression and file writes release the GIL, and the outputs are
    independent. Each output is marked complete only after its own chunks are written."""

    def write_one(claim: OutputRun, out_cfg: DecodeConfig, labels: np.ndarray) -> DecodeStats:
        out = create_output(claim, like, labels.dtype,
                            tuple(min(64, s) for s in labels.shape), restart=True)
        out.write(labels)
        finish_output(claim, out_cfg)
        return segment_stats(np.bincount(labels.reshape(-1)), labels.size, dust)

    return thread_map(write_one, claims, cfgs, segs, name="pytc-write-seg")


def _write_fragments(claim: OutputRun, aff_vol: Volume, fragments: np.ndarray,
                     history: np.ndarray, method: DecodeMethod, cfg: DecodeConfig) -> None:
    """The fragments volume, its merge history beside it (``pytc_merges.npz``, tied to the
    fragments' run key), its config, then the output marked complete."""
    from pytc_core.merge_history import write_merge_history

    out = create_output(claim, aff_vol, fragments.dtype,
                        tuple(min(64, s) for s in fragments.shape), restart=True)
    out.write(fragments)
    write_merge_history(claim.uri, MergeHistory.from_rows(
        history, int(fragments.max()) if fragments.size else 0, fragments_key=claim.key,
        **history_fields(cfg, method)))
    finish_output(claim, cfg)


def _relabel_fragments(frag_uri: str, frag_vol: Volume, history: MergeHistory,
                       cfg: DecodeConfig, out_uri: str, overwrite: bool, allow_same_file: bool,
                       timer: PhaseTimer, show_progress: bool = True, step: str = "all",
                       share: tuple[int, int] | None = None) -> DecodeResult:
    """A fragments output (with its merge history) → one segmentation per threshold of
    ``cfg``, without the watershed: the fragments relabelled through the history (whole
    volume, or with ``cfg.block_size`` block by block: :mod:`pytc_decode.rethreshold`, as
    ``step`` and ``share`` of :func:`run_decode` select)."""
    from dataclasses import replace

    from pytc_core.output_run import run_key

    name = str(history.config.get("method", "ws"))
    methods = methods_of(cfg)
    if name not in methods or not methods[name].fragments_output:
        raise UserError(f"{frag_uri} holds fragments of an unknown method {name!r}",
                        "decode the affinities again (pytc-decode --method ws)")
    method = methods[name]
    cfg = replace(cfg, method=name)
    if cfg.mask or cfg.foreground_channel is not None or cfg.logits:
        raise UserError(f"{frag_uri} holds fragments, not affinities: --mask, "
                        "--foreground-channel and --logits do not apply",
                        "drop them (the fragments are 0 outside the decode's mask already)")
    if np.dtype(frag_vol.dtype).kind not in "ui" or (frag_vol.num_channels or 1) != 1:
        raise UserError(f"{frag_uri} is not a fragments volume ({frag_vol.dtype}, shape "
                        f"{frag_vol.shape})", "decode the affinities again with --overwrite")
    if cfg.min_size < 0:
        raise UserError(f"min size {cfg.min_size} is negative", "use 0 to keep every segment")
    if cfg.small == "merge" and cfg.min_size > 1:
        raise UserError("--small merge needs the affinities, not their fragments",
                        "use --small remove, or decode the affinities")
    # the thresholds and options are checked; any block size suits a re-thresholding (no
    # fragments are computed, so the fragment grid does not constrain it)
    method.check(replace(cfg, block_size=None), frag_vol)
    variants = method.outputs(cfg)
    out_uris = [suffixed_uri(out_uri, suffix) if suffix else out_uri for suffix, _ in variants]
    out_cfgs = [c for _, c in variants]
    keys = [run_key("decode", [frag_uri], {"from_fragments": True, **result_options(c)})
            for c in out_cfgs]
    workdir = None
    if cfg.block_size is not None:
        workdir = sidecar_path(out_uris[0], "pytc_decode")
        if workdir is None:
            raise UserError(f"blockwise re-thresholding needs a local output, got {out_uri}",
                            "write to a local path, then upload")
    with ExitStack() as stack:
        claims = [stack.enter_context(claim_output(
            uri, stage="decode", key=key, inputs=[frag_uri], overwrite=overwrite,
            join=step != "all", command=current_command(), allow_same_file=allow_same_file,
            scratch=[workdir] if workdir is not None else []))
            for uri, key in zip(out_uris, keys, strict=True)]
        if workdir is not None:
            stats, blocks = _rethreshold_blockwise(frag_uri, frag_vol, history, cfg, claims,
                                                   out_cfgs, workdir, keys, timer, show_progress,
                                                   step, share)
            _report_blockwise(claims, out_uris, out_cfgs, blocks)
            every: list[DecodeStats | None] = list(stats) or [None] * len(out_uris)
            return DecodeResult(out_uris[0], step, every[0], blocks, timer.timings,
                                tuple(zip(out_uris[1:], every[1:], strict=True)))
        with timer.phase("read"):
            fragments = frag_vol.read()
            if fragments.ndim == 4:
                fragments = fragments[0]
            top = int(fragments.max()) if fragments.size else 0
            if top != history.num_fragments:
                raise _mismatch_error(frag_uri, top, history.num_fragments)
        with timer.phase("segment"):
            segs = method.segment_fragments(fragments, history.rows(), None, cfg)
        with timer.phase("write"):
            stats = _write_segmentations(claims, out_cfgs, segs, frag_vol, cfg.dust)
    if timer.timings:
        log.debug("timings: %s", timer.line())
    return DecodeResult(out_uris[0], "all", stats[0], {}, timer.timings,
                        tuple(zip(out_uris[1:], stats[1:], strict=True)))


def _report_blockwise(claims: Sequence[OutputRun], out_uris: Sequence[str],
                      out_cfgs: Sequence[DecodeConfig], blocks: dict[str, BlockRunResult]
                      ) -> None:
    """After a blockwise call: what each pass did (debug log), and the resolved config
    beside each output when this call did not complete them (a step or a share; a finished
    output got its config when it was marked complete)."""
    for name, r in blocks.items():
        log.debug("%s: %d of %d blocks processed, %d done before", name, r.processed,
                  r.planned, r.skipped)
    if not claims[0].completed:
        from pytc_core.config import save_config_next_to

        for uri, out_cfg in zip(out_uris, out_cfgs, strict=True):
            save_config_next_to(uri, out_cfg, command="pytc-decode")


def _save_arrays(fh: BinaryIO, **arrays: np.ndarray) -> None:
    np.savez(fh, **arrays)  # type: ignore[arg-type]


def _mismatch_error(frag_uri: str, top: int, num_fragments: int) -> UserError:
    return UserError(f"the merge history {merges_location(frag_uri)} does not match its "
                     f"fragments {frag_uri} (fragment ids 1..{top}, the history names "
                     f"1..{num_fragments})", "decode the fragments again (pytc-decode --method "
                     "ws --fragments-only --overwrite)")


def _rethreshold_blockwise(frag_uri: str, frag_vol: Volume, history: MergeHistory,
                           cfg: DecodeConfig, claims: Sequence[OutputRun],
                           out_cfgs: Sequence[DecodeConfig], workdir: Path, keys: Sequence[str],
                           timer: PhaseTimer, show_progress: bool, step: str = "all",
                           share: tuple[int, int] | None = None
                           ) -> tuple[list[DecodeStats], dict[str, BlockRunResult]]:
    """:func:`_relabel_fragments` block by block, as the three steps of a blockwise decode
    (``step``; ``label`` and ``relabel`` take ``share``, task i of n):

    - label: each block's fragment ids, first voxels and voxel counts (an ``extents_*.npz``
      per block in ``workdir``, each block marked done);
    - reduce: every block's extents → one fragment → segment table per output
      (``segments_<k>.npz``; a history that does not match its fragments is refused here);
    - relabel: every output's blocks written through the tables (each block marked done);
      the last block's writer marks the outputs complete.

    An interrupted run or share resumes after its last finished block. Returns each output's
    stats where this call knows them (reduce, relabel) and what each pass did."""
    assert isinstance(cfg.block_size, tuple)
    key = hashlib.sha256("|".join([*keys, repr(cfg.block_size)]).encode()).hexdigest()
    if any(claim.resuming for claim in claims):  # an interrupted run or a share of this run
        check_run(workdir, key, create=False)
    box = frag_vol.bbox
    dtype = np.dtype(frag_vol.dtype)
    if step in ("all", "label"):
        for claim in claims:
            create_output(claim, frag_vol, dtype, output_chunk(cfg.block_size))
    check_run(workdir, key, create=True)
    blocks = plan_blocks(box, cfg.block_size)
    progress = progress_counter if show_progress else None
    n = history.num_fragments

    def read(block: BBox) -> np.ndarray:
        data = frag_vol.read(block)
        return data[0] if data.ndim == 4 else data

    def extents_file(block: BBox) -> Path:
        return workdir / ("extents_" + "_".join(map(str, block.start)) + ".npz")

    def tables_file(k: int) -> Path:
        return workdir / f"segments_{k}.npz"

    ran: dict[str, BlockRunResult] = {}
    stats: list[DecodeStats] = []
    if step in ("all", "label"):
        def measure(block: BBox, labels: np.ndarray) -> None:
            ids, first, counts = block_extents(labels, block, box)
            write_atomic(extents_file(block),
                         partial(_save_arrays, ids=ids, first=first, counts=counts))
            for claim in claims:
                claim.made_progress()

        with timer.phase("extents"):
            ran["extents"] = run_blocks(blocks, measure, done=BlockProgress(
                workdir / "extents", key), share=share, read=read,
                description="fragment extents", progress=progress)
    if step in ("all", "reduce"):
        missing = [b for b in blocks if not extents_file(b).exists()]
        if missing:
            raise UserError(f"{len(missing)} of {len(blocks)} blocks have no extents yet "
                            f"(first: {missing[0]})", "run every --step label share first")
        with timer.phase("segment"):
            first = np.full(n + 1, np.iinfo(np.int64).max, np.int64)
            sizes = np.zeros(n + 1, np.int64)
            top = 0
            for block in blocks:
                with np.load(extents_file(block)) as f:
                    ids = f["ids"]
                    top = max(top, int(ids[-1]) if ids.size else 0)
                    if top > n:
                        raise _mismatch_error(frag_uri, top, n)
                    add_extents(ids, f["first"], f["counts"], first, sizes)
            if top != n:
                raise _mismatch_error(frag_uri, top, n)
            tables = threshold_tables(history.rows(), first, sizes,
                                      [c.ws.thresholds[0] for c in out_cfgs], cfg.min_size,
                                      dtype)
            del first, sizes
            for k, (table, counts) in enumerate(tables):
                write_atomic(tables_file(k), partial(_save_arrays, table=table, counts=counts))
            stats = [segment_stats(counts, box.size, cfg.dust) for _, counts in tables]
    if step in ("all", "relabel"):
        missing_tables = [tables_file(k) for k in range(len(claims))
                          if not tables_file(k).exists()]
        if missing_tables:
            raise UserError(f"{missing_tables[0]} is missing",
                            "run --step reduce before --step relabel")
        loaded = []
        for k in range(len(claims)):
            with np.load(tables_file(k)) as f:
                loaded.append(f["table"])
                if step == "relabel":  # (the reduce of this call gave them otherwise)
                    stats.append(segment_stats(f["counts"], box.size, cfg.dust))
        outs = [claim.open() for claim in claims]

        def write(block: BBox, labels: np.ndarray) -> None:
            for out, table in zip(outs, loaded, strict=True):
                out.write(remap(labels, table), offset=block.start)
            for claim in claims:
                claim.made_progress()

        done = BlockProgress(workdir / "segment", key)
        with timer.phase("write"):
            ran["segment"] = run_blocks(blocks, write, done=done, share=share, read=read,
                                        description="segment blocks", progress=progress)
        if share is None or not done.pending(blocks):  # every block of the outputs written
            for claim, out_cfg in zip(claims, out_cfgs, strict=True):
                finish_output(claim, out_cfg)
        if share is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return stats, ran


def _decode_blockwise(run: BlockwiseRun, claims: Sequence[OutputRun], step: str,
                      share: tuple[int, int] | None, show_progress: bool,
                      timer: PhaseTimer,
                      blocks: dict[str, BlockRunResult]) -> list[DecodeStats]:
    """The steps of ``step`` for every output (``claims``, as ``run.outputs``); the outputs'
    stats where this call knows them (a reduce, or a whole relabel), else []."""
    stats: list[DecodeStats] = []
    if step in ("all", "label"):
        with timer.phase("label"):
            blocks["label"] = label_step(run, claims, share=share, show_progress=show_progress)
    if step in ("all", "reduce"):
        with timer.phase("reduce"):
            stats = reduce_step(run)
    if step in ("all", "relabel"):
        with timer.phase("relabel"):
            blocks["relabel"], relabel_stats = relabel_step(run, claims, share=share,
                                                            show_progress=show_progress)
        stats = stats or (relabel_stats if share is None else [])
    return stats


def _check_whole_volume_fits(aff_vol: Volume, n_outputs: int) -> None:
    """UserError (naming ``--block-size``) when decoding the whole volume in memory would
    exceed the memory budget (the job's cgroup or Slurm limit, the node's free memory):
    the affinities as float32 plus about 32 bytes a voxel of labels and working arrays, and a
    uint64 label volume per extra output (one per ws threshold)."""
    voxels = int(np.prod(aff_vol.spatial_shape))
    need = voxels * (4 * (aff_vol.num_channels or 1) + 32 + 8 * (n_outputs - 1))
    budget = memory_budget()
    log.debug("memory budget: %s; the whole volume needs about %s", budget.line(),
              format_bytes(need))
    if need > 0.8 * budget.available:
        raise UserError(f"decoding {aff_vol.uri} ({'x'.join(map(str, aff_vol.spatial_shape))} "
                        f"voxels) in memory needs about {format_bytes(need)}, more than 80 % of "
                        f"the {budget.line()}",
                        "decode it block by block with --block-size 256 (cc: identical result; "
                        "ws: close to the whole-volume one), or give the job more memory")


def run_decode(aff_uri: str, config: DecodeConfig = DecodeConfig(), *, output: str | None = None,
               overwrite: bool = False, step: str = "all", share: tuple[int, int] | None = None,
               show_progress: bool = True, allow_same_file: bool = False,
               fragments: str | None = None) -> DecodeResult:
    """Decode the affinity volume at ``aff_uri`` into a segmentation volume.

    Whole volume in memory, or block by block with ``config.block_size``: for ``cc`` the
    result is identical to the whole-volume decode; for ``ws`` it is close to it, not
    identical (fragments differ near block faces). ``step`` runs one blockwise step only
    (``label`` and ``relabel`` take ``share=(i, n)``, task i of n, for Slurm array tasks);
    ``all`` runs the three in turn. An interrupted run started again with the same options
    resumes where it stopped; with other options (of the method in use) or changed inputs it
    is refused (``overwrite=True`` starts afresh). The resolved config is written beside the
    output (``pytc_config.toml``) by every step. An output in an input's own HDF5 file
    (another dataset) is refused unless ``allow_same_file``; shares never write a single-file
    output (HDF5, TIFF, ``.npy``).

    ``fragments`` (a method with fragments: ``ws``): ``"only"`` writes the fragments volume
    and its merge history (``pytc_merges.npz``) at the output instead of segmentations, whole
    volume or blockwise (the reduce step writes the history to the scratch folder, the last
    relabel beside the output); ``"save"`` (whole volume) writes them beside the
    segmentations (``<output>_fragments``).
    An input that is such a fragments output (it has a merge history) is segmented at the
    thresholds of ``config`` without the watershed: the fragments relabelled through the
    history.
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
    if fragments not in (None, "only", "save"):
        raise unknown_name_error("fragments output", str(fragments), ["only", "save"])
    aff_vol = open_input(aff_uri, fill_missing=cfg.fill_missing)
    out_uri = output or default_output_uri(aff_uri)
    history = read_merge_history(aff_uri)
    if history is not None:
        if fragments is not None:
            raise UserError(f"{aff_uri} holds fragments already: --fragments-only and "
                            "--save-fragments do not apply",
                            "drop them to segment the fragments at --agglomeration-threshold")
        if share is not None:
            check_shareable(out_uri)
        return _relabel_fragments(aff_uri, aff_vol, history, cfg, out_uri, overwrite,
                                  allow_same_file, PhaseTimer(log=log), show_progress, step,
                                  share)
    if share is not None:
        check_shareable(out_uri)
    mask_vol = open_input(cfg.mask, fill_missing=cfg.fill_missing) if cfg.mask else None
    method = method_of(cfg)
    if fragments is not None:
        flag = "--fragments-only" if fragments == "only" else "--save-fragments"
        if not method.fragments_output:
            raise UserError(f"{flag}: method {method.name} has no fragments",
                            "use --method ws, or drop the flag")
        if cfg.block_size is not None and fragments == "save":
            raise UserError("--save-fragments is whole-volume only",
                            "with --block-size, decode --fragments-only, then segment the "
                            "fragments: pytc-decode FRAGMENTS --agglomeration-threshold T")
    check_config(cfg, aff_vol)
    check_mask(mask_vol, aff_vol)
    timer = PhaseTimer(log=log)
    blocks: dict[str, BlockRunResult] = {}
    more: tuple[tuple[str, DecodeStats | None], ...] = ()
    run: BlockwiseRun | None = None
    if cfg.block_size is None:
        from pytc_core.output_run import run_key

        variants = [] if fragments == "only" else method.outputs(cfg)
        _check_whole_volume_fits(aff_vol, len(variants) + (fragments is not None))
        out_uris = [suffixed_uri(out_uri, suffix) if suffix else out_uri
                    for suffix, _ in variants]
        out_cfgs = [c for _, c in variants]
        keys = [run_key("decode", [aff_uri, cfg.mask], result_options(c)) for c in out_cfgs]
        if fragments is not None:  # the fragments' own output and key, claimed last
            out_uris.append(out_uri if fragments == "only"
                            else suffixed_uri(out_uri, "_fragments"))
            keys.append(run_key("decode", [aff_uri, cfg.mask],
                                {"fragments": True, **result_options(cfg)}))
    else:
        run = plan_run(aff_vol, mask_vol, out_uri, cfg, fragments=fragments == "only")
        out_uris = [suffixed_uri(out_uri, suffix) if suffix else out_uri
                    for suffix, _ in run.outputs]
        out_cfgs = [c for _, c in run.outputs]
        # one output: the run's key (as before); several: one per output's suffix
        keys = [hashlib.sha256((run.key + suffix).encode()).hexdigest()[:16]
                for suffix, _ in run.outputs]

    def explain(_record: object) -> None:  # scratch of a blockwise run with other options
        if run is not None:
            from pytc_decode.resume import check_run

            check_run(run.workdir, run.key, create=False)  # names what differs

    with ExitStack() as stack:
        # before the input is decoded (a blockwise run has read only the chunks its identity
        # samples): each output's checks, its lease, fresh run or resume
        claims = [stack.enter_context(claim_output(
            uri, stage="decode", key=key, inputs=[aff_uri, cfg.mask], overwrite=overwrite,
            join=step != "all", explain_mismatch=explain, command=current_command(),
            allow_same_file=allow_same_file,
            scratch=[run.workdir] if run is not None else []))
            for uri, key in zip(out_uris, keys, strict=True)]
        if run is None:
            log.debug("plan: whole volume %s in memory, method %s", aff_vol.bbox, method.name)
            frag_claim = claims[-1] if fragments is not None else None
            all_stats = _decode_whole(aff_vol, mask_vol, claims[:len(out_cfgs)], out_cfgs,
                                      method, cfg, timer, frag_claim, fragments == "only")
            stats: DecodeStats | None = all_stats[0]
            out_uri = out_uris[0]
            cfg = out_cfgs[0] if out_cfgs else cfg
            more = tuple(zip(out_uris[1:], all_stats[1:], strict=True))
        else:
            assert isinstance(cfg.block_size, tuple)
            mine = len(run.blocks) if share is None else len(run.blocks[share[0]::share[1]])
            log.debug("block plan: %d blocks of %s voxels over %s; method %s, step %s, this "
                      "task %d blocks%s; scratch %s", len(run.blocks),
                      "x".join(map(str, cfg.block_size)), aff_vol.bbox, method.name, step, mine,
                      "" if share is None else f" (share {share[0]}/{share[1]})", run.workdir)
            every = _decode_blockwise(run, claims, step, share, show_progress, timer, blocks)
            stats = every[0] if every else None
            cfg = out_cfgs[0]
            rest: list[DecodeStats | None] = (list(every[1:]) if every
                                              else [None] * (len(out_uris) - 1))
            more = tuple(zip(out_uris[1:], rest, strict=True))
            out_uri = out_uris[0]
            _report_blockwise(claims, out_uris, out_cfgs, blocks)
    if timer.timings:
        log.debug("timings: %s", timer.line())
    return DecodeResult(out_uri, step, stats, blocks, timer.timings, more)


def _config_text(cfg: DecodeConfig) -> str:
    from pytc_core.config import config_to_toml

    return config_to_toml(cfg).strip() or "(defaults)"
