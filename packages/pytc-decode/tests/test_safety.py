"""Data safety through the real pytc-decode command (issue 10): --overwrite never destroys a
user's files, outputs know whether they are complete, one writer per output, and output
problems are found before any input is read. Kills and concurrent runs use real processes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import zarr

from pytc_core.cli import run_entry_point
from pytc_core.output_run import read_run_record
from pytc_core.synthetic import synthetic_labels
from pytc_core.targets import affinities_from_labels
from pytc_core.volume import create_volume, open_volume
from pytc_decode import affinity_cc
from pytc_decode.cli import app

PYTC_DECODE = str(Path(sys.executable).parent / "pytc-decode")


@pytest.fixture(scope="module")
def affinities() -> np.ndarray:
    aff = affinities_from_labels(synthetic_labels((16, 32, 32), seed=4))[0]
    noise = np.random.default_rng(2).uniform(-0.3, 0.3, aff.shape)
    return np.clip(aff + noise, 0, 1).astype(np.float32)


def write(uri: str, array: np.ndarray, chunk=(8, 16, 16)) -> str:
    create_volume(uri, array.shape, array.dtype, chunk_size=chunk).write(array)
    return uri


def decode(args, capsys) -> tuple[int, str, str]:
    code = run_entry_point("pytc-decode", app, [str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("pytc-decode: error: "), err
    return lines[0]


# --- --overwrite removes only what it may remove -----------------------------------------------

def test_overwrite_never_replaces_a_users_files(tmp_path, affinities, capsys):
    aff = write(str(tmp_path / "aff.npy"), affinities)
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    code, out, err = decode([aff, "-o", notes, "--overwrite"], capsys)
    assert code == 2 and out == ""
    assert "notes.txt is a file, not a precomputed layer" in one_error_line(err)
    assert notes.read_text() == "my notes"

    mydir = tmp_path / "mydir"
    mydir.mkdir()
    (mydir / "thesis.tex").write_text("chapter 1")
    (mydir / "figures").mkdir()
    code, _, err = decode([aff, "-o", mydir, "--overwrite", "--block-size", "8,16,16"], capsys)
    assert code == 2
    assert "is a directory that is not a precomputed layer (it holds figures, thesis.tex)" in one_error_line(err)
    assert sorted(os.listdir(mydir)) == ["figures", "thesis.tex"]

    # a precomputed layer with a user's file in it is not pytc's to delete either
    seg = tmp_path / "seg"
    assert decode([aff, "-o", seg], capsys)[0] == 0
    (seg / "README").write_text("keep me")
    code, _, err = decode([aff, "-o", seg, "--overwrite", "--threshold", "0.7"], capsys)
    assert code == 2 and "also holds other files (README)" in one_error_line(err)

    # one HDF5 dataset is replaced, never the file with the user's other datasets
    h5 = tmp_path / "work.h5"
    with h5py.File(h5, "w") as fh:
        fh["raw"] = np.arange(8, dtype=np.uint8)
        fh.create_group("notes")
    assert decode([aff, "-o", f"{h5}:seg", "-q"], capsys)[0] == 0
    assert decode([aff, "-o", f"{h5}:seg", "--overwrite", "--threshold", "0.7", "-q"], capsys)[0] == 0
    with h5py.File(h5) as fh:
        assert sorted(fh) == ["notes", "raw", "seg"] and fh["raw"][7] == 7
    code, _, err = decode([aff, "-o", f"{h5}:notes", "--overwrite"], capsys)
    assert code == 2 and "is an HDF5 group" in one_error_line(err)


@pytest.mark.parametrize("blockwise", [False, True])
def test_the_output_is_never_an_input(tmp_path, affinities, capsys, blockwise):
    aff = write(str(tmp_path / "aff"), affinities)
    extra = ["--block-size", "16"] if blockwise else []
    code, _, err = decode([aff, "-o", aff, "--overwrite", *extra], capsys)
    assert code == 2 and "is the input" in one_error_line(err)
    code, _, err = decode([aff, "-o", f"file://{aff}/", "--overwrite", *extra], capsys)
    assert code == 2 and "is the input" in one_error_line(err)
    np.testing.assert_array_equal(open_volume(aff).read(), affinities)  # untouched
    mask = write(str(tmp_path / "mask.npy"), np.ones(affinities.shape[1:], np.uint8))
    code, _, err = decode([aff, "-o", mask, "--mask", mask, "--overwrite", *extra], capsys)
    assert code == 2 and "is the input" in one_error_line(err)


# --- errors before compute, never after --------------------------------------------------------

def test_output_problems_are_found_before_the_input_is_read(tmp_path, affinities, capsys):
    # the input holds NaN: an error about the output proves nothing was read or computed
    bad = affinities.copy()
    bad[0, 5, 5, 5] = np.nan
    aff = write(str(tmp_path / "aff.npy"), bad)
    cases = {
        f"{aff}/seg": "aff.npy is a file, not a directory",
        str(tmp_path / "aff.npy" / "deep" / "seg.h5:seg"): "aff.npy is a file, not a directory",
    }
    store = tmp_path / "x.zarr"
    zarr.create_array(str(store), shape=(2, 2, 2), dtype="uint8")
    cases[f"{store}/seg"] = "x.zarr is a zarr array, so it cannot hold an array seg"
    (tmp_path / "text.h5").write_text("not hdf5")
    cases[f"{tmp_path}/text.h5:seg"] = "text.h5 is a file that is not HDF5"
    for blockwise in ([], ["--block-size", "8,16,16"]):
        for output, expected in cases.items():
            code, _, err = decode([aff, "-o", output, *blockwise], capsys)
            assert code == 2 and expected in one_error_line(err), (output, err)
    assert sorted(os.listdir(tmp_path)) == ["aff.npy", "aff.npy.json", "text.h5", "x.zarr"]
    code, _, err = decode([aff, "-o", tmp_path / "seg"], capsys)  # a fine output: now the NaN
    assert code == 2 and "NaN" in one_error_line(err)


def _read_only_command(directory: Path, argv: list[str]) -> list[str]:
    """``argv`` run with ``directory`` read-only: a read-only tmpfs mounted over it in a
    private mount namespace as root (root ignores permission bits), else chmod 555."""
    if os.geteuid() != 0:
        directory.chmod(0o555)
        return argv
    if shutil.which("unshare") is None or subprocess.run(
            ["unshare", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("running as root without mount namespaces: cannot make a read-only directory")
    script = 'mount -t tmpfs -o ro tmpfs "$1" && shift && exec "$@"'
    return ["unshare", "-m", "sh", "-c", script, "sh", str(directory), *argv]


@pytest.mark.parametrize("output", ["seg", pytest.param("seg.h5:seg", marks=pytest.mark.slow),
                                    pytest.param("sub/seg.npy", marks=pytest.mark.slow)])
def test_read_only_directory_is_one_line_before_compute(tmp_path, affinities, output):
    aff = write(str(tmp_path / "aff.npy"), affinities)
    ro = tmp_path / "ro"
    ro.mkdir()
    output = f"{ro}/{output}"
    argv = [PYTC_DECODE, aff, "-o", str(output)]
    proc = subprocess.run(_read_only_command(ro, argv), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    line = one_error_line(proc.stderr)
    assert f"cannot write {output}: {ro}" in line
    assert "read-only filesystem" in line or "is not writable" in line
    ro.chmod(0o755)


# --- outputs that know they are complete -------------------------------------------------------

# Runs pytc-decode after hooking a step, so the test can signal it at a known point: when the
# point is reached, file argv[1] is written and the run waits until file argv[2] exists.
HOOKED = r"""
import sys, time, pathlib
reached, release = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
where, after = sys.argv[3], int(sys.argv[4])
sys.argv = ["pytc-decode", *sys.argv[5:]]
def pause():
    reached.write_text("here")
    deadline = time.monotonic() + 120
    while not release.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
