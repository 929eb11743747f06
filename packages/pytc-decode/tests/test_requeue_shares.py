"""Issue 23 §2/§3 through the real pytc-decode command: SIGUSR1 (Slurm's time-limit warning,
forwarded by the requeue wrapper) in the middle of a blockwise decode exits 75 with its
finished blocks kept and no lease left, and the same command resumes to the uninterrupted
result; shares of one run started at the same moment (a file gate, separate processes), or
one after another, give the result of one local run every time."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pytc_core.cli import run_entry_point
from pytc_core.output_run import read_run_record
from pytc_core.synthetic import synthetic_labels
from pytc_core.targets import affinities_from_labels
from pytc_core.volume import create_volume, open_volume
from pytc_decode.cli import app

BLOCK = ["--block-size", "8,16,16"]  # 2 x 2 x 2 = 8 blocks of the 16 x 32 x 32 volume


@pytest.fixture(scope="module")
def aff_uri(tmp_path_factory) -> str:
    aff = affinities_from_labels(synthetic_labels((16, 32, 32), seed=4))[0]
    noise = np.random.default_rng(2).uniform(-0.3, 0.3, aff.shape)
    aff = np.clip(aff + noise, 0, 1).astype(np.float32)
    uri = str(tmp_path_factory.mktemp("aff") / "aff")
    create_volume(uri, aff.shape, aff.dtype, chunk_size=(8, 16, 16)).write(aff)
    return uri


@pytest.fixture(scope="module")
def reference(aff_uri, tmp_path_factory) -> np.ndarray:
    """One local blockwise run, uninterrupted."""
    out = str(tmp_path_factory.mktemp("ref") / "seg")
    assert run_entry_point("pytc-decode", app, [aff_uri, "-o", out, *BLOCK, "-q"]) == 0
    return open_volume(out).read()


def finished(markers: Path) -> list[Path]:
    """The done markers (not the temporary files they are written through)."""
    return [p for p in markers.iterdir() if not p.name.startswith(".")]


# every finished block takes a moment (after its marker): the signal lands mid-run
SLOW_BLOCKS = """
import sys, time
from pytc_core.blocks import BlockProgress
real = BlockProgress.mark_done
def slow(self, block):
    real(self, block)
    time.sleep(0.3)
BlockProgress.mark_done = slow
from pytc_decode.cli import main
sys.argv = ["pytc-decode", *sys.argv[1:]]
main()
"""


@pytest.mark.slow  # a real process and a real signal
def test_sigusr1_mid_blockwise_decode_exits_75_and_the_rerun_resumes(tmp_path, aff_uri,
                                                                      reference):
    out = tmp_path / "seg"
    argv = [aff_uri, "-o", str(out), *BLOCK, "-q"]
    proc = subprocess.Popen([sys.executable, "-c", SLOW_BLOCKS, *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    markers = out / "pytc_decode" / "label"
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if markers.is_dir() and len(finished(markers)) >= 3:
            proc.send_signal(signal.SIGUSR1)
            break
        time.sleep(0.02)
    stdout, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err  # the requeue code (pytc-train's), not 138
    assert "stopped by SIGUSR1" in err and stdout == ""
    done = len(finished(markers))
    assert 3 <= done < 8  # finished blocks kept, the rest left for the requeued job
    assert not (out / "pytc_lease").exists() and not (out / "pytc_lease.members").exists()
    assert read_run_record(str(out)).state == "running"

    rerun = subprocess.run([sys.executable, "-c", SLOW_BLOCKS, *argv], capture_output=True,
                           text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout == f"{out}\n"
    np.testing.assert_array_equal(open_volume(str(out)).read(), reference)
    assert read_run_record(str(out)).complete


@pytest.mark.slow  # 4 processes, 3 rounds
def test_four_shares_started_at_once_equal_one_local_run(run_gated, tmp_path, aff_uri, reference):
    rounds, n = 3, 4
    outs = [str(tmp_path / f"seg{r}") for r in range(rounds)]
    phases: list[list[list[str] | None]] = [[] for _ in range(n)]
    for out in outs:
        for i in range(n):
            phases[i].append([aff_uri, "-o", out, *BLOCK, "--step", "label", "--blocks",
                              f"{i}/{n}", "-q"])
            phases[i].append([aff_uri, "-o", out, *BLOCK, "--step", "reduce", "-q"]
                             if i == 0 else None)
            phases[i].append([aff_uri, "-o", out, *BLOCK, "--step", "relabel", "--blocks",
                              f"{i}/{n}", "-q"])
    gated = run_gated(tmp_path, "pytc-decode", "pytc_decode.cli", phases)
    assert gated.codes == [[0] * n] * (3 * rounds), gated.report()
    for out in outs:
        np.testing.assert_array_equal(open_volume(out).read(), reference)
        assert read_run_record(out).complete
        assert not Path(out, "pytc_lease").exists()


@pytest.mark.slow
def test_shares_one_after_another_and_empty_shares_equal_one_local_run(tmp_path, aff_uri,
                                                                       reference, capsys):
    out = str(tmp_path / "seg")
    n = 10  # more tasks than the 8 blocks: shares 8 and 9 are empty, which is normal
    for step in ("label", "reduce", "relabel"):
        for i in range(n if step != "reduce" else 1):
            share = ["--blocks", f"{i}/{n}"] if step != "reduce" else []
            code = run_entry_point("pytc-decode", app,
                                   [aff_uri, "-o", out, *BLOCK, "--step", step, *share, "-q"])
            assert code == 0, capsys.readouterr().err
    np.testing.assert_array_equal(open_volume(out).read(), reference)
    # a late share of the finished run: the URI again, exit 0
    capsys.readouterr()
    assert run_entry_point("pytc-decode", app, [aff_uri, "-o", out, *BLOCK, "--step", "relabel",
                                                "--blocks", f"3/{n}", "-q"]) == 0
    assert capsys.readouterr().out == f"{out}\n"
