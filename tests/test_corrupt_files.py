"""Corrupt or truncated input files, in every format, through the real commands: one stderr
line naming the file, exit 2, no traceback, nothing written."""

from __future__ import annotations

import glob
import os

import h5py
import numpy as np
import pytest

from pytc_core import create_volume
from pytc_core.cli import run_entry_point

AFF = np.random.default_rng(0).random((3, 4, 8, 8), dtype=np.float32)
SEG = (np.arange(4 * 8 * 8, dtype=np.uint32).reshape(4, 8, 8) // 16) + 1


def _truncate(path: str, keep: float = 0.5) -> None:
    size = os.path.getsize(path)
    with open(path, "r+b") as fh:
        fh.truncate(int(size * keep))


def _written(uri: str, data: np.ndarray, **kwargs) -> str:
    create_volume(uri, data.shape, data.dtype, chunk_size=(2, 4, 4), **kwargs).write(data)
    return uri


def empty_npy(d, data):
    (d / "in.npy").write_bytes(b"")
    return str(d / "in.npy")


def truncated_npy(d, data):
    np.save(d / "in.npy", data)
    _truncate(str(d / "in.npy"))
    return str(d / "in.npy")


def h5_not_hdf5(d, data):
    (d / "in.h5").write_text("labels exported as text\n")
    return f"{d}/in.h5:data"


def truncated_h5(d, data):
    with h5py.File(d / "in.h5", "w") as fh:
        fh.create_dataset("data", data=data, chunks=(1, 2, 4, 4)[-data.ndim:], compression="gzip")
    _truncate(str(d / "in.h5"), 0.6)
    return f"{d}/in.h5:data"


def tif_not_tiff(d, data):
    (d / "in.tif").write_bytes(b"\x89PNG\r\n\x1a\n not a tiff")
    return str(d / "in.tif")


def truncated_tif(d, data):
    uri = _written(str(d / "in.tif"), data)
    _truncate(uri, 0.7)
    return uri


def zarr_broken_array_metadata(d, data):
    uri = _written(str(d / "in.zarr"), data)
    (d / "in.zarr" / "0" / "zarr.json").write_text('{"zarr_format": 3, "shape": [')
    return uri


def zarr_broken_group_metadata(d, data):
    uri = _written(str(d / "in.zarr"), data, zarr_format=2)
    (d / "in.zarr" / ".zattrs").write_text("{not json")
    return uri


def zarr_chunk_does_not_decode(d, data):
    uri = _written(str(d / "in.zarr"), data)
    chunk = sorted(p for p in glob.glob(f"{d}/in.zarr/0/c/**", recursive=True) if os.path.isfile(p))[0]
    with open(chunk, "wb") as fh:
        fh.write(b"garbage, not zstd")
    return uri


def precomputed_chunk_does_not_decode(d, data):
    uri = _written(str(d / "in_layer"), data)
    chunk = sorted(glob.glob(f"{d}/in_layer/1.0_1.0_1.0/*"))[0]
    with open(chunk, "wb") as fh:
        fh.write(b"garbage")
    return uri


CASES = {
    "empty .npy": (empty_npy, "it is empty"),
    "truncated .npy": (truncated_npy, "it is truncated"),
    ".h5 that is not HDF5": (h5_not_hdf5, "as HDF5"),
    "truncated .h5": (truncated_h5, "HDF5"),
    ".tif that is not TIFF": (tif_not_tiff, "as TIFF"),
    "truncated .tif": (truncated_tif, "damaged or truncated"),
    "zarr array metadata broken": (zarr_broken_array_metadata, "zarr metadata"),
    "zarr group metadata broken": (zarr_broken_group_metadata, "zarr metadata"),
    "zarr chunk does not decode": (zarr_chunk_does_not_decode, "does not decode"),
    "precomputed chunk does not decode": (precomputed_chunk_does_not_decode, "does not decode"),
}


def _check(capsys, prog, code, message, tmp_path, before):
    out, err = capsys.readouterr()
    assert code == 2, err
    assert out == ""
    assert err.startswith(f"{prog}: error: ") and err.count("\n") == 1, err
    assert message in err and "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


@pytest.mark.parametrize("case", list(CASES))
def test_corrupt_affinities_through_pytc_decode(tmp_path, capsys, case):
    from pytc_decode.cli import app

    make, message = CASES[case]
    uri = make(tmp_path, AFF)
    before = sorted(p.name for p in tmp_path.iterdir())
    code = run_entry_point("pytc-decode", app, [uri, "--output", str(tmp_path / "seg")])
    _check(capsys, "pytc-decode", code, message, tmp_path, before)


@pytest.mark.parametrize("case", list(CASES))
def test_corrupt_segmentation_through_pytc_eval(tmp_path, capsys, case):
    from pytc_eval.cli import app

    make, message = CASES[case]
    gt = _written(str(tmp_path / "gt.npy"), SEG)
    uri = make(tmp_path, SEG)
    before = sorted(p.name for p in tmp_path.iterdir())
    code = run_entry_point("pytc-eval", app, [uri, "--gt", gt])
    _check(capsys, "pytc-eval", code, message, tmp_path, before)


@pytest.mark.parametrize("case", ["precomputed chunk does not decode"])
def test_corrupt_input_through_the_installed_command(tmp_path, case):
    """The same through the console script in a fresh process (nothing caught by the test)."""
    import subprocess
    import sys
    from pathlib import Path

    make, message = CASES[case]
    uri = make(tmp_path, AFF)
    before = sorted(p.name for p in tmp_path.iterdir())
    done = subprocess.run([str(Path(sys.executable).parent / "pytc-decode"), uri, "-o", str(tmp_path / "seg")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert done.stderr.startswith("pytc-decode: error: ") and done.stderr.count("\n") == 1, done.stderr
    assert message in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before
