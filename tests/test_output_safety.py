"""A whole-volume decode killed during its final write (a real process, SIGKILL) leaves an
output that knows it is incomplete: pytc-eval refuses it, naming the command that resumes
it; another command needs --overwrite; the same command finishes it."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from pytc_core.cli import run_entry_point
from pytc_core.output_run import read_run_record
from pytc_core.synthetic import synthetic_labels
from pytc_core.targets import affinities_from_labels
from pytc_core.volume import create_volume, open_volume
from pytc_decode import affinity_cc
from pytc_decode.cli import app as decode_app
from pytc_eval.cli import app as eval_app

# pytc-decode that stops (until killed) after writing argv[2] chunk files of its output
STOP_IN_WRITE = r"""
import sys, time, pathlib
reached, after = pathlib.Path(sys.argv[1]), int(sys.argv[2])
sys.argv = ["pytc-decode", *sys.argv[3:]]
import pytc_core.volume.precomputed as pre
real, count = pre.write_atomic, [0]
def hooked(path, data):
    real(path, data)
    if "-" in path.name and "_" in path.name:
        count[0] += 1
        if count[0] == after:
            reached.write_text("here")
            time.sleep(120)
pre.write_atomic = hooked
from pytc_decode.cli import main
main()
"""


@pytest.mark.slow  # a real process killed, then decode and eval
def test_killed_final_write_is_refused_downstream_and_resumed_by_the_same_command(tmp_path, capsys):
    labels = synthetic_labels((8, 160, 160), seed=3).astype(np.uint32)
    aff = np.clip(affinities_from_labels(labels)[0], 0, 1).astype(np.float32)
    aff_uri, gt_uri, seg = str(tmp_path / "aff"), str(tmp_path / "gt.npy"), tmp_path / "seg"
    create_volume(aff_uri, aff.shape, aff.dtype, chunk_size=(8, 64, 64)).write(aff)
    create_volume(gt_uri, labels.shape, labels.dtype).write(labels)
    argv = [aff_uri, "-o", str(seg), "--min-size", "2"]
    reached = tmp_path / "reached"
    with subprocess.Popen([sys.executable, "-c", STOP_IN_WRITE, str(reached), "5", *argv],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        deadline = time.monotonic() + 120
        while not reached.exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.05)
        proc.kill()  # a whole-volume decode killed in its final write: 5 of 9 chunks written
    assert len(os.listdir(seg / "1.0_1.0_1.0")) == 5
    assert read_run_record(str(seg)).state == "running"

    command = f"pytc-decode {aff_uri} -o {seg} --min-size 2"
    assert run_entry_point("pytc-eval", eval_app, [str(seg), "--gt", gt_uri]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert f"pytc-eval: error: {seg} is not complete: the run `{command}` (started " in err
    assert f"did not finish (rerun `{command}` to resume it)" in err

    assert run_entry_point("pytc-decode", decode_app, [aff_uri, "-o", str(seg), "--min-size", "3"]) == 2
    err = capsys.readouterr().err
    assert f"holds the unfinished run `{command}`" in err and "--overwrite" in err

    assert run_entry_point("pytc-decode", decode_app, argv) == 0  # the same command finishes it
    capsys.readouterr()
    np.testing.assert_array_equal(open_volume(str(seg)).read(), affinity_cc(aff, 0.5, 2))
    assert read_run_record(str(seg)).complete
    assert run_entry_point("pytc-eval", eval_app, [str(seg), "--gt", gt_uri, "--json"]) == 0
    assert '"voi_merge": 0.0' in capsys.readouterr().out