if where == "chunk":  # inside the output write, after `after` chunk files
    import pytc_core.volume.precomputed as pre
    real, count = pre.write_atomic, [0]
    def hooked(path, data):
        real(path, data)
        if "-" in path.name and "_" in path.name:
            count[0] += 1
            if count[0] == after:
                pause()
    pre.write_atomic = hooked
else:  # at the first read of input data (not the chunks a blockwise run's identity samples)
    from pytc_core.volume.base import Volume
    real_read = Volume.read
    def sampling_identity():
        frame = sys._getframe(2)
        while frame is not None:
            if frame.f_code.co_name == "volume_identity":
                return True
            frame = frame.f_back
        return False
    def hooked_read(self, bbox=None):
        if not reached.exists() and not sampling_identity():
            pause()
        return real_read(self, bbox)
    Volume.read = hooked_read
from pytc_decode.cli import main
main()
"""


def start_hooked(tmp_path: Path, where: str, argv: list, after: int = 0) -> tuple[subprocess.Popen, Path]:
    """Start pytc-decode ``argv`` and return once it reached the hook; the returned path
    releases it when created."""
    tag = time.monotonic_ns()
    reached, release = tmp_path / f".reached{tag}", tmp_path / f".release{tag}"
    proc = subprocess.Popen([sys.executable, "-c", HOOKED, str(reached), str(release), where,
                             str(after), *map(str, argv)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            # a background job of a non-interactive shell inherits SIGINT
                            # ignored, and Python keeps it so: restore the default (Ctrl-C)
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not reached.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            _, err = proc.communicate()
            raise AssertionError(f"hooked run ended early ({proc.returncode}): {err}")
        time.sleep(0.05)
    return proc, release


def visible(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if not p.name.startswith((".reached", ".release")))


@pytest.mark.parametrize("blockwise", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_ctrl_c_of_a_fresh_run_leaves_nothing_behind(tmp_path, affinities, blockwise):
    aff = write(str(tmp_path / "aff.npy"), affinities)
    out = tmp_path / "new.h5"
    extra = ["--block-size", "8,16,16"] if blockwise else []
    proc, release = start_hooked(tmp_path, "read", [aff, "-o", f"{out}:seg", *extra])
    assert out.with_name("new.h5.seg.pytc_lease").exists()  # the run holds its output
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    release.write_text("go")  # the blockwise read-ahead thread waits at the hook
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted" in err
    assert visible(tmp_path) == ["aff.npy", "aff.npy.json"]


@pytest.mark.slow  # a real process interrupted
def test_ctrl_c_in_the_final_write_leaves_nothing_behind(tmp_path, affinities):
    aff = write(str(tmp_path / "aff.npy"), affinities)
    seg = tmp_path / "seg"
    proc, release = start_hooked(tmp_path, "chunk", [aff, "-o", seg], after=1)
    assert len(os.listdir(seg / "1.0_1.0_1.0")) == 1  # its chunk is written, not yet complete
    assert read_run_record(str(seg)).state == "running"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted" in err
    assert visible(tmp_path) == ["aff.npy", "aff.npy.json"]


def test_nan_abort_of_a_blockwise_decode_leaves_no_empty_hdf5_file(tmp_path, affinities, capsys):
    bad = affinities.copy()
    bad[:, 12:, 20:, 20:] = np.nan  # found partway, in the last block
    aff = write(str(tmp_path / "aff.npy"), bad)
    code, _, err = decode([aff, "-o", f"{tmp_path}/new.h5:seg", "--block-size", "8,16,16"], capsys)
    assert code == 2 and "NaN" in one_error_line(err)
    assert sorted(os.listdir(tmp_path)) == ["aff.npy", "aff.npy.json"]


def test_missing_chunk_is_an_error_unless_fill_missing(tmp_path, affinities, capsys):
    aff = write(str(tmp_path / "aff"), affinities)
    (tmp_path / "aff" / "1.0_1.0_1.0" / "16-32_16-32_8-16").unlink()
    for extra in ([], ["--block-size", "8,16,16"]):
        code, _, err = decode([aff, "-o", tmp_path / "seg", *extra], capsys)
        assert code == 2
        assert "aff is missing chunk 1.0_1.0_1.0/16-32_16-32_8-16 (restore it, or pass " \
               "--fill-missing" in one_error_line(err)
        assert not (tmp_path / "seg").exists()
    sparse = affinities.copy()
    sparse[:, 8:16, 16:32, 16:32] = 0
    code, _, _ = decode([aff, "-o", tmp_path / "seg", "--fill-missing"], capsys)
    assert code == 0
    np.testing.assert_array_equal(open_volume(str(tmp_path / "seg")).read(), affinity_cc(sparse, 0.5))


# --- one writer per output ---------------------------------------------------------------------

@pytest.mark.slow  # three real processes
def test_a_second_run_with_other_options_is_refused_while_the_first_writes(tmp_path, affinities):
    aff = write(str(tmp_path / "aff"), affinities)
    seg = tmp_path / "seg"
    first, release = start_hooked(tmp_path, "read", [aff, "-o", seg, "--block-size", "8,16,16",
                                                     "--threshold", "0.5"])
    second = subprocess.run([PYTC_DECODE, aff, "-o", str(seg), "--block-size", "8,16,16",
                             "--threshold", "0.7"], capture_output=True, text=True, timeout=120)
    release.write_text("go")
    assert second.returncode == 2 and second.stdout == ""
    line = one_error_line(second.stderr)
    assert f"output {seg} is being written by another run" in line and f"pid {first.pid}" in line
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert out.strip() == str(seg)
    np.testing.assert_array_equal(open_volume(str(seg)).read(), affinity_cc(affinities, 0.5))
    assert "threshold = 0.5" in (seg / "pytc_config.toml").read_text()
    assert not (seg / "pytc_lease").exists()


def test_share_steps_refuse_an_output_of_another_run(tmp_path, affinities, capsys):
    aff = write(str(tmp_path / "aff"), affinities)
    seg = tmp_path / "seg"
    assert decode([aff, "-o", seg, "--threshold", "0.7", "-q"], capsys)[0] == 0
    before = open_volume(str(seg)).read()
    blockwise = [aff, "-o", seg, "--block-size", "8,16,16", "-q"]
    for step in (["--step", "label", "--blocks", "0/2"], ["--step", "relabel", "--blocks", "1/2"],
                 ["--step", "reduce"]):
        code, _, err = decode([*blockwise, *step], capsys)
        assert code == 2 and "already exists" in one_error_line(err), (step, err)
    np.testing.assert_array_equal(open_volume(str(seg)).read(), before)
    # shares of one run work together, and the output is complete after the last relabel share
    seg2 = tmp_path / "seg2"
    shares = [aff, "-o", seg2, "--block-size", "8,16,16", "-q"]
    for i in range(2):
        assert decode([*shares, "--step", "label", "--blocks", f"{i}/2"], capsys)[0] == 0
    assert decode([*shares, "--step", "reduce"], capsys)[0] == 0
    assert decode([*shares, "--step", "relabel", "--blocks", "0/2"], capsys)[0] == 0
    assert not read_run_record(str(seg2)).complete
    assert decode([*shares, "--step", "relabel", "--blocks", "1/2"], capsys)[0] == 0
    assert read_run_record(str(seg2)).complete
    np.testing.assert_array_equal(open_volume(str(seg2)).read(), affinity_cc(affinities, 0.5))
