"""One blockwise pass over (segmentation, ground truth): the contingency table and the label
under every skeleton node, each block reading only its own voxels and nodes.

Nodes are grouped by block once (:class:`NodeBlocks`: sorted by the flat index of their grid
cell), so each block looks up only its own nodes: O(nodes · log + blocks) instead of the
nodes × blocks scan. The pass is additive: :class:`Samples` of disjoint block shares merge
into the samples of the whole box (Slurm shares, ``pytc-eval --step sample|reduce``).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass

import numpy as np

from pytc_core.bbox import BBox
from pytc_core.blocks import ProgressReporter, no_progress, run_blocks
from pytc_core.volume import Volume
from pytc_eval.voi import ContingencyTable

__all__ = ["NodeBlocks", "SampleJob", "Samples", "sample_blocks", "sample_in_processes"]


class NodeBlocks:
    """Skeleton nodes (global voxels z, y, x) grouped by the cell of the block grid
    ``origin + k * size`` they fall in; :meth:`of` gives one block's node indices."""

    def __init__(self, node_vox: np.ndarray, origin: Sequence[int] | np.ndarray,
                 size: Sequence[int] | np.ndarray) -> None:
        self.origin = np.asarray(origin, np.int64)
        self.size = np.asarray(size, np.int64)
        vox = np.asarray(node_vox, np.int64).reshape(-1, 3)
        keys = self._keys(vox)
        self.order = np.argsort(keys, kind="stable")
        self.sorted_keys = keys[self.order]

    def _keys(self, vox: np.ndarray) -> np.ndarray:
        cell = (vox - self.origin) // self.size
        # cells may be negative far from the origin: shift into a non-negative range
        cell = cell + (1 << 20)
        return (cell[..., 0] << 42) | (cell[..., 1] << 21) | cell[..., 2]

    def of(self, block: BBox) -> np.ndarray:
        """Indices of the nodes in ``block`` (a cell of the grid, possibly clipped)."""
        key = self._keys(np.asarray(block.start, np.int64))
        lo = np.searchsorted(self.sorted_keys, key, side="left")
        hi = np.searchsorted(self.sorted_keys, key, side="right")
        return self.order[lo:hi]


def _unsigned(values: np.ndarray) -> np.ndarray:
    if np.issubdtype(values.dtype, np.signedinteger):
        values = values.astype(np.int64).view(np.uint64)
    return values.astype(np.uint64)


@dataclass
class Samples:
    """What a pass collects: the truth × label contingency table (every voxel of the blocks,
    truth 0 included) and the label at the nodes it has seen (``node_index`` into the node
    list, ``node_label`` aligned with it)."""

    table: ContingencyTable
    node_index: np.ndarray
    node_label: np.ndarray

    def node_labels(self, num_nodes: int) -> np.ndarray:
        """uint64 (num_nodes,): the label under each node (0 where no block saw it)."""
        out = np.zeros(num_nodes, np.uint64)
        out[self.node_index] = self.node_label
        return out

    def merge(self, other: Samples) -> Samples:
        """These samples plus those of a disjoint share of blocks."""
        self.table.merge(other.table)
        self.node_index = np.concatenate([self.node_index, other.node_index])
        self.node_label = np.concatenate([self.node_label, other.node_label])
        return self

    def to_bytes(self) -> bytes:
        """Compressed npz: pairs (truth, label, count) and the node samples."""
        a, b, n = self.table.pairs(include_background=True)
        buf = io.BytesIO()
        np.savez_compressed(buf, truth=a, label=b, count=n, node_index=self.node_index,
                            node_label=self.node_label)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Samples:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            table = ContingencyTable(max(16, 2 * int(z["count"].size)))
            table.add_pairs(z["truth"], z["label"], z["count"])
            return cls(table, z["node_index"].astype(np.int64),
                       z["node_label"].astype(np.uint64))


def sample_blocks(labels: Volume, gt: Volume, blocks: Sequence[BBox],
                  node_vox: np.ndarray | None = None, *,
                  node_blocks: NodeBlocks | None = None,
                  progress: ProgressReporter | None = None, description: str = "evaluating",
                  check: Callable[[np.ndarray], None] | None = None,
                  relabel: np.ndarray | None = None) -> Samples:
    """Contingency table and node labels over ``blocks`` (global voxel boxes of one grid).

    ``node_vox`` are the nodes' voxels (global z, y, x, inside the blocks' union) and
    ``node_blocks`` their grouping on the blocks' grid (built from ``blocks[0]``'s grid when
    omitted: pass it when ``blocks`` is a share of a larger plan). ``check(labels_block)``
    may raise on a block's labels (e.g. ids beyond a merge table). ``relabel`` (uint64,
    indexed by label id) counts the table's labels through it (:meth:`ContingencyTable.add`);
    node labels stay the volume's own. Memory: two blocks of each volume (one read ahead)
    plus the table.
    """
    table = ContingencyTable()
    idx_parts: list[np.ndarray] = []
    lab_parts: list[np.ndarray] = []
    if node_vox is not None and node_blocks is None and blocks:
        raise ValueError("node_blocks is required with node_vox")

    with ThreadPoolExecutor(1, thread_name_prefix="pytc-read-gt") as truth_reader:

        def read(block: BBox) -> tuple[np.ndarray, np.ndarray]:
            # the two volumes' chunks are decoded side by side (decompression releases the
            # GIL), while the block before is counted
            truth = truth_reader.submit(gt.read, block)
            pred = labels.read(block)
            return truth.result(), pred

        def process(block: BBox, data: tuple[np.ndarray, np.ndarray]) -> None:
            truth, pred = data
            if check is not None:
                check(pred)
            table.add(truth, pred, relabel)
            if node_vox is not None and node_blocks is not None:
                mine = node_blocks.of(block)
                if mine.size:
                    local = node_vox[mine] - np.asarray(block.start)
                    idx_parts.append(mine)
                    lab_parts.append(_unsigned(pred[local[:, 0], local[:, 1], local[:, 2]]))

        run_blocks(blocks, process, read=read, progress=progress, description=description)
    node_index = np.concatenate(idx_parts) if idx_parts else np.zeros(0, np.int64)
    node_label = np.concatenate(lab_parts) if lab_parts else np.zeros(0, np.uint64)
    return Samples(table, node_index.astype(np.int64), node_label)


