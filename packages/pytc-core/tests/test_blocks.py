from __future__ import annotations

import pytest

from pytc_core import BBox, BlockProgress, UserError, plan_blocks, select_share


def test_bbox_geometry():
    box = BBox((0, 2, 4), (10, 12, 14))
    assert box.shape == (10, 10, 10) and box.size == 1000
    assert box.intersect(BBox((5, 5, 5), (20, 20, 20))) == BBox((5, 5, 5), (10, 12, 14))
    assert box.intersect(BBox((50, 50, 50), (60, 60, 60))).empty
    assert box.grow(1) == BBox((-1, 1, 3), (11, 13, 15))
    assert box.relative_to((0, 2, 4)) == (slice(0, 10), slice(0, 10), slice(0, 10))
    with pytest.raises(ValueError):
        BBox((0, 0, 0), (-1, 0, 0))


def test_plan_blocks_cover_exactly_once_on_the_grid():
    box = BBox((3, 0, 0), (20, 10, 7))
    blocks = plan_blocks(box, (8, 4, 7), grid_origin=(0, 0, 0))
    # z grid cuts at 8 and 16 (origin 0), so the first block starts at 3 and is clipped
    assert [b.start[0] for b in blocks[::3]] == [3, 8, 16]
    assert blocks[0] == BBox((3, 0, 0), (8, 4, 7))
    assert sum(b.size for b in blocks) == box.size
    covered = set()
    for b in blocks:
        for z in range(b.start[0], b.stop[0]):
            for y in range(b.start[1], b.stop[1]):
                for x in range(b.start[2], b.stop[2]):
                    assert (z, y, x) not in covered
                    covered.add((z, y, x))
    assert len(covered) == box.size


def test_select_share_splits_round_robin():
    blocks = plan_blocks(BBox((0, 0, 0), (4, 4, 4)), 2)  # 8 blocks
    shares = [select_share(blocks, f"{i}/3") for i in range(3)]
    assert [len(s) for s in shares] == [3, 3, 2]
    assert sorted(b.start for s in shares for b in s) == sorted(b.start for b in blocks)
    for bad in ["3/3", "a/b", "1/0", "-1/2"]:
        with pytest.raises(UserError):
            select_share(blocks, bad)


def test_block_progress_resumes(tmp_path):
    blocks = plan_blocks(BBox((0, 0, 0), (4, 4, 4)), 2)
    progress = BlockProgress(tmp_path / "progress")
    for b in blocks[:3]:
        progress.mark_done(b)
    assert progress.pending(blocks) == blocks[3:]
    assert BlockProgress(tmp_path / "progress").is_done(blocks[0])  # survives a restart
    assert BlockProgress(tmp_path / "progress", run_key="other").pending(blocks) == blocks


def test_run_blocks_shares_resume_and_read_ahead(tmp_path):
    from pytc_core.blocks import BlockProgress, run_blocks

    blocks = plan_blocks(BBox.from_shape((4, 4, 4)), 2)
    done = BlockProgress(tmp_path / "done")
    got: list = []
    first = run_blocks(blocks, lambda b, data: got.append((b, data)), done=done, share=(1, 2),
                       read=lambda b: b.start)
    assert (first.planned, first.skipped, first.processed) == (4, 0, 4)
    assert [b for b, _ in got] == blocks[1::2]
    assert all(data == b.start for b, data in got)  # each block gets its own read

    def fail_on_third(block, calls=[]):  # noqa: B006 - counts calls across the run
        calls.append(block)
        if len(calls) == 3:
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        run_blocks(blocks, fail_on_third, done=done)
    # share 1 and the two blocks before the failure are done; the failed block is not
    assert len(done.pending(blocks)) == 8 - 4 - 2
    rest = run_blocks(blocks, lambda b: None, done=done)
    assert (rest.planned, rest.skipped, rest.processed) == (8, 6, 2)
    assert done.pending(blocks) == []


