"""``pytc-decode --method ws --fragments-only`` / ``--save-fragments`` and re-thresholding a
fragments output, through the real command: fragments + merge history written, every
threshold's segmentation from them equal to the one the default path writes, bad input."""

from __future__ import annotations

import os

import numpy as np
import pytest

from pytc_core.cli import run_entry_point
from pytc_core.merge_history import (
    MERGES_NAME,
    MergeHistory,
    read_merge_history,
    write_merge_history,
)
from pytc_core.output_run import read_run_record
from pytc_core.synthetic import synthetic_labels
from pytc_core.targets import affinities_from_labels
from pytc_core.volume import create_volume, open_volume
from pytc_decode.cli import app
from pytc_decode.ws import ws_fragments

THRESHOLDS = "0.2,0.5,0.8"


def run(args, capsys):
    code = run_entry_point("pytc-decode", app, [str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def affinities() -> np.ndarray:
    labels = synthetic_labels((24, 32, 32), seed=4)
    aff = affinities_from_labels(labels)[0]
    rng = np.random.default_rng(0)
    return np.clip(aff + rng.uniform(-0.4, 0.4, aff.shape), 0, 1).astype(np.float32)


def write(uri: str, array: np.ndarray) -> str:
    vol = create_volume(uri, array.shape, array.dtype, chunk_size=(8, 16, 16),
                        voxel_size=(8, 4, 4))
    vol.write(array)
    return uri


def test_fragments_only_writes_fragments_and_history(tmp_path, affinities, capsys):
    aff_uri = write(str(tmp_path / "aff"), affinities)
    frag_uri = str(tmp_path / "frag")
    code, out, err = run([aff_uri, "-o", frag_uri, "--method", "ws", "--agglomeration-threshold",
                          THRESHOLDS, "--min-size", "3", "--fragments-only"], capsys)
    assert code == 0, err
    assert out == frag_uri + "\n"
    assert sorted(os.listdir(tmp_path)) == ["aff", "frag"]  # no segmentation
    fragments, rows = ws_fragments(affinities, 0.8, voxel_size=(8, 4, 4))
    np.testing.assert_array_equal(open_volume(frag_uri).read(), fragments)
    assert (tmp_path / "frag" / MERGES_NAME).is_file()
    history = read_merge_history(frag_uri)
    assert history is not None and len(history) == rows.shape[0] > 10
    np.testing.assert_array_equal(history.absorbed, rows[:, 0].astype(np.uint64))
    np.testing.assert_array_equal(history.into, rows[:, 1].astype(np.uint64))
    np.testing.assert_array_equal(history.score, rows[:, 2])
    assert history.num_fragments == fragments.max()
    assert history.thresholds == (0.2, 0.5, 0.8)
    record = read_run_record(frag_uri)
    assert record is not None and record.complete and history.fragments_key == record.key
    assert history.config["method"] == "ws"
    assert history.config["min_size"] == 3 and history.config["small"] == "remove"
    assert history.config["ws"]["seed_radius"] == 2


@pytest.mark.parametrize("min_size", [0, 4])
def test_relabelled_fragments_equal_the_default_segmentations(tmp_path, affinities, capsys,
                                                              min_size):
    aff_uri = write(str(tmp_path / "aff"), affinities)
    seg_uri, frag_uri, re_uri = (str(tmp_path / n) for n in ("seg", "frag", "re"))
    common = ["--agglomeration-threshold", THRESHOLDS, "--min-size", min_size]
    code, out, err = run([aff_uri, "-o", seg_uri, "--method", "ws", *common], capsys)
    assert code == 0, err
    code, out, err = run([aff_uri, "-o", frag_uri, "--method", "ws", "--fragments-only",
                          *common], capsys)
    assert code == 0, err
    # no --method: the fragments' merge history says ws
    code, out, err = run([frag_uri, "-o", re_uri, *common], capsys)
    assert code == 0, err
    uris = [f"{re_uri}_t{t}" for t in THRESHOLDS.split(",")]
    assert out.split() == uris
    counts = []
    for t, uri in zip(THRESHOLDS.split(","), uris, strict=True):
        got = open_volume(uri).read()
        np.testing.assert_array_equal(got, open_volume(f"{seg_uri}_t{t}").read())
        counts.append(int(got.max()))
    assert counts[0] > counts[1] > counts[2] >= 1  # a higher threshold merges more
    # one threshold: one output at the URI itself
    code, out, err = run([frag_uri, "-o", str(tmp_path / "one"), "--agglomeration-threshold",
                          "0.5", "--min-size", min_size], capsys)
    assert code == 0, err
    np.testing.assert_array_equal(open_volume(str(tmp_path / "one")).read(),
                                  open_volume(f"{seg_uri}_t0.5").read())


def test_save_fragments_writes_both(tmp_path, affinities, capsys):
    aff_uri = write(str(tmp_path / "aff"), affinities)
    seg_uri = str(tmp_path / "seg")
    code, out, err = run([aff_uri, "-o", seg_uri, "--method", "ws", "--agglomeration-threshold",
                          "0.3,0.6", "--save-fragments"], capsys)
    assert code == 0, err
    assert out.split() == [f"{seg_uri}_t0.3", f"{seg_uri}_t0.6", f"{seg_uri}_fragments"]
    fragments, rows = ws_fragments(affinities, 0.6, voxel_size=(8, 4, 4))
    np.testing.assert_array_equal(open_volume(f"{seg_uri}_fragments").read(), fragments)
    history = read_merge_history(f"{seg_uri}_fragments")
    assert history is not None and len(history) == rows.shape[0]


def test_bad_input_one_line_exit_2_nothing_written(tmp_path, affinities, capsys):
    aff_uri = write(str(tmp_path / "aff"), affinities)
    frag_uri = str(tmp_path / "frag")
    code, out, err = run([aff_uri, "-o", frag_uri, "--method", "ws", "--save-fragments",
                          "--block-size", "128"], capsys)
    assert code == 2 and out == ""
    assert err.startswith("pytc-decode: error: --save-fragments is whole-volume only")
    assert len(err.strip().splitlines()) == 1
    code, out, err = run([aff_uri, "-o", frag_uri, "--fragments-only"], capsys)  # method cc
    assert code == 2 and "--fragments-only: method cc has no fragments" in err
    assert sorted(os.listdir(tmp_path)) == ["aff"]
    code, out, err = run([aff_uri, "-o", frag_uri, "--method", "ws", "--fragments-only"], capsys)
    assert code == 0, err
    before = sorted(os.listdir(tmp_path))

    def refused(args, text):
        code, out, err = run(args, capsys)
        assert code == 2 and out == "", err
        assert text in err and len(err.strip().splitlines()) == 1, err
        assert sorted(os.listdir(tmp_path)) == before

    refused([frag_uri, "-o", tmp_path / "re", "--agglomeration-threshold", "1.5"],
            "agglomeration threshold 1.5 is outside [0, 1]")
    refused([frag_uri, "-o", tmp_path / "re", "--min-size", "5", "--small", "merge"],
            "--small merge needs the affinities")
    good = read_merge_history(frag_uri)
    assert good is not None
    # a history naming more fragments than the volume holds
    write_merge_history(frag_uri, MergeHistory(good.absorbed, good.into, good.score,
                                               good.num_fragments + 3, good.thresholds,
                                               good.fragments_key, good.config))
    refused([frag_uri, "-o", tmp_path / "re"], "does not match its fragments")
    refused([frag_uri, "-o", tmp_path / "re", "--block-size", "16"],  # found by the first pass
            "does not match its fragments")
    # a history of another run
    write_merge_history(frag_uri, MergeHistory(good.absorbed, good.into, good.score,
                                               good.num_fragments, good.thresholds,
                                               "0123456789abcdef", good.config))
    refused([frag_uri, "-o", tmp_path / "re"], "belongs to another run")


def test_blockwise_fragments_only_every_threshold_equals_its_blockwise_decode(
        tmp_path, affinities, capsys):
    """--fragments-only --block-size: the fragments of the block grid (the blockwise decode's)
    and one merge history for every threshold; segmenting them at t gives exactly the
    blockwise decode at t, and so does a blockwise run with every threshold at once;
    Slurm-style shares write the same fragments, history and segmentations."""
    from pytc_decode.ws_blockwise import grid_ws_fragments

    aff_uri = write(str(tmp_path / "aff"), affinities)
    frag_uri = str(tmp_path / "frag")
    common = ["--method", "ws", "--block-size", "16", "--min-size", "3",
              "--set", "ws.fragment_block=8", "--set", "ws.halo=4"]
    code, out, err = run([aff_uri, "-o", frag_uri, *common, "--agglomeration-threshold",
                          THRESHOLDS, "--fragments-only"], capsys)
    assert code == 0, err
    assert out == frag_uri + "\n"
    # the fragments of the grid of 8, as the whole volume computes them
    fragments, rows = grid_ws_fragments(affinities, 0.8, 8, 4, voxel_size=(8, 4, 4))
    got = open_volume(frag_uri).read()
    np.testing.assert_array_equal(got, fragments)
    history = read_merge_history(frag_uri)
    assert history is not None and len(history) == rows.shape[0] > 10
    np.testing.assert_array_equal(history.absorbed, rows[:, 0].astype(np.uint64))
    np.testing.assert_array_equal(history.score, rows[:, 2])
    assert history.thresholds == (0.2, 0.5, 0.8) and history.config["min_size"] == 3
    record = read_run_record(frag_uri)
    assert record is not None and record.complete and history.fragments_key == record.key
    assert not (tmp_path / "frag_pytc_decode").exists() or not os.listdir(
        tmp_path / "frag_pytc_decode")
    # every threshold from the fragments == the blockwise decode at that threshold, alone
    # or all thresholds in one blockwise run (one watershed, one agglomeration)
    code, out, err = run([frag_uri, "-o", tmp_path / "re", "--agglomeration-threshold",
                          THRESHOLDS, "--min-size", "3"], capsys)
    assert code == 0, err
    code, out, err = run([aff_uri, "-o", tmp_path / "all", *common, "--agglomeration-threshold",
                          THRESHOLDS], capsys)
    assert code == 0, err
    assert out.split() == [f"{tmp_path / 'all'}_t{t}" for t in THRESHOLDS.split(",")]
    counts = []
    for t in THRESHOLDS.split(","):
        seg_uri = str(tmp_path / f"seg{t}")
        code, out, err = run([aff_uri, "-o", seg_uri, *common, "--agglomeration-threshold", t],
                             capsys)
        assert code == 0, err
        seg = open_volume(seg_uri).read()
        np.testing.assert_array_equal(open_volume(f"{tmp_path / 're'}_t{t}").read(), seg)
        np.testing.assert_array_equal(open_volume(f"{tmp_path / 'all'}_t{t}").read(), seg)
        record = read_run_record(f"{tmp_path / 'all'}_t{t}")
        assert record is not None and record.complete
        counts.append(int(seg.max()))
    assert counts[0] > counts[1] > counts[2] >= 1
    assert sorted(p.name for p in tmp_path.iterdir() if "pytc_decode" in p.name) == []
    # shares: label 0/2 and 1/2, reduce, relabel 0/2 and 1/2 == the local run
    shared = str(tmp_path / "shared")
    args = [aff_uri, "-o", shared, *common, "--agglomeration-threshold", THRESHOLDS,
            "--fragments-only"]
    for step, blocks in (("label", "0/2"), ("label", "1/2"), ("reduce", None),
                         ("relabel", "0/2"), ("relabel", "1/2")):
        code, out, err = run([*args, "--step", step, *(["--blocks", blocks] if blocks else [])],
                             capsys)
        assert code == 0, err
    np.testing.assert_array_equal(open_volume(shared).read(), fragments)
    again = read_merge_history(shared)
    assert again is not None and np.array_equal(again.into, history.into)
    assert again.fragments_key == read_run_record(shared).key
    # the multi-threshold segmentations as shares == the local run
    args = [aff_uri, "-o", tmp_path / "segshared", *common, "--agglomeration-threshold",
            THRESHOLDS]
    for step, blocks in (("label", "0/2"), ("label", "1/2"), ("reduce", None),
                         ("relabel", "1/2"), ("relabel", "0/2")):
        code, out, err = run([*args, "--step", step, *(["--blocks", blocks] if blocks else [])],
                             capsys)
        assert code == 0, err
    for t in THRESHOLDS.split(","):
        np.testing.assert_array_equal(open_volume(f"{tmp_path / 'segshared'}_t{t}").read(),
                                      open_volume(f"{tmp_path / 'all'}_t{t}").read())


def test_fragments_segmented_block_by_block_equal_the_whole_volume_and_resume(
        tmp_path, affinities, capsys, monkeypatch):
    """``pytc-decode FRAGMENTS --block-size B``: each threshold's segmentation written block by
    block (two passes, one block of voxels at a time) has the whole-volume re-thresholding's
    ids, for block sizes that divide the volume and one that does not, and on fragments whose
    ids are not in first-voxel order (the whole-volume watershed's). A run interrupted after
    three written blocks resumes without rewriting them."""
    from pytc_core.blocks import BlockProgress

    aff_uri = write(str(tmp_path / "aff"), affinities)
    frag_uri = str(tmp_path / "frag")
    code, _, err = run([aff_uri, "-o", frag_uri, "--method", "ws", "--agglomeration-threshold",
                        THRESHOLDS, "--fragments-only", "--set", "ws.fragment_block=0"], capsys)
    assert code == 0, err
    frag = open_volume(frag_uri).read()
    firsts = np.unique(frag.reshape(-1), return_index=True)[1][1:]
    assert np.any(np.diff(firsts) < 0)  # ids not numbered by first voxel
    common = ["--agglomeration-threshold", THRESHOLDS, "--min-size", "3"]
    code, _, err = run([frag_uri, "-o", tmp_path / "whole", *common], capsys)
    assert code == 0, err
    whole = {t: open_volume(f"{tmp_path / 'whole'}_t{t}").read() for t in THRESHOLDS.split(",")}
    assert whole["0.2"].max() > whole["0.8"].max() >= 1
    for block in ("8,16,16", "10"):
        out = tmp_path / f"blocks{block.replace(',', '_')}"
        code, stdout, err = run([frag_uri, "-o", out, *common, "--block-size", block], capsys)
        assert code == 0, err
        assert stdout.split() == [f"{out}_t{t}" for t in THRESHOLDS.split(",")]
        for t in THRESHOLDS.split(","):
            np.testing.assert_array_equal(open_volume(f"{out}_t{t}").read(), whole[t])
            record = read_run_record(f"{out}_t{t}")
            assert record is not None and record.complete
        assert not (tmp_path / f"{out.name}_t0.2" / "pytc_decode").exists()  # scratch gone

    real_mark = BlockProgress.mark_done
    marked = []

    def mark_then_die(self, block):
        real_mark(self, block)
        if self.directory.name == "segment":
            marked.append(block)
            if len(marked) == 3:
                raise KeyboardInterrupt  # a killed job, after three written blocks

    monkeypatch.setattr(BlockProgress, "mark_done", mark_then_die)
    out = tmp_path / "resumed"
    args = [frag_uri, "-o", out, *common, "--block-size", "8,16,16", "-v"]
    code, _, err = run(args, capsys)
    assert code == 130 and len(marked) == 3
    monkeypatch.setattr(BlockProgress, "mark_done", real_mark)
    record = read_run_record(f"{out}_t0.2")
    assert record is not None and not record.complete
    code, _, err = run(args, capsys)
    assert code == 0, err
    # the extents pass finished before the interrupt: kept, not read again
    assert "segment: 9 of 12 blocks processed, 3 done before" in err
    assert "extents: 0 of 12 blocks processed, 12 done before" in err
    for t in THRESHOLDS.split(","):
        np.testing.assert_array_equal(open_volume(f"{out}_t{t}").read(), whole[t])


def test_fragments_segmented_by_slurm_style_shares_equal_the_local_run(tmp_path, affinities,
                                                                       capsys):
    """``pytc-decode FRAGMENTS --block-size B --step label|reduce|relabel --blocks i/n``: the
    extents of each share's blocks, one reduce, the blocks written by each share; the outputs
    are complete only after the last relabel share, and equal the whole-volume
    re-thresholding. A reduce before every label share has run is one line, exit 2."""
    aff_uri = write(str(tmp_path / "aff"), affinities)
    frag_uri = str(tmp_path / "frag")
    code, _, err = run([aff_uri, "-o", frag_uri, "--method", "ws", "--agglomeration-threshold",
                        THRESHOLDS, "--fragments-only"], capsys)
    assert code == 0, err
    common = ["--agglomeration-threshold", THRESHOLDS, "--min-size", "3"]
    code, _, err = run([frag_uri, "-o", tmp_path / "whole", *common], capsys)
    assert code == 0, err
    out = tmp_path / "shared"
    args = [frag_uri, "-o", out, *common, "--block-size", "8,16,16"]
    code, _, err = run([*args, "--step", "label", "--blocks", "0/2"], capsys)
    assert code == 0, err
    code, _, err = run([*args, "--step", "reduce"], capsys)
    assert code == 2 and "6 of 12 blocks have no extents yet" in err and "Traceback" not in err
    for step, blocks in (("label", "1/2"), ("reduce", None), ("relabel", "1/2")):
        code, stdout, err = run([*args, "--step", step, *(["--blocks", blocks] if blocks
                                                          else [])], capsys)
        assert code == 0, err
        assert stdout.split() == [f"{out}_t{t}" for t in THRESHOLDS.split(",")]
    record = read_run_record(f"{out}_t0.2")
    assert record is not None and not record.complete  # half of the blocks are written
    code, _, err = run([*args, "--step", "relabel", "--blocks", "0/2"], capsys)
    assert code == 0, err
    for t in THRESHOLDS.split(","):
        record = read_run_record(f"{out}_t{t}")
        assert record is not None and record.complete
        np.testing.assert_array_equal(open_volume(f"{out}_t{t}").read(),
                                      open_volume(f"{tmp_path / 'whole'}_t{t}").read())


@pytest.mark.slow
def test_a_killed_blockwise_rethreshold_resumes(tmp_path, killed_run):
    """A real ``pytc-decode FRAGMENTS --block-size`` process killed (SIGKILL) while writing
    blocks resumes with the same command: the blocks it finished are not written again and
    the segmentation equals the whole-volume one."""
    import subprocess
    import sys
    from pathlib import Path

    labels = synthetic_labels((48, 96, 96), seed=3)
    aff = affinities_from_labels(labels)[0]
    aff = np.clip(aff * 0.8 + 0.1 + np.random.default_rng(2).normal(0, 0.1, aff.shape), 0, 1)
    aff_uri = write(str(tmp_path / "aff"), aff.astype(np.float32))
    frag_uri = str(tmp_path / "frag")
    script = str(Path(sys.executable).with_name("pytc-decode"))
    made = subprocess.run([script, aff_uri, "-o", frag_uri, "--method", "ws",
                           "--agglomeration-threshold", "0.5", "--fragments-only"],
                          capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    whole = subprocess.run([script, frag_uri, "-o", str(tmp_path / "whole"),
                            "--agglomeration-threshold", "0.5"], capture_output=True, text=True,
                           timeout=300)
    assert whole.returncode == 0, whole.stderr
    seg_uri = str(tmp_path / "seg")
    argv = [script, frag_uri, "-o", seg_uri, "--agglomeration-threshold", "0.5",
            "--block-size", "8,16,16", "-v"]  # 216 blocks
    done = killed_run.kill(argv, tmp_path / "seg" / "pytc_decode" / "segment", 216)
    killed_run.resume(argv, "segment", 216, done)
    np.testing.assert_array_equal(open_volume(seg_uri).read(),
                                  open_volume(str(tmp_path / "whole")).read())


def test_whole_volume_fragments_on_the_grid_equal_the_blockwise_ones(tmp_path, affinities,
                                                                     capsys):
    """With ``ws.fragment_block`` the whole-volume ``--fragments-only`` writes the grid's
    fragments and history (it used to ignore the grid): those of a blockwise run on it."""
    aff_uri = write(str(tmp_path / "aff"), affinities)
    args = ["--method", "ws", "--agglomeration-threshold", THRESHOLDS, "--fragments-only",
            "--set", "ws.fragment_block=8"]
    code, _, err = run([aff_uri, "-o", tmp_path / "whole", *args], capsys)
    assert code == 0, err
    code, _, err = run([aff_uri, "-o", tmp_path / "blocks", *args, "--block-size", "16"],
                       capsys)
    assert code == 0, err
    whole, blocks = (open_volume(str(tmp_path / k)).read() for k in ("whole", "blocks"))
    np.testing.assert_array_equal(whole, blocks)
    a, b = (read_merge_history(str(tmp_path / k)) for k in ("whole", "blocks"))
    assert a is not None and b is not None and len(a) == len(b) > 10
    # the same merges (equal-score ones may be listed in another order)
    rows = [np.stack([h.score, h.absorbed.astype(float), h.into.astype(float)], 1) for h in (a, b)]
    np.testing.assert_array_equal(*(r[np.lexsort((r[:, 1], r[:, 0]))] for r in rows))
