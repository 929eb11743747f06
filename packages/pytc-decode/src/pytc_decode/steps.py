"""The three blockwise steps of a decode, for every method through its interface.

:func:`plan_run` plans the blocks once; :func:`label_step` (each block → local labels and a
summary, ``--step label --blocks i/n``), :func:`reduce_step` (every summary → per-block id
tables, ``--step reduce``) and :func:`relabel_step` (local labels → final ids written to the
output, ``--step relabel --blocks i/n``) run them through the core block runner, so the local
loop and Slurm array tasks (``pytc-launch blocks decode``) run the same per-block calls of
:class:`~pytc_decode.methods.base.DecodeMethod`. Scratch files live beside the output
(``pytc_decode/``) and belong to one run (:mod:`pytc_decode.resume`).
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from pytc_core.bbox import BBox
from pytc_core.blocks import BlockProgress, BlockRunResult, plan_blocks, run_blocks
from pytc_core.cli import progress_counter
from pytc_core.errors import UserError
from pytc_core.files import write_atomic
from pytc_core.merge_history import MergeHistory, write_merge_history
from pytc_core.output_run import OutputRun
from pytc_core.volume import Volume, sidecar_path
from pytc_decode.blockwise import BlockTables
from pytc_decode.cc import label_dtype
from pytc_decode.config import DecodeConfig, result_options
from pytc_decode.kernels import thread_map
from pytc_decode.methods import DecodeMethod, method_of
from pytc_decode.methods.base import options_of
from pytc_decode.resume import check_run, input_identity, run_key
from pytc_decode.scratch import LABELS_SUFFIX, BlockFiles, load_block_labels, save_block_labels
from pytc_decode.stats import DecodeStats, segment_stats
from pytc_decode.volumes import create_output, finish_output, output_chunk, read_inputs

__all__ = ["STEPS", "BlockwiseRun", "history_fields", "label_step", "plan_run", "reduce_step",
           "relabel_step"]

#: the values of ``--step``
STEPS = ("all", "label", "reduce", "relabel")


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
    #: ``--fragments-only``: the output is the fragments volume and its merge history
    fragments: bool = False
    #: the outputs, (URI suffix, config) each: one per threshold of a multi-threshold ``ws``
    outputs: tuple[tuple[str, DecodeConfig], ...] = ()

    @property
    def method(self) -> DecodeMethod:
        return method_of(self.cfg)

    @property
    def box(self) -> BBox:
        return self.aff_vol.bbox

    @property
    def dtype(self) -> np.dtype:
        return label_dtype(self.box.size)

    @property
    def chunk(self) -> tuple[int, ...]:
        assert isinstance(self.cfg.block_size, tuple)
        return output_chunk(self.cfg.block_size)

    def tables_file(self, k: int = 0) -> Path:
        """Output k's per-block id tables, from the reduce step."""
        return self.workdir / ("tables.npz" if k == 0 else f"tables_{k}.npz")

    @property
    def merges_file(self) -> Path:
        """The fragments' merge history, from the reduce step (``fragments`` runs)."""
        return self.workdir / "merges.npz"

    def progress(self, step: str) -> BlockProgress:
        return BlockProgress(self.workdir / step, self.key)

    def block_file(self, block: BBox, kind: str = "block", suffix: str = ".npz") -> Path:
        return self.workdir / (kind + "_" + "_".join(map(str, block.start)) + suffix)


def history_fields(cfg: DecodeConfig, method: DecodeMethod) -> dict[str, Any]:
    """What a fragments output's merge history records besides its merges (whole volume
    and blockwise alike): the thresholds asked for and the settings that made them."""
    return {"thresholds": tuple(float(t) for t in options_of(cfg, method).thresholds),
            "config": {"method": method.name, **result_options(cfg)}}


def plan_run(aff_vol: Volume, mask_vol: Volume | None, out_uri: str,
             cfg: DecodeConfig, fragments: bool = False) -> BlockwiseRun:
    """The block plan, scratch folder and run key of a blockwise decode (``fragments``: of
    its fragments and merge history)."""
    assert cfg.block_size is not None
    workdir = sidecar_path(out_uri, "pytc_decode")
    if workdir is None:
        raise UserError(f"blockwise decoding needs a local output, got {out_uri}",
                        "write to a local path, then upload")
    blocks = tuple(plan_blocks(aff_vol.bbox, cfg.block_size))
    # what changes the result: the method in use's options, not the others'
    description: dict[str, Any] = {
        "config": result_options(cfg),
        "affinities": input_identity(aff_vol, out_uri),
        "mask": None if mask_vol is None else input_identity(mask_vol, out_uri),
    }
    if fragments:  # (absent otherwise: the keys of segmentation runs are unchanged)
        description["fragments"] = True
    outputs = (("", cfg),) if fragments else tuple(method_of(cfg).outputs(cfg))
    return BlockwiseRun(aff_vol, mask_vol, out_uri, cfg, blocks, workdir,
                        run_key(description), fragments, outputs)


