"""Issue 23 §2/§3 through the real pytc-infer command: SIGUSR1 in the middle of a blockwise
prediction exits 75 with its finished blocks kept and no lease left, and the same command
resumes to the uninterrupted result; shares of one run use one block plan (the first share's,
whatever memory the later ones see), started at the same moment or one after another, and a
late or empty share exits 0."""

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
from pytc_core.volume import open_volume
from pytc_infer.cli import app


@pytest.fixture(scope="module")
def setup(tmp_path_factory, helpers):
    """A tiny checkpoint, a 50x100x200 raw volume and one uninterrupted local prediction."""
    d = tmp_path_factory.mktemp("infer")
    ckpt = str(helpers.save_tiny_checkpoint(d / "m.ckpt"))
    raw = helpers.write_layer(str(d / "raw"), helpers.make_raw((50, 100, 200)))
    ref = str(d / "ref")
    assert run_entry_point("pytc-infer", app, ["-c", ckpt, "-i", raw, "-o", ref, "-q"]) == 0
    return ckpt, raw, open_volume(ref).read()


def finished(markers: Path) -> list[Path]:
    """The done markers (not the temporary files they are written through)."""
    return [p for p in markers.iterdir() if not p.name.startswith(".")]


SLOW_BLOCKS = """
import sys, time
from pytc_core.blocks import BlockProgress
real = BlockProgress.mark_done
def slow(self, block):
    real(self, block)
    time.sleep(0.3)
BlockProgress.mark_done = slow
from pytc_infer.cli import main
sys.argv = ["pytc-infer", *sys.argv[1:]]
main()
"""


@pytest.mark.slow  # a real process and a real signal
def test_sigusr1_mid_blockwise_infer_exits_75_and_the_rerun_resumes(tmp_path, setup):
    ckpt, raw, ref = setup
    out = tmp_path / "aff"
    argv = ["-c", ckpt, "-i", raw, "-o", str(out), "--block-size", "64", "-q"]  # 1x2x4 blocks
    proc = subprocess.Popen([sys.executable, "-c", SLOW_BLOCKS, *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    markers = out / "pytc_progress"
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
    assert 3 <= done < 8
    assert not (out / "pytc_lease").exists() and not (out / "pytc_lease.members").exists()
    assert read_run_record(str(out)).state == "running"

    rerun = subprocess.run([sys.executable, "-c", SLOW_BLOCKS, *argv[:-1]], capture_output=True,
                           text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout == f"{out}\n"
    assert f"{8 - done} blocks predicted" in rerun.stderr and f"{done} already done" in rerun.stderr
    np.testing.assert_array_equal(open_volume(str(out)).read(), ref)


@pytest.mark.slow
def test_shares_one_after_another_use_the_first_plan(tmp_path, setup, capsys):
    ckpt, raw, ref = setup
    base = ["-c", ckpt, "-i", raw, "-q"]
    cases = {  # the case (default plan), then plans that differ between shares
        "default": [[], []],
        "small_first": [["--memory-limit", "40M"], ["--memory-limit", "80M"]],
        "large_first": [["--memory-limit", "80M"], ["--memory-limit", "40M"]],
    }
    for name, limits in cases.items():
        out = str(tmp_path / name)
        for i, limit in enumerate(limits):
            capsys.readouterr()
            code = run_entry_point("pytc-infer", app, [*base, "-o", out, "--blocks", f"{i}/2",
                                                       *limit])
            captured = capsys.readouterr()
            assert code == 0, (name, i, captured.err)
            assert captured.out == f"{out}\n"
        assert read_run_record(out).complete, name
        np.testing.assert_array_equal(open_volume(out).read(), ref, err_msg=name)
    # more tasks than blocks: the empty shares are normal (the 40M plan has 4 blocks)
    out = str(tmp_path / "many")
    for i in range(6):
        assert run_entry_point("pytc-infer", app, [*base, "-o", out, "--blocks", f"{i}/6",
                                                   "--memory-limit", "40M"]) == 0
    np.testing.assert_array_equal(open_volume(out).read(), ref)


@pytest.mark.slow  # 4 processes, 3 rounds
def test_four_shares_started_at_once_equal_one_local_run(run_gated, tmp_path, setup):
    ckpt, raw, ref = setup
    rounds, n = 3, 4
    limits = ["40M", "80M", "40M", "80M"]  # shares that would plan differently on their own
    outs = [str(tmp_path / f"aff{r}") for r in range(rounds)]
    phases = [[["-c", ckpt, "-i", raw, "-o", out, "--blocks", f"{i}/{n}", "--memory-limit",
                limits[i], "-q"] for out in outs] for i in range(n)]
    gated = run_gated(tmp_path, "pytc-infer", "pytc_infer.cli", phases)
    assert gated.codes == [[0] * n] * rounds, gated.report()
    for out in outs:
        np.testing.assert_array_equal(open_volume(out).read(), ref)
        assert read_run_record(out).complete
        assert not Path(out, "pytc_lease").exists()


def test_a_share_that_finds_the_run_finished_after_its_first_check_exits_0(
        tmp_path, setup, monkeypatch, capsys):
    """The other shares finish every block between a late share's first look and its claim
    (seen on a loaded 2-core CI machine): the late share exits 0, it does not refuse."""
    from pytc_infer import infer as infer_module

    ckpt, raw, ref = setup
    out = str(tmp_path / "aff")
    base = ["-c", ckpt, "-i", raw, "-o", out, "-q"]
    assert run_entry_point("pytc-infer", app, [*base, "--blocks", "0/1"]) == 0
    real, looks = infer_module._finished_by_this_run, []

    def not_yet_at_first_look(uri: str, key: str) -> bool:
        looks.append(uri)
        return len(looks) > 1 and real(uri, key)

    monkeypatch.setattr(infer_module, "_finished_by_this_run", not_yet_at_first_look)
    capsys.readouterr()
    code = run_entry_point("pytc-infer", app, [*base, "--blocks", "1/2"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out == f"{out}\n" and len(looks) == 2
    np.testing.assert_array_equal(open_volume(out).read(), ref)
    assert read_run_record(out).complete
