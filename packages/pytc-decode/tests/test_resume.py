"""An interrupted blockwise decode resumes without redoing finished blocks, and re-running a
half-written relabel block cannot corrupt the output."""

from __future__ import annotations

import numpy as np
import pytest

import pytc_decode.decode as decode_module
from pytc_core.blocks import BlockProgress
from pytc_core.cli import run_entry_point
from pytc_core.synthetic import synthetic_labels
from pytc_core.targets import affinities_from_labels
from pytc_core.volume import create_volume, open_volume
from pytc_decode import affinity_cc
from pytc_decode.cli import app


@pytest.fixture(scope="module")
def affinities() -> np.ndarray:
    aff = affinities_from_labels(synthetic_labels((24, 32, 32), seed=9))[0]
    noise = np.random.default_rng(1).uniform(-0.4, 0.4, aff.shape)
    return np.clip(aff + noise, 0, 1).astype(np.float32)


def test_interrupted_run_resumes_where_it_stopped(tmp_path, affinities, capsys, monkeypatch):
    aff_uri = str(tmp_path / "aff")
    create_volume(aff_uri, affinities.shape, np.float32, chunk_size=(8, 16, 16)).write(affinities)
    seg_uri = str(tmp_path / "seg")
    argv = [aff_uri, "-o", seg_uri, "--block-size", "8,16,16", "--min-size", "3", "-q"]  # 12 blocks

    calls = []
    real_label = decode_module.label_block

    def label_then_die(*args, **kwargs):
        if len(calls) == 5:
            raise KeyboardInterrupt  # Ctrl-C / a killed job, after 5 finished blocks
        calls.append(args[2])
        return real_label(*args, **kwargs)

    monkeypatch.setattr(decode_module, "label_block", label_then_die)
    assert run_entry_point("pytc-decode", app, argv) == 130
    assert len(calls) == 5

    # relabel: die after writing the second block but before recording it as done
    real_mark = BlockProgress.mark_done
    relabelled = []

    def mark_then_die(self, block):
        if self.directory.name == "relabel" and len(relabelled) == 1:
            relabelled.append(block)
            raise KeyboardInterrupt
        if self.directory.name == "relabel":
            relabelled.append(block)
        return real_mark(self, block)

    monkeypatch.setattr(BlockProgress, "mark_done", mark_then_die)
    calls.clear()
    monkeypatch.setattr(decode_module, "label_block",
                        lambda *a, **k: (calls.append(a[2]), real_label(*a, **k))[1])
    assert run_entry_point("pytc-decode", app, argv) == 130
    assert len(calls) == 12 - 5  # only the blocks the first run had not finished
    assert len(relabelled) == 2

    monkeypatch.setattr(BlockProgress, "mark_done", real_mark)
    calls.clear()
    assert run_entry_point("pytc-decode", app, argv) == 0
    assert calls == []  # nothing labelled again
    capsys.readouterr()
    np.testing.assert_array_equal(open_volume(seg_uri).read(), affinity_cc(affinities, 0.5, 3))
    assert not (tmp_path / "seg" / "pytc_decode").exists()  # scratch removed at the end

    # a finished output is not touched again without --overwrite
    assert run_entry_point("pytc-decode", app, argv) == 2
    assert "already exists" in capsys.readouterr().err
