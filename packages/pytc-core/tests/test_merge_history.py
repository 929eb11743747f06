"""The merge history stored with a fragments volume: tables per threshold, storage, checks."""

from __future__ import annotations

import numpy as np
import pytest

from pytc_core.errors import UserError
from pytc_core.merge_history import (
    MERGES_NAME,
    MergeHistory,
    read_merge_history,
    write_merge_history,
)
from pytc_core.volume import create_volume


def _history(**kw) -> MergeHistory:
    # fragments 1..6: 2 -> 1 at 0.1, 4 -> 3 at 0.2, 3 -> 1 at 0.4 (3 already holds 4), 6 -> 5 at 0.7
    rows = np.array([[2, 1, 0.1], [4, 3, 0.2], [3, 1, 0.4], [6, 5, 0.7]])
    return MergeHistory.from_rows(rows, 6, thresholds=(0.1, 0.3, 0.5, 0.9), **kw)


def test_segment_tables_by_hand():
    h = _history()
    assert h.segment_table(0.1).tolist() == [0, 1, 2, 3, 4, 5, 6]  # merges below 0.1: none
    assert h.segment_table(0.3).tolist() == [0, 1, 1, 3, 3, 5, 6]
    assert h.segment_table(0.4).tolist() == [0, 1, 1, 3, 3, 5, 6]  # 0.4 is not below 0.4
    assert h.segment_table(0.5).tolist() == [0, 1, 1, 1, 1, 5, 6]
    assert h.segment_table(1.0).tolist() == [0, 1, 1, 1, 1, 5, 5]
    assert [h.merges_below(t) for t in (0.0, 0.2, 0.21, 1.0)] == [0, 1, 2, 4]


def test_segment_tables_in_any_order_equal_each_table():
    h = _history()
    ts = [0.5, 0.1, 1.0, 0.3, 0.5, 0.0]
    tables = h.segment_tables(ts)
    assert [t.tolist() for t in tables] == [
        [0, 1, 1, 1, 1, 5, 6], [0, 1, 2, 3, 4, 5, 6], [0, 1, 1, 1, 1, 5, 5],
        [0, 1, 1, 3, 3, 5, 6], [0, 1, 1, 1, 1, 5, 6], [0, 1, 2, 3, 4, 5, 6]]
    assert len({id(t) for t in tables}) == len(ts)  # no table is another's alias
    assert all(t.dtype == np.uint64 for t in tables)
    # one at a time, in increasing threshold order; a caller's changes do not leak
    order = []
    for i, table in h.iter_segment_tables(ts):
        order.append(i)
        assert table.tolist() == tables[i].tolist()
        table[:] = 0
    assert order == [5, 1, 3, 0, 4, 2]


def test_long_chain_resolves():
    n = 1000  # i+1 -> i for every i: one chain of depth 999
    rows = np.array([[i + 1, i, i / n] for i in range(1, n)])
    history = MergeHistory.from_rows(rows, n)
    assert set(history.segment_table(1.0)[1:].tolist()) == {1}
    # built one table from the one before: the chain grows across the thresholds
    for t, table in zip((0.25, 0.5, 1.0), history.segment_tables((0.25, 0.5, 1.0)),
                        strict=True):
        k = history.merges_below(t)  # merges i+1 -> i for i < k+1: ids 1..k+1 are one
        assert table[1:].tolist() == [1] * (k + 1) + list(range(k + 2, n + 1))


@pytest.mark.parametrize("uri_of", [lambda p: str(p / "frag"), lambda p: str(p / "f.h5") + ":frag"])
def test_write_read_round_trip_beside_volume(tmp_path, uri_of):
    uri = uri_of(tmp_path)
    create_volume(uri, (4, 4, 4), np.uint64).write(np.arange(64, dtype=np.uint64).reshape(4, 4, 4) % 7)
    assert read_merge_history(uri) is None
    h = _history(config={"seed_threshold": 0.5})
    write_merge_history(uri, h)
    back = read_merge_history(uri)
    assert back is not None
    assert back.num_fragments == 6 and back.thresholds == (0.1, 0.3, 0.5, 0.9)
    assert back.config == {"seed_threshold": 0.5}
    np.testing.assert_array_equal(back.absorbed, h.absorbed)
    np.testing.assert_array_equal(back.score, h.score)
    if uri.endswith(":frag"):
        assert (tmp_path / f"f.h5.frag.{MERGES_NAME}").is_file()
    else:
        assert (tmp_path / "frag" / MERGES_NAME).is_file()


@pytest.mark.parametrize("rows, n, problem", [
    ([[2, 1, 0.5], [3, 1, 0.2]], 3, "non-decreasing"),
    ([[2, 1, 0.1], [7, 1, 0.2]], 3, "outside 1..3"),
    ([[2, 1, 0.1], [2, 3, 0.2]], 3, "absorbs a region twice"),
    ([[2, 1, 0.1], [3, 2, 0.2]], 3, "already absorbed"),
    ([[2, 2, 0.1]], 3, "into itself"),
])
def test_inconsistent_histories_are_refused(rows, n, problem):
    with pytest.raises(UserError, match=problem):
        MergeHistory.from_rows(np.array(rows), n).check()


def test_a_history_of_another_run_is_refused(tmp_path):
    from pytc_core.output_run import claim_output

    uri = str(tmp_path / "frag")
    with claim_output(uri, stage="decode", key="aaaa") as run:
        run.create((4, 4, 4), np.uint64).write(np.ones((4, 4, 4), np.uint64))
        run.complete()
    write_merge_history(uri, _history(fragments_key="aaaa"))
    assert read_merge_history(uri) is not None
    write_merge_history(uri, _history(fragments_key="bbbb"))
    with pytest.raises(UserError, match="belongs to another run"):
        read_merge_history(uri)


def test_unreadable_file_is_one_user_error(tmp_path):
    uri = str(tmp_path / "frag")
    create_volume(uri, (4, 4, 4), np.uint64)
    (tmp_path / "frag" / MERGES_NAME).write_bytes(b"not an npz")
    with pytest.raises(UserError, match="unreadable"):
        read_merge_history(uri)
