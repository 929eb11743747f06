"""Block plans: one list of chunk-aligned blocks shared by the local loop and Slurm array tasks.

A run over a volume is planned once (:func:`plan_blocks`); a Slurm array task takes its
share with :func:`select_share`; :class:`BlockProgress` records finished blocks so an
interrupted run resumes without redoing them.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytc_core.bbox import BBox, grid_boxes, vec3
from pytc_core.errors import UserError
from pytc_core.files import write_atomic

__all__ = ["BlockProgress", "BlockRunResult", "ProgressReporter", "no_progress", "parse_share",
           "plan_blocks", "run_blocks", "select_share"]


def plan_blocks(bbox: BBox, block_size: Sequence[int] | int,
                grid_origin: Sequence[int] | None = None) -> list[BBox]:
    """Cut ``bbox`` into blocks of ``block_size`` voxels (z, y, x), in C order.

    Block boundaries lie on the grid ``grid_origin + k * block_size`` (default: ``bbox.start``),
    so choose a block size that is a multiple of the output's chunk size to keep every write
    chunk-aligned. Blocks at the far faces are clipped to ``bbox``.
    """
    size = vec3(block_size, "block_size")
    if any(s <= 0 for s in size):
        raise UserError(f"block size {size} must be positive", "use positive voxel counts, e.g. 128")
    return grid_boxes(bbox, size, grid_origin)


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


#: ``progress(description, total, total_voxels=None)``: a context manager yielding
#: ``advance(voxels=0)``, called once per finished block, from any thread
ProgressReporter = Callable[..., AbstractContextManager[Callable[..., None]]]


@contextmanager
def no_progress(description: str, total: int | None, *,
                total_voxels: int | None = None) -> Iterator[Callable[..., None]]:
    """A :data:`ProgressReporter` that shows nothing."""
    yield lambda voxels=0: None


@dataclass(frozen=True)
class BlockRunResult:
    """What :func:`run_blocks` did: blocks in this task's share, already done, processed now."""

    planned: int
    skipped: int
    processed: int


def run_blocks(blocks: Sequence[BBox], process: Callable[..., Any], *,
               done: BlockProgress | None = None, share: tuple[int, int] | None = None,
               read: Callable[[BBox], Any] | None = None,
               write: Callable[[BBox, Any], object] | None = None,
               description: str = "blocks", progress: ProgressReporter | None = None,
               show_voxels: bool = False) -> BlockRunResult:
    """Run ``process`` on this task's share of the pending blocks; mark each done after it.

    The one blockwise loop of every stage (daisy's process/check split): ``share=(i, n)``
    takes task i of n (:func:`select_share`), ``done`` skips blocks already marked finished
    and marks a block only after its output is complete (so a killed run never marks a block
    whose output is incomplete). ``progress`` reports the finished blocks (the CLI passes
    :func:`pytc_core.cli.progress_counter`, a bar on stderr: blocks done, elapsed time and
    ETA, with ``show_voxels`` voxels/s); it is called as ``progress(description, blocks,
    total_voxels=...)`` and yields ``advance(voxels)``, called once per finished block (each
    block counts ``block.size`` voxels; ``total_voxels`` is None without ``show_voxels``).

    With ``read``, the next block's input is read in a background thread while the current
    one is processed, and ``process(block, data)`` gets it; without, ``process(block)``.
    With ``write``, ``process`` returns the block's result and ``write(block, result)`` runs
    on a writer thread while the next block is processed; at most one write is pending (the
    next finished result waits for it), so memory holds about two results. A block is
    marked done after its write returned; an exception in ``write`` is raised here (from the
    loop, by the next block or at the end); an exception in ``process`` first waits for the
    pending write (which is marked done if it succeeds). Without ``write``, a block is
    complete when ``process`` returns. The blocks are processed in plan order, one at a time,
    on the calling thread.
    """
    mine = select_share(blocks, share) if share is not None else list(blocks)
    pending = done.pending(mine) if done is not None else mine
    skipped = len(mine) - len(pending)
    total_voxels = sum(b.size for b in pending) if show_voxels else None
    report = progress if progress is not None else no_progress
    with report(description, len(pending), total_voxels=total_voxels) as advance, \
            ExitStack() as stack:

        def finish(block: BBox) -> None:
            if done is not None:
                done.mark_done(block)
            advance(block.size)

        def write_and_finish(block: BBox, result: Any) -> None:
            assert write is not None
            write(block, result)
            finish(block)

        reader = (stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="pytc-read"))
                  if read is not None and pending else None)
        writer = (stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="pytc-write"))
                  if write is not None and pending else None)
        ahead = reader.submit(read, pending[0]) if reader is not None and read else None
        writing: Future[None] | None = None
        try:
            for k, block in enumerate(pending):
                if reader is not None and read is not None:
                    assert ahead is not None
                    data = ahead.result()
                    # read the next block while this one is processed
                    ahead = (reader.submit(read, pending[k + 1]) if k + 1 < len(pending)
                             else None)
                    result = process(block, data)
                else:
                    result = process(block)
                if writer is None:
                    finish(block)
                    continue
                if writing is not None:
                    writing.result()  # one pending write at most; its error surfaces here
                writing = writer.submit(write_and_finish, block, result)
                del result
            if writing is not None:
                writing.result()
        except BaseException as exc:
            # a failed block (or Ctrl-C) waits for the write in flight: the block before it
            # is marked done if its write succeeds, and nothing writes after this returns
            if writing is not None:
                wait([writing])
                failed = writing.exception()
                if failed is not None and failed is not exc:
                    exc.add_note(f"the write of the block before also failed: {failed!r}")
            raise
    return BlockRunResult(len(mine), skipped, len(pending))
