"""The foundation's bad inputs, through a real stage command: one stderr line, exit 2, no
traceback, nothing written."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from pytc_core import create_volume
from pytc_core.cli import run_entry_point
from pytc_decode.cli import app


def _aff(tmp_path):
    aff = np.random.default_rng(0).random((3, 4, 6, 6), dtype=np.float32)
    uri = str(tmp_path / "aff")
    create_volume(uri, aff.shape, aff.dtype).write(aff)
    return uri


def _h5(tmp_path):
    path = tmp_path / "in.h5"
    with h5py.File(path, "w") as fh:
        fh["raw"] = np.zeros((3, 4, 6, 6), np.float32)
        fh["labels"] = np.zeros((4, 6, 6), np.uint32)
    return path


def _nan(tmp_path):
    aff = np.full((3, 4, 6, 6), 0.9, np.float32)
    aff[1, 2, 3, 3] = np.nan
    np.save(tmp_path / "nan.npy", aff)
    return [str(tmp_path / "nan.npy")]


def _inf(tmp_path):
    aff = np.full((3, 4, 6, 6), 0.9, np.float32)
    aff[0, 0, 0, 0] = np.inf
    np.save(tmp_path / "inf.npy", aff)
    return [str(tmp_path / "inf.npy")]


def _nan_in_last_block(tmp_path):
    aff = np.full((3, 8, 8, 8), 0.9, np.float32)
    aff[2, 7, 7, 7] = np.nan
    np.save(tmp_path / "nan.npy", aff)
    return [str(tmp_path / "nan.npy"), "--block-size", "4"]


def _corrupt_info(tmp_path):
    uri = _aff(tmp_path)
    (tmp_path / "aff" / "info").write_text('{"scales": [')
    return [uri]


def _toml(text):
    def make(tmp_path):
        (tmp_path / "run.toml").write_text(text)
        return [_aff(tmp_path), "--config", str(tmp_path / "run.toml")]
    return make


CASES = {
    "missing file": (lambda p: [str(p / "nope.h5:raw")], "no such file"),
    "missing layer": (lambda p: [str(p / "nope_layer")], "no such volume"),
    "h5 without dataset": (lambda p: [str(_h5(p))], "names an HDF5 file but no dataset"),
    "unknown dataset": (lambda p: [f"{_h5(p)}:affs"], "dataset 'affs' not found in"),
    "2D array": (lambda p: (np.save(p / "a.npy", np.zeros((5, 5), np.float32)), [str(p / "a.npy")])[1],
                 "is 2D with shape (5, 5)"),
    "NaN": (_nan, "NaN"),
    "inf": (_inf, "NaN/inf"),
    "NaN found blockwise": (_nan_in_last_block, "NaN/inf"),
    "info missing": (lambda p: ((p / "empty").mkdir(), [str(p / "empty")])[1], "'info' file is missing"),
    "info corrupt": (_corrupt_info, "'info' file is corrupt"),
    "mip that does not exist": (lambda p: [_aff(p) + "@mip=1"],
                                "the layer has no mip 1; it has mip 0 (1x1x1 nm)"),
    "mip of an HDF5 dataset": (lambda p: [f"{_h5(p)}:raw@mip=1"],
                               "@mip= names a scale of a precomputed layer"),
    "TOML syntax": (_toml("threshold = 0.5\nmin_size = = 3\n"), "line 2"),
    "unknown TOML key": (_toml("treshold = 0.5\n"), "did you mean 'threshold'"),
    "wrong type": (_toml("min_size = 'big'\n"), "'min_size' must be int"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path, capsys, case):
    make, message = CASES[case]
    argv = make(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    code = run_entry_point("pytc-decode", app, [*argv, "--output", str(tmp_path / "seg")])
    out, err = capsys.readouterr()
    assert code == 2, err
    assert out == ""
    assert err.startswith("pytc-decode: error: ") and err.count("\n") == 1, err
    assert message in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_closed_stdout_gives_one_line_not_a_traceback(tmp_path):
    # `pytc-decode aff | true`: the reader exits before the result is written
    import subprocess
    import sys
    from pathlib import Path

    exe = Path(sys.executable).parent / "pytc-decode"
    proc = subprocess.run(f"'{exe}' '{_aff(tmp_path)}' -o '{tmp_path / 'seg'}' | true; "
                          "echo \"rc=${PIPESTATUS[0]}\" >&2", shell=True, executable="/bin/bash",
                          capture_output=True, text=True, timeout=300)
    lines = proc.stderr.strip().splitlines()  # the summary line, then the error
    assert "Traceback" not in proc.stderr
    assert lines[-2:] == ["pytc-decode: error: stdout was closed before the result was written (the "
                     "next command in the pipe exited early: see its message)", "rc=141"]
    assert (tmp_path / "seg").exists()  # the work itself was done and kept