def label_step(run: BlockwiseRun, claims: Sequence[OutputRun], *,
               share: tuple[int, int] | None = None, show_progress: bool = True
               ) -> BlockRunResult:
    """Step 1: label each block of this share on its own; keep its local labels and summary.

    Creates the outputs (one per entry of ``run.outputs``, ``claims`` in that order; or, for
    a share or an interrupted run, reuses them) and the scratch folder with the run's key;
    blocks already labelled by this run are skipped.
    """
    if any(claim.resuming for claim in claims):  # an interrupted run or a share of this run
        check_run(run.workdir, run.key, create=False)  # refuse before touching anything
    # a fresh run's claim emptied the scratch folder (claim_output(scratch=...)) before any
    # share could join: never here, where another share's finished blocks may already be
    for claim in claims:
        create_output(claim, run.aff_vol, run.dtype, run.chunk)
    check_run(run.workdir, run.key, create=True)
    box, cfg, method = run.box, run.cfg, run.method
    voxel_size = run.aff_vol.voxel_size

    def read(block: BBox) -> tuple[np.ndarray, np.ndarray | None]:
        return read_inputs(run.aff_vol, run.mask_vol, cfg, method.context(block, box, cfg))

    def process(block: BBox, data: tuple[np.ndarray, np.ndarray | None]) -> None:
        aff, mask = data
        lab, summary = method.label_block(aff, mask, block, method.context(block, box, cfg),
                                          box, cfg, voxel_size)
        save_block_labels(run.block_file(block, "labels", LABELS_SUFFIX), lab)
        write_atomic(run.block_file(block), summary)
        for claim in claims:  # an interrupt now keeps the finished blocks for a resume
            claim.made_progress()

    # bad input found partway (e.g. NaN) in a fresh run: the claim removes everything
    return run_blocks(run.blocks, process, done=run.progress("label"), share=share,
                      read=read, description="label blocks",
                      progress=progress_counter if show_progress else None)


def reduce_step(run: BlockwiseRun) -> list[DecodeStats]:
    """Step 2: join the blocks' segments across faces, number them globally, write the tables
    (one set per output); the stats of each output."""
    check_run(run.workdir, run.key, create=False)
    missing = [b for b in run.blocks if not run.block_file(b).exists()]
    if missing:
        raise UserError(f"{len(missing)} of {len(run.blocks)} blocks are not labelled yet "
                        f"(first: {missing[0]})", "run every --step label share first")
    # read lazily: the cc reduce streams them (one summary in memory at a time)
    summaries = BlockFiles(run.blocks, [run.block_file(b) for b in run.blocks])
    if run.fragments:
        tables, merges = run.method.reduce_fragments(
            summaries, run.box, run.cfg, run.dtype, **history_fields(run.cfg, run.method))
        write_atomic(run.merges_file, merges.to_bytes())
        per_output = [tables]
    else:
        per_output = run.method.reduce_outputs(summaries, run.box, run.cfg, run.dtype)

    def save(fh: BinaryIO, tables: BlockTables) -> None:
        np.savez(fh, starts=np.array(list(tables.tables)),
                 counts=np.array([t.size for t in tables.tables.values()]),
                 table=np.concatenate(list(tables.tables.values())), sizes=tables.sizes)

    for k, tables in enumerate(per_output):
        write_atomic(run.tables_file(k), partial(save, tables=tables))
    return [segment_stats(t.sizes, run.box.size, run.cfg.dust) for t in per_output]


def relabel_step(run: BlockwiseRun, claims: Sequence[OutputRun], *,
                 share: tuple[int, int] | None = None, show_progress: bool = True
                 ) -> tuple[BlockRunResult, list[DecodeStats]]:
    """Step 3: map each block's local labels to the final ids and write them to the outputs
    (``claims``, one per entry of ``run.outputs``; each block's labels are read once).

    Returns what was done and each segmentation's stats (from the reduce step's tables).
    """
    check_run(run.workdir, run.key, create=False)
    missing = [run.tables_file(k) for k in range(len(claims))
               if not run.tables_file(k).exists()]
    if missing:
        raise UserError(f"{missing[0]} is missing", "run --step reduce before --step relabel")
    tables_of, stats = [], []
    for k in range(len(claims)):
        with np.load(run.tables_file(k)) as f:
            starts, counts, flat = f["starts"], f["counts"], f["table"]
            stats.append(segment_stats(f["sizes"], run.box.size, run.cfg.dust))
        bounds = np.concatenate([[0], np.cumsum(counts)])
        tables_of.append({tuple(int(v) for v in s): flat[bounds[i]:bounds[i + 1]]
                          for i, s in enumerate(starts)})
    outs = [claim.open() for claim in claims]
    method = run.method

    def read(block: BBox) -> np.ndarray:
        return load_block_labels(run.block_file(block, "labels", LABELS_SUFFIX), run.dtype)

    def process(block: BBox, local: np.ndarray) -> None:
        def write_one(out: Volume, table_of: dict) -> None:
            out.write(method.relabel(local, table_of[block.start]), offset=block.start)

        # several thresholds' outputs at once (compression and writes release the GIL)
        thread_map(write_one, outs, tables_of, name="pytc-relabel")
        for claim in claims:
            claim.made_progress()

    done = run.progress("relabel")
    result = run_blocks(run.blocks, process, done=done, share=share, read=read,
                        description="relabel blocks",
                        progress=progress_counter if show_progress else None)
    if share is None or not done.pending(run.blocks):  # every block of the outputs is written
        if run.fragments:  # the merge history beside the fragments, tied to this run's key
            merges = MergeHistory.from_bytes(run.merges_file.read_bytes(), str(run.merges_file))
            write_merge_history(claims[0].uri, replace(merges, fragments_key=claims[0].key))
        for claim, (_, out_cfg) in zip(claims, run.outputs, strict=True):
            finish_output(claim, out_cfg)
    if share is None:
        shutil.rmtree(run.workdir, ignore_errors=True)
    elif not done.pending(run.blocks):
        # every block is final: drop the bulky local labels, keep the (small) tables and
        # markers so a repeated relabel share still finds its blocks done
        for path in run.workdir.glob("labels_*" + LABELS_SUFFIX):
            path.unlink(missing_ok=True)
    return result, stats
