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


def _spy_fsync(monkeypatch):
    """Record, for each os.fsync call, the file's path and whether it was a folder."""
    import os
    import stat

    calls: list[tuple[str, bool]] = []
    real = os.fsync

    def spy(fd):
        st = os.fstat(fd)
        calls.append((os.readlink(f"/proc/self/fd/{fd}"), stat.S_ISDIR(st.st_mode)))
        return real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    return calls


def test_write_atomic_fsyncs_the_data_before_the_rename_and_the_folder_after(tmp_path,
                                                                              monkeypatch):
    import os

    from pytc_core import files

    target = tmp_path / "sub" / "done"
    calls = _spy_fsync(monkeypatch)
    renamed: list[int] = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace",
                        lambda a, b: (renamed.append(len(calls)), real_replace(a, b))[1])
    monkeypatch.setattr(files, "_NETWORK_BY_DEVICE", {})
    write_atomic(target, b"ok")
    assert target.read_bytes() == b"ok"
    assert len(calls) == 2
    (file_path, file_is_dir), (dir_path, dir_is_dir) = calls
    # the temporary file (still under its own name) before the rename, the folder after it
    assert not file_is_dir and file_path.startswith(str(target.parent / ".done.tmp"))
    assert renamed == [1]
    assert dir_is_dir and dir_path == str(target.parent)


def test_on_a_network_file_system_the_folder_is_not_fsynced(tmp_path, monkeypatch):
    from pytc_core import files

    mounts = tmp_path / "mounts"
    mounts.write_text(f"/dev/sda1 / ext4 rw 0 0\nserver:/export {tmp_path} nfs4 rw 0 0\n")
    assert files.is_network_fs(tmp_path / "x", mounts=str(mounts))
    assert not files.is_network_fs("/usr", mounts=str(mounts))
    monkeypatch.setattr(files, "_NETWORK_BY_DEVICE", {})
    monkeypatch.setattr(files, "is_network_fs", lambda path: True)
    calls = _spy_fsync(monkeypatch)
    write_atomic(tmp_path / "done", b"ok")
    assert [is_dir for _, is_dir in calls] == [False]