@dataclass(frozen=True)
class SampleJob:
    """One volume's pass for :func:`sample_in_processes`: its blocks (global boxes of one
    grid), the skeleton nodes of its box (global voxels) and their grouping on that grid,
    as :func:`sample_blocks` takes them."""

    labels_uri: str
    gt_uri: str
    blocks: Sequence[BBox]
    node_vox: np.ndarray | None
    node_blocks: NodeBlocks | None
    #: the table's labels counted through it (:func:`sample_blocks`), None: as they are
    relabel: np.ndarray | None = None


def _sample_part(labels_uri: str, gt_uri: str, fill_missing: bool, blocks: Sequence[BBox],
                 nodes: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
                 relabel: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """A worker's part of a pass: (truth, label, count, node_index, node_label) of
    ``blocks``; ``nodes`` = (its blocks' node voxels, grid origin, block size), grouped here;
    node indices are into those node voxels."""
    from pytc_core.output_run import open_input  # the worker opens its own inputs

    labels = open_input(labels_uri, fill_missing=fill_missing)
    gt = open_input(gt_uri, fill_missing=fill_missing)
    node_vox, groups = None, None
    if nodes is not None:
        node_vox = nodes[0]
        groups = NodeBlocks(node_vox, nodes[1], nodes[2])
    samples = sample_blocks(labels, gt, blocks, node_vox, node_blocks=groups, relabel=relabel)
    return (*samples.table.pairs(include_background=True), samples.node_index,
            samples.node_label)


def sample_in_processes(jobs: Sequence[SampleJob], workers: int, *, fill_missing: bool = False,
                        progress: ProgressReporter | None = None,
                        description: str = "evaluating") -> list[Samples]:
    """Each job's :class:`Samples`, its blocks sampled by ``workers`` processes at once.

    Every job's blocks are cut into runs of consecutive blocks (about four per worker, so
    the processes stay busy to the end); a worker opens the volumes itself and returns the
    run's table and node labels, which add up here (the pass is additive). Equal to
    :func:`sample_blocks` on each job. Memory: two blocks of each volume per worker.
    """
    from pytc_eval.skeleton_blocks import pool_context  # the pools' start-method rule

    parts: list[tuple[int, list[BBox], np.ndarray | None]] = []
    for k, job in enumerate(jobs):
        if job.node_vox is not None and job.node_blocks is None:
            raise ValueError("node_blocks is required with node_vox")
        runs = max(1, min(len(job.blocks), 4 * workers))
        for chunk in np.array_split(np.arange(len(job.blocks)), runs):
            blocks = [job.blocks[i] for i in chunk]
            groups = job.node_blocks if job.node_vox is not None else None
            nodes = (np.concatenate([groups.of(b) for b in blocks]) if groups is not None
                     and blocks else None)
            parts.append((k, blocks, nodes))
    tables = [ContingencyTable() for _ in jobs]
    node_index: list[list[np.ndarray]] = [[] for _ in jobs]
    node_label: list[list[np.ndarray]] = [[] for _ in jobs]
    report = progress if progress is not None else no_progress
    ctx = pool_context()
    if ctx.get_start_method() == "forkserver":  # the server imports once, workers fork
        ctx.set_forkserver_preload(["cloudvolume", "pytc_eval.sample", "pytc_core.output_run"])
    with report(description, sum(len(job.blocks) for job in jobs)) as advance, \
            ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        futures = {}
        for k, blocks, nodes in parts:
            if not blocks:
                continue
            job = jobs[k]
            part_nodes = None
            if job.node_vox is not None and job.node_blocks is not None and nodes is not None:
                part_nodes = (job.node_vox[nodes], job.node_blocks.origin, job.node_blocks.size)
            futures[pool.submit(_sample_part, job.labels_uri, job.gt_uri, fill_missing, blocks,
                                part_nodes, job.relabel)] = (k, blocks, nodes)
        for future in as_completed(futures):
            k, blocks, nodes = futures[future]
            truth, label, count, index, node_lab = future.result()
            tables[k].add_pairs(truth, label, count)
            if nodes is not None:
                node_index[k].append(nodes[index])
                node_label[k].append(node_lab)
            for block in blocks:
                advance(block.size)
    return [Samples(table, np.concatenate(idx).astype(np.int64) if idx else
                    np.zeros(0, np.int64),
                    np.concatenate(lab).astype(np.uint64) if lab else np.zeros(0, np.uint64))
            for table, idx, lab in zip(tables, node_index, node_label, strict=True)]

