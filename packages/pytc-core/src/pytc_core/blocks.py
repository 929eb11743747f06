"""Block plans: one list of chunk-aligned blocks shared by the local loop and Slurm array tasks.

A run over a volume is planned once (:func:`plan_blocks`); a Slurm array task takes its
share with :func:`select_share`; :class:`BlockProgress` records finished blocks so an
interrupted run resumes without redoing them.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytc_core.bbox import BBox, _vec
from pytc_core.errors import UserError
from pytc_core.files import write_atomic

__all__ = ["BlockProgress", "BlockRunResult", "parse_share", "plan_blocks", "run_blocks",
           "select_share"]


def plan_blocks(bbox: BBox, block_size: Sequence[int] | int,
                grid_origin: Sequence[int] | None = None) -> list[BBox]:
    """Cut ``bbox`` into blocks of ``block_size`` voxels (z, y, x), in C order.

    Block boundaries lie on the grid ``grid_origin + k * block_size`` (default: ``bbox.start``),
    so choose a block size that is a multiple of the output's chunk size to keep every write
    chunk-aligned. Blocks at the far faces are clipped to ``bbox``.
    """
    size = _vec(block_size, "block_size")
    if any(s <= 0 for s in size):
        raise UserError(f"block size {size} must be positive", "use positive voxel counts, e.g. 128")
    origin = _vec(grid_origin if grid_origin is not None else bbox.start, "grid_origin")
    ranges = []
    for a, b, o, s in zip(bbox.start, bbox.stop, origin, size, strict=True):
        first = o + ((a - o) // s) * s
        ranges.append(range(first, b, s))
    blocks = []
    for z, y, x in itertools.product(*ranges):
        block = BBox((z, y, x), (z + size[0], y + size[1], x + size[2])).intersect(bbox)
        if not block.empty:
            blocks.append(block)
    return blocks


_SHARE = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_share(share: str) -> tuple[int, int]:
    """``"i/n"`` → ``(i, n)`` with 0 <= i < n (task i of n, 0-based as Slurm array ids)."""
    m = _SHARE.match(share)
    if not m:
        raise UserError(f"bad block share '{share}'", "write it as i/n, e.g. 0/4 for the first of 4 tasks")
    i, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not 0 <= i < n:
        raise UserError(f"bad block share '{share}': need 0 <= i < n", "e.g. 3/8")
    return i, n


def select_share(blocks: Sequence[BBox], share: str | tuple[int, int]) -> list[BBox]:
    """The blocks of task ``i`` of ``n``: every n-th block starting at i (round robin)."""
    i, n = parse_share(share) if isinstance(share, str) else share
    return list(blocks[i::n])


class BlockProgress:
    """Marker files that record finished blocks of one run in ``directory``.

    A block is marked done (an empty file, created atomically) only after its output
    is written, so a killed run never marks a block whose data is incomplete.
    """

    def __init__(self, directory: str | os.PathLike[str], run_key: str = "") -> None:
        self.directory = Path(directory)
        self.run_key = run_key

    def _path(self, block: BBox) -> Path:
        name = "_".join(f"{a}-{b}" for a, b in zip(block.start, block.stop, strict=True))
        if self.run_key:
            name = hashlib.sha1(self.run_key.encode()).hexdigest()[:8] + "_" + name
        return self.directory / name

    def is_done(self, block: BBox) -> bool:
        return self._path(block).exists()

    def mark_done(self, block: BBox) -> None:
        write_atomic(self._path(block), b"")

    def pending(self, blocks: Sequence[BBox]) -> list[BBox]:
        """The blocks not yet marked done."""
        return [b for b in blocks if not self.is_done(b)]


@dataclass(frozen=True)
class BlockRunResult:
    """What :func:`run_blocks` did: blocks in this task's share, already done, processed now."""

    planned: int
    skipped: int
    processed: int


def run_blocks(blocks: Sequence[BBox], process: Callable[..., object], *,
               done: BlockProgress | None = None, share: tuple[int, int] | None = None,
               read: Callable[[BBox], Any] | None = None, description: str = "blocks",
               show_progress: bool = True) -> BlockRunResult:
    """Run ``process`` on this task's share of the pending blocks; mark each done after it.

    The one blockwise loop of every stage (daisy's process/check split): ``share=(i, n)``
    takes task i of n (:func:`select_share`), ``done`` skips blocks already marked finished
    and marks a block only after ``process`` returned (so a killed run never marks a block
    whose output is incomplete), and a progress bar shows on stderr (on a terminal).

    With ``read``, the next block's input is read in a background thread while the current
    one is processed, and ``process(block, data)`` gets it; without, ``process(block)``.
    The blocks are processed in plan order, one at a time, on the calling thread.
    """
    from pytc_core.cli import progress

    mine = select_share(blocks, share) if share is not None else list(blocks)
    pending = done.pending(mine) if done is not None else mine
    skipped = len(mine) - len(pending)
    bar = progress(pending, description, total=len(pending), enabled=show_progress)
    if read is None:
        for block in bar:
            process(block)
            if done is not None:
                done.mark_done(block)
        return BlockRunResult(len(mine), skipped, len(pending))
    with ThreadPoolExecutor(1, thread_name_prefix="pytc-read") as pool:
        ahead = pool.submit(read, pending[0]) if pending else None
        for k, block in enumerate(bar):
            assert ahead is not None
            data = ahead.result()
            # read the next block while this one is processed
            ahead = pool.submit(read, pending[k + 1]) if k + 1 < len(pending) else None
            process(block, data)
            if done is not None:
                done.mark_done(block)
    return BlockRunResult(len(mine), skipped, len(pending))
