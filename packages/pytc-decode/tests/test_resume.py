"""An interrupted blockwise decode resumes without redoing finished blocks, and re-running a
half-written relabel block cannot corrupt the output."""

from __future__ import annotations

import numpy as np
import pytest

import pytc_decode.methods.cc as decode_module
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


def test_a_run_with_other_options_never_reuses_blocks(tmp_path, affinities, capsys):
    """The scratch folder belongs to one run: whole config + inputs' identity (run.json)."""
    aff_uri = str(tmp_path / "aff")
    create_volume(aff_uri, affinities.shape, np.float32, chunk_size=(8, 16, 16)).write(affinities)
    fg = np.zeros((4, *affinities.shape[1:]), np.float32)
    fg[:3] = affinities
    fg[3, :, :, :20] = 0.9
    fg[3, :, :, 20:] = 0.3
    aff4_uri = str(tmp_path / "aff4")
    create_volume(aff4_uri, fg.shape, np.float32, chunk_size=(8, 16, 16)).write(fg)
    seg_uri = str(tmp_path / "seg")
    base = [aff4_uri, "-o", seg_uri, "--block-size", "8,16,16", "-q",
            "--foreground-channel", "3"]
    # label step with one option, full run with another
    assert run_entry_point("pytc-decode", app, [*base, "--foreground-threshold", "0.5",
                                                "--step", "label"]) == 0
    assert (tmp_path / "seg" / "pytc_decode" / "run.json").exists()
    capsys.readouterr()
    assert run_entry_point("pytc-decode", app, [*base, "--foreground-threshold", "0.2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "differs in: config.foreground_threshold" in err
    assert "pass --overwrite to start afresh, or rerun with the same options" in err
    # --min-size only changes the reduce step: still refused there and at relabel
    for step in ("reduce", "relabel"):
        argv = [*base, "--foreground-threshold", "0.5", "--min-size", "9", "--step", step]
        assert run_entry_point("pytc-decode", app, argv) == 2
        assert "config.min_size" in capsys.readouterr().err
    # --overwrite starts afresh and gives the right labels
    assert run_entry_point("pytc-decode", app, [*base, "--foreground-threshold", "0.2",
                                                "--overwrite"]) == 0
    capsys.readouterr()
    np.testing.assert_array_equal(open_volume(seg_uri).read(),
                                  affinity_cc(affinities, 0.5, mask=fg[3] > 0.2))

    # a mask rewritten at the same URI is another input (its contents, not only its URI)
    mask_uri = str(tmp_path / "mask.npy")
    mask = np.ones(affinities.shape[1:], np.uint8)
    create_volume(mask_uri, mask.shape, np.uint8).write(mask)
    seg2 = str(tmp_path / "seg2")
    base = [aff_uri, "-o", seg2, "--block-size", "8,16,16", "-q", "--mask", mask_uri]
    assert run_entry_point("pytc-decode", app, [*base, "--step", "label", "--blocks", "0/2"]) == 0
    mask[:, :, :16] = 0
    create_volume(mask_uri, mask.shape, np.uint8, overwrite=True).write(mask)
    capsys.readouterr()
    assert run_entry_point("pytc-decode", app, [*base, "--step", "label", "--blocks", "1/2"]) == 2
    assert "mask.samples" in capsys.readouterr().err
    assert run_entry_point("pytc-decode", app, [*base, "--overwrite"]) == 0
    np.testing.assert_array_equal(open_volume(seg2).read(), affinity_cc(affinities, mask=mask))

    # so is an affinity volume rewritten at the same URI
    seg3 = str(tmp_path / "seg3")
    base = [aff_uri, "-o", seg3, "--block-size", "8,16,16", "-q"]
    assert run_entry_point("pytc-decode", app, [*base, "--step", "label"]) == 0
    create_volume(aff_uri, affinities.shape, np.float32, chunk_size=(8, 16, 16),
                  overwrite=True).write(affinities[:, ::-1].copy())
    capsys.readouterr()
    assert run_entry_point("pytc-decode", app, [*base, "--step", "reduce"]) == 2
    assert "affinities.samples" in capsys.readouterr().err


def test_a_mip_added_mid_run_is_the_same_input_a_rewritten_chunk_is_not(tmp_path, affinities,
                                                                       capsys):
    """The input's identity comes from its metadata and sampled chunks, not a walk: a new
    scale (info entry and chunk files) added between steps is accepted; a rewritten sampled
    chunk is refused with one line, exit 2."""
    import json

    aff_uri = str(tmp_path / "aff")
    vol = create_volume(aff_uri, affinities.shape, np.float32, chunk_size=(8, 16, 16))
    vol.write(affinities)
    seg = str(tmp_path / "seg")
    base = [aff_uri, "-o", seg, "--block-size", "8,16,16", "-q"]
    assert run_entry_point("pytc-decode", app, [*base, "--step", "label", "--blocks", "0/2"]) == 0
    info_path = tmp_path / "aff" / "info"
    info = json.loads(info_path.read_text())
    mip = dict(info["scales"][0], key="mip1",
               size=[max(1, s // 2) for s in info["scales"][0]["size"]],
               resolution=[r * 2 for r in info["scales"][0]["resolution"]])
    info["scales"].append(mip)
    info_path.write_text(json.dumps(info))
    (tmp_path / "aff" / "mip1").mkdir()
    (tmp_path / "aff" / "mip1" / "0-16_0-16_0-8").write_bytes(b"\0" * 64)
    for args in (["--step", "label", "--blocks", "1/2"], ["--step", "reduce"]):
        assert run_entry_point("pytc-decode", app, [*base, *args]) == 0, capsys.readouterr().err
    # the first chunk is always sampled: rewrite it
    changed = affinities[:, :8, :16, :16].copy()
    changed[0] = 1.0 - changed[0]
    open_volume(aff_uri).write(changed, offset=(0, 0, 0))
    capsys.readouterr()
    assert run_entry_point("pytc-decode", app, [*base, "--step", "relabel"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "affinities.samples.0_0_0" in err
    assert (tmp_path / "seg" / "pytc_decode" / "run.json").exists()  # refused, nothing removed


def test_steps_into_the_hdf5_file_of_their_input(tmp_path, affinities, capsys):
    """Writing the output into the input's own HDF5 file (``--allow-same-file``) changes the
    file, not the input: later steps of the same run still match its key. Shares (``--blocks``)
    never write a single-file output."""
    aff_uri = f"{tmp_path / 'run.h5'}:aff"
    create_volume(aff_uri, affinities.shape, np.float32, chunk_size=(8, 16, 16)).write(affinities)
    base = [aff_uri, "-o", f"{tmp_path / 'run.h5'}:seg", "--block-size", "8,16,16", "-q",
            "--allow-same-file"]
    assert run_entry_point("pytc-decode", app, [*base, "--step", "label", "--blocks", "0/2"]) == 2
    assert "--blocks shares cannot write the single HDF5 file" in capsys.readouterr().err
    for args in (["--step", "label"], ["--step", "reduce"], ["--step", "relabel"]):
        assert run_entry_point("pytc-decode", app, [*base, *args]) == 0, capsys.readouterr().err
    np.testing.assert_array_equal(open_volume(f"{tmp_path / 'run.h5'}:seg").read(),
                                  affinity_cc(affinities))


@pytest.mark.slow
def test_a_killed_process_resumes_and_refuses_other_options(tmp_path, killed_run):
    """A real pytc-decode process killed (SIGKILL) mid-label resumes with the same options,
    and refuses to reuse its blocks with other options."""
    import subprocess
    import sys
    from pathlib import Path

    labels = synthetic_labels((48, 96, 96), seed=3)
    aff = affinities_from_labels(labels)[0]
    aff = np.clip(aff * 0.8 + 0.1 + np.random.default_rng(2).normal(0, 0.1, aff.shape), 0, 1)
    aff = aff.astype(np.float32)
    aff_uri = str(tmp_path / "aff")
    create_volume(aff_uri, aff.shape, np.float32, chunk_size=(8, 16, 16)).write(aff)
    seg_uri = str(tmp_path / "seg")
    script = Path(sys.executable).with_name("pytc-decode")
    argv = [str(script), aff_uri, "-o", seg_uri, "--block-size", "8,16,16", "--min-size", "4",
            "-v"]  # 216 blocks
    done = killed_run.kill(argv, tmp_path / "seg" / "pytc_decode" / "label", 216)

    other = subprocess.run([*argv[:-1], "--threshold", "0.6"], capture_output=True, text=True,
                           timeout=300)
    assert other.returncode == 2 and "differs in: config.cc.threshold" in other.stderr
    killed_run.resume(argv, "label", 216, done)
    np.testing.assert_array_equal(open_volume(seg_uri).read(), affinity_cc(aff, 0.5, 4))