def test_run_blocks_writes_behind_the_next_block_with_one_pending_write(tmp_path):
    import threading

    from pytc_core.blocks import BlockProgress, run_blocks

    blocks = plan_blocks(BBox.from_shape((2, 2, 8)), 2)
    assert len(blocks) == 4
    done = BlockProgress(tmp_path / "done")
    events: list[str] = []
    lock = threading.Lock()
    processing = {b: threading.Event() for b in blocks}

    def log(what: str) -> None:
        with lock:
            events.append(what)

    def process(block, data):
        k = blocks.index(block)
        processing[block].set()
        log(f"process {k}")
        return (k, data)

    def write(block, result):
        k = blocks.index(block)
        assert result == (k, block.start)  # the result of this block's process
        assert not done.is_done(block)
        if k + 1 < len(blocks):  # the next block is processed while this one is written
            assert processing[blocks[k + 1]].wait(timeout=60), "write did not overlap"
        log(f"wrote {k}")

    got = run_blocks(blocks, process, done=done, read=lambda b: b.start, write=write)
    assert (got.planned, got.skipped, got.processed) == (4, 0, 4)
    assert done.pending(blocks) == []
    # at most one pending write: block k+2 is processed only after block k is written
    for k in range(len(blocks) - 2):
        assert events.index(f"wrote {k}") < events.index(f"process {k + 2}")
    assert [e for e in events if e.startswith("wrote")] == [f"wrote {k}" for k in range(4)]


def test_run_blocks_write_errors_surface_and_nothing_unwritten_is_marked(tmp_path):
    from pytc_core.blocks import BlockProgress, run_blocks

    blocks = plan_blocks(BBox.from_shape((2, 2, 8)), 2)
    done = BlockProgress(tmp_path / "done")
    written: list[int] = []

    def write(block, k):
        if k == 1:
            raise OSError("disk full")
        written.append(k)

    with pytest.raises(OSError, match="disk full"):
        run_blocks(blocks, lambda b: blocks.index(b), done=done, write=write)
    assert written == [0]  # the error stopped the run before block 2's write
    assert done.pending(blocks) == blocks[1:]

    # a failing process waits for the write in flight, which is then marked done
    def process(block):
        if blocks.index(block) == 3:
            raise RuntimeError("model failed")
        return blocks.index(block)

    done2 = BlockProgress(tmp_path / "done2")
    written.clear()
    with pytest.raises(RuntimeError, match="model failed"):
        run_blocks(blocks, process, done=done2, write=lambda b, k: written.append(k))
    assert written == [0, 1, 2]
    assert done2.pending(blocks) == blocks[3:]
    rest = run_blocks(blocks, lambda b: blocks.index(b), done=done2,
                      write=lambda b, k: written.append(k))
    assert (rest.skipped, rest.processed) == (3, 1) and written == [0, 1, 2, 3]


def test_progress_bar_shows_blocks_voxels_per_second_and_eta(monkeypatch):
    import io
    import sys

    from pytc_core.blocks import run_blocks
    from pytc_core.cli import format_eta, format_rate, progress_counter

    assert format_rate(3_000_000, 2.0) == "1.50 Mvox/s"
    assert format_rate(500, 1.0) == "500.0 vox/s"
    assert format_rate(0, 0.0) == "- vox/s"
    assert format_eta(3_000_000, 1_000_000, 10.0) == "0:00:30"
    assert format_eta(1_000_000 * 3725, 1_000_000, 1.0) == "1:02:05"
    assert format_eta(10, 0, 0.0) == "-:--:--"

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    term = Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    blocks = plan_blocks(BBox.from_shape((4, 4, 4)), 2)
    run_blocks(blocks, lambda b: None, description="infer blocks", show_voxels=True,
               progress=progress_counter)
    text = term.getvalue()
    assert "infer blocks" in text and "8/8" in text and "vox/s" in text and "ETA" in text
    off = Terminal()
    monkeypatch.setattr(sys, "stderr", off)
    run_blocks(blocks, lambda b: None, show_voxels=True, progress=None)
    assert off.getvalue() == ""
