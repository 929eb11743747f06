"""I/O from several threads of one process (issue 23 §1, §5): the output URI still reaches
stdout when precomputed reads overlap, and two datasets of one HDF5 file are read and
written by two threads without an error."""

from __future__ import annotations

import logging
import sys
import threading

import numpy as np

from pytc_core.bbox import BBox
from pytc_core.cli import emit
from pytc_core.volume import create_volume, open_volume

WAIT = 30  # seconds; only reached when the forced interleaving is broken


class _Gate:
    """A CloudVolume stand-in for ``PrecomputedVolume._cv`` that forces the interleaving:
    reader A is inside its read when reader B starts, and A finishes before B."""

    def __init__(self, cv) -> None:
        self.cv = cv
        self.a_in, self.b_in, self.a_done = threading.Event(), threading.Event(), threading.Event()

    def __getitem__(self, key):
        if threading.current_thread().name == "reader-a":
            self.a_in.set()
            assert self.b_in.wait(WAIT)
        else:
            assert self.a_in.wait(WAIT)
            self.b_in.set()
            assert self.a_done.wait(WAIT)
        return self.cv[key]


def test_overlapping_precomputed_reads_on_two_threads_leave_stdout_alone(tmp_path, capsys):
    data = np.arange(16 * 16 * 16, dtype=np.uint16).reshape(16, 16, 16)
    uri = str(tmp_path / "layer")
    create_volume(uri, data.shape, data.dtype, chunk_size=(16, 16, 16)).write(data)
    vol = open_volume(uri)
    gate = _Gate(vol.cv)
    vol._cv = gate
    original = sys.stdout
    results: dict[str, np.ndarray] = {}
    errors: list[BaseException] = []

    def read(name: str) -> None:
        try:
            results[name] = vol.read(BBox((0, 0, 0), (16, 16, 16)))
            if name == "reader-a":
                gate.a_done.set()
        except BaseException as exc:  # reported below
            errors.append(exc)
            gate.a_done.set()

    threads = [threading.Thread(target=read, args=(n,), name=n) for n in ("reader-a", "reader-b")]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(WAIT)
        left = sys.stdout
    finally:
        sys.stdout = original  # so that a failure here does not swallow later tests' output
    assert not errors, errors
    assert left is original, "a reader thread left sys.stdout replaced"
    for name in ("reader-a", "reader-b"):
        np.testing.assert_array_equal(results[name], data)
    emit("file:///the/output")
    assert capsys.readouterr().out == "file:///the/output\n"


def test_cloud_library_prints_go_to_the_debug_log_not_stdout(capsys, caplog):
    from cloudvolume.frontends import precomputed as cv_precomputed

    from pytc_core.volume.precomputed import quiet_cloud_libraries

    original = sys.stdout
    quiet_cloud_libraries()
    quiet_cloud_libraries()  # idempotent
    with caplog.at_level(logging.DEBUG, logger="pytc.volume"):
        cv_precomputed.warn("Warning: a placeholder mip")
    assert sys.stdout is original
    out, err = capsys.readouterr()
    assert out == "" and err == ""
    assert "Warning: a placeholder mip" in caplog.text
    # a library print aimed at stderr still goes there
    cv_precomputed.print("to stderr", file=sys.stderr)
    assert capsys.readouterr() == ("", "to stderr\n")


def test_two_threads_read_and_write_two_datasets_of_one_hdf5_file(tmp_path):
    raw = np.random.default_rng(0).integers(0, 255, (16, 32, 32), dtype=np.uint8)
    path = tmp_path / "vol.h5"
    create_volume(f"{path}:raw", raw.shape, raw.dtype, chunk_size=(8, 8, 8)).write(raw)
    out = create_volume(f"{path}:aff", raw.shape, np.uint16, chunk_size=(8, 8, 8))
    src = open_volume(f"{path}:raw")
    boxes = [BBox((z, y, x), (z + 8, y + 8, x + 8))
             for z in range(0, 16, 8) for y in range(0, 32, 8) for x in range(0, 32, 8)]
    rounds = 40
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def reader() -> None:
        try:
            start.wait(WAIT)
            for _ in range(rounds):
                for box in boxes:
                    z0, y0, x0 = box.start
                    np.testing.assert_array_equal(src.read(box), raw[z0:z0 + 8, y0:y0 + 8, x0:x0 + 8])
        except BaseException as exc:  # reported below
            errors.append(exc)

    def writer() -> None:
        try:
            start.wait(WAIT)
            for r in range(rounds):
                for box in boxes:
                    z0, y0, x0 = box.start
                    out.write(raw[z0:z0 + 8, y0:y0 + 8, x0:x0 + 8].astype(np.uint16) + r, box.start)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=reader), threading.Thread(target=writer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[0]
    np.testing.assert_array_equal(open_volume(f"{path}:aff").read(), raw.astype(np.uint16) + rounds - 1)
    np.testing.assert_array_equal(open_volume(f"{path}:raw").read(), raw)
