from __future__ import annotations

import pytest

from pytc_core.files import write_atomic


def test_write_atomic_bytes_and_writer(tmp_path):
    target = tmp_path / "sub" / "a.bin"
    assert write_atomic(target, b"abc") == target
    assert target.read_bytes() == b"abc"
    write_atomic(target, lambda fh: fh.write(b"xyz"))
    assert target.read_bytes() == b"xyz"
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.bin"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")

    def broken(fh):
        fh.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_atomic(target, broken)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]
