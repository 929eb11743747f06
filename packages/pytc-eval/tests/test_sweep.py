"""A threshold sweep scored from fragments equals scoring each written segmentation; Slurm
shares (--step sample/reduce) equal the local run; bad input is one line, exit 2."""

import json
import math
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytc_core import create_volume
from pytc_core.cli import run_entry_point
from pytc_core.merge_history import MergeHistory, write_merge_history
from pytc_core.targets import affinities_from_labels
from pytc_decode.cc import relabel_consecutive
from pytc_decode.ws import (
    agglomerate,
    fragment_seeds,
    region_graph,
    segmentations_at,
    watershed_fragments,
)
from pytc_eval import rank_reports
from pytc_eval.cli import app

THRESHOLDS = (0.1, 0.3, 0.5, 0.7, 0.9)
#: the values that must agree to 1e-12 (ids in merge/split stats are the segments' own ids)
SCALARS = ("voi_split", "voi_merge", "nvi_split", "nvi_merge", "nid", "rand_split",
           "rand_merge", "adapted_rand_error", "n_voxels", "n_segments", "n_gt_segments",
           "erl", "gt_erl", "nerl", "adapted_erl", "adapted_nerl", "n_skeletons",
           "n_skeleton_nodes", "n_edges", "n_edges_omitted", "n_edges_split", "n_edges_merged",
           "n_edges_correct", "n_merging_segments", "total_length_nm")


def run(capsys, *argv):
    code = run_entry_point("pytc-eval", app, [str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def write(uri, array, voxel_size=(1, 1, 1)):
    vol = create_volume(str(uri), array.shape, array.dtype, voxel_size=voxel_size,
                        layer_type="segmentation")
    vol.write(array)
    return str(uri)


def decode_fragments(gt, rng, noise=0.35):
    """Noisy affinities of ``gt`` → (fragments, merge history rows), as pytc-decode does."""
    aff = affinities_from_labels(gt)[0]
    aff = np.clip(aff + rng.normal(0, noise, aff.shape).astype(np.float32), 0, 1)
    seeds = fragment_seeds(aff, 0.5, 1)
    fragments = watershed_fragments(aff, seeds)
    rows = agglomerate(region_graph(fragments, aff), 1.0)
    return fragments, rows


def written_segmentations(fragments, rows, thresholds, min_size=0):
    """What pytc-decode writes for each threshold (small segments removed)."""
    segs = segmentations_at(fragments, rows, thresholds)
    if min_size > 1:
        for seg in segs:
            relabel_consecutive(seg, np.bincount(seg.reshape(-1)) >= min_size)
    return segs


def skeletons_of(gt, path, rng, n=40):
    """A random path of nodes inside each gt segment (voxel positions), as JSON."""
    nodes, edges = [], []
    for sid in np.unique(gt[gt != 0])[:6]:
        vox = np.argwhere(gt == sid)
        pick = vox[np.sort(rng.choice(len(vox), size=min(n, len(vox)), replace=False))]
        for k, (z, y, x) in enumerate(pick):
            nodes.append({"id": int(sid) * 1000 + k, "skeleton_id": int(sid), "z": int(z),
                          "y": int(y), "x": int(x)})
            if k:
                edges.append([int(sid) * 1000 + k - 1, int(sid) * 1000 + k])
    path.write_text(json.dumps({"nodes": nodes, "edges": edges}))
    return str(path)


def sweep_and_each(capsys, tmp_path, gt, fragments, rows, thresholds, skel=None, min_size=0,
                   block=16, extra=()):
    """(sweep reports, per-segmentation reports) through the real command."""
    frag_uri = write(tmp_path / "frag.zarr", fragments)
    write_merge_history(frag_uri, MergeHistory.from_rows(
        rows, int(fragments.max()), thresholds=thresholds,
        config={"min_size": min_size, "small": "remove"}))
    gt_uri = write(tmp_path / "gt.zarr", gt)
    skel_args = ("--skeletons", skel) if skel else ()
    code, out, err = run(capsys, frag_uri, "--gt", gt_uri, "--block-size", block, "--json",
                         *skel_args, *extra)
    assert code == 0, err
    sweep = [json.loads(line) for line in out.splitlines()]
    segs = written_segmentations(fragments, rows, thresholds, min_size)
    uris = [write(tmp_path / f"seg{k}.zarr", s) for k, s in enumerate(segs)]
    code, out, err = run(capsys, *uris, "--gt", gt_uri, "--block-size", block, "--json",
                         *skel_args)
    assert code == 0, err
    return sweep, [json.loads(line) for line in out.splitlines()]


def assert_equal_reports(sweep, each, thresholds):
    assert [r["threshold"] for r in sweep] == list(thresholds)
    assert len(sweep) == len(each)
    for a, b in zip(sweep, each, strict=True):
        for key in SCALARS:
            if key not in b:
                continue
            x, y = a[key], b[key]
            if x is None or y is None:
                assert x is None and y is None, key
            else:
                assert math.isclose(x, y, rel_tol=0, abs_tol=1e-12), (key, x, y)
        if "merge_stats" in b:  # ids differ; the skeletons merged and the splits agree
            assert sorted(map(sorted, a["merge_stats"].values())) == \
                sorted(map(sorted, b["merge_stats"].values()))
            assert {k: len(v) for k, v in a["split_stats"].items()} == \
                {k: len(v) for k, v in b["split_stats"].items()}
        assert "threshold" not in b


def test_sweep_equals_scoring_each_written_segmentation_on_flyem(capsys, tmp_path):
    with h5py.File(Path(__file__).parents[3] / "examples/data/flyem_medulla_250.h5") as f:
        gt = f["labels"][100:124, 40:88, 40:88].astype(np.uint64)
    rng = np.random.default_rng(0)
    fragments, rows = decode_fragments(gt, rng)
    assert int(fragments.max()) > 20 and len(rows) > 10
    # the pass counts the fragments as the lowest threshold's segments (fewer than them)
    history = MergeHistory.from_rows(rows, int(fragments.max()))
    assert 0 < history.merges_below(THRESHOLDS[0]) < history.merges_below(THRESHOLDS[-1])
    skel = skeletons_of(gt, tmp_path / "skel.json", rng)
    sweep, each = sweep_and_each(capsys, tmp_path, gt, fragments, rows, THRESHOLDS, skel,
                                 min_size=30)
    assert_equal_reports(sweep, each, THRESHOLDS)
    assert len({r["n_segments"] for r in sweep}) > 2  # the thresholds differ
    # the ranking picks the threshold whose written segmentation ranks first
    best = rank_reports(sweep)[0]
    best_each = rank_reports(each)[0]
    assert best["threshold"] == THRESHOLDS[each.index(best_each)]


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31), n_labels=st.integers(1, 6), min_size=st.sampled_from([0, 20]),
       thresholds=st.lists(st.floats(0, 1), min_size=1, max_size=4))
def test_sweep_equals_each_on_generated_cases(capsys, tmp_path_factory, seed, n_labels,
                                              min_size, thresholds):
    rng = np.random.default_rng(seed)
    shape = (8, 12, 12)
    # a ground truth of random boxes, background left where none lies
    gt = np.zeros(shape, np.uint32)
    for label in range(1, n_labels + 1):
        lo = rng.integers(0, np.array(shape) - 2)
        hi = lo + rng.integers(2, np.array(shape) - lo + 1)
        gt[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = label
    fragments, rows = decode_fragments(gt, rng, noise=0.45)
    if fragments.max() == 0:
        return
    tmp = tmp_path_factory.mktemp("case")
    skel = skeletons_of(gt, tmp / "skel.json", rng, n=8) if gt.any() else None
    ts = tuple(sorted(set(thresholds)))
    sweep, each = sweep_and_each(capsys, tmp, gt, fragments, rows, ts, skel,
                                 min_size=min_size, block=5)
    assert_equal_reports(sweep, each, ts)


def gt_and_fragments(tmp_path, rng=None, min_size=0, small="remove", num_fragments=None):
    rng = rng or np.random.default_rng(3)
    gt = np.zeros((8, 16, 16), np.uint32)
    gt[:, :8] = 1
    gt[:, 8:] = 2
    fragments, rows = decode_fragments(gt, rng)
    frag_uri = write(tmp_path / "frag.zarr", fragments)
    if num_fragments is not None:  # a table of fewer fragments than the volume holds
        rows = rows[:0]
    write_merge_history(frag_uri, MergeHistory.from_rows(
        rows, num_fragments or int(fragments.max()), thresholds=(0.2, 0.6),
        config={"min_size": min_size, "small": small}))
    return frag_uri, write(tmp_path / "gt.zarr", gt), fragments, rows


def test_thresholds_flag_scores_the_given_thresholds(capsys, tmp_path):
    frag, gt, fragments, rows = gt_and_fragments(tmp_path)
    code, out, err = run(capsys, frag, "--gt", gt, "--json")
    assert code == 0, err
    assert [json.loads(x)["threshold"] for x in out.splitlines()] == [0.2, 0.6]
    code, out, err = run(capsys, frag, "--gt", gt, "--thresholds", "0.05,0.95")
    assert code == 0, err
    reports = [json.loads(x) for x in out.splitlines()]
    assert [r["threshold"] for r in reports] == [0.05, 0.95]
    assert "@ 0.05" in err and "@ 0.95" in err  # the ranked table names the thresholds
    # 0.95 merges more than 0.05
    assert reports[1]["n_segments"] < reports[0]["n_segments"]


@pytest.mark.parametrize("case, expect", [
    ("threshold", "threshold 1.5 is outside [0, 1]"),
    ("ids", "does not match its fragments"),
    ("voxel", "voxel size"),
    ("merge", "small = 'merge'"),
    ("nodes", "outside the volume"),
])
def test_bad_input_is_one_line_exit_2_nothing_written(capsys, tmp_path, case, expect):
    frag, gt, fragments, rows = gt_and_fragments(
        tmp_path, min_size=5 if case == "merge" else 0, small="merge" if case == "merge"
        else "remove", num_fragments=int(fragments_max(tmp_path)) - 1 if case == "ids"
        else None)
    args = [frag, "--gt", gt, "--save-skeletons", tmp_path / "saved.json"]
    if case == "threshold":
        args += ["--thresholds", "0.2,1.5"]
    if case == "voxel":
        arr = np.ones((8, 16, 16), np.uint32)
        args[2] = write(tmp_path / "gt4.zarr", arr, voxel_size=(4, 4, 4))
    skel = tmp_path / "skel.json"
    z = 20 if case == "nodes" else 2
    skel.write_text(json.dumps({"nodes": [{"id": 1, "skeleton_id": 1, "z": z, "y": 2, "x": 2},
                                          {"id": 2, "skeleton_id": 1, "z": 2, "y": 3, "x": 2}],
                                "edges": [[1, 2]]}))
    args += ["--skeletons", skel]
    code, out, err = run(capsys, *args)
    assert code == 2, err
    assert out == ""
    errors = [line for line in err.splitlines() if line.startswith("pytc-eval: error")]
    assert len(errors) == 1 and expect in errors[0] and "Traceback" not in err, err
    assert not (tmp_path / "saved.json").exists()


def fragments_max(tmp_path):
    """The largest fragment id gt_and_fragments makes (same seed, separate folder)."""
    sub = tmp_path / "probe"
    sub.mkdir()
    return gt_and_fragments(sub)[2].max()


def test_shares_equal_the_local_run(capsys, tmp_path):
    frag, gt, fragments, rows = gt_and_fragments(tmp_path)
    seg = write(tmp_path / "seg.zarr", written_segmentations(fragments, rows, [0.5])[0])
    skel = skeletons_of(np.asarray(create_volume_read(gt)), tmp_path / "skel.json",
                        np.random.default_rng(1), n=10)
    common = ["--gt", gt, "--skeletons", skel, "--block-size", "5", "--json"]
    code, local, err = run(capsys, frag, seg, *common)
    assert code == 0, err
    scratch = tmp_path / "scratch"
    for i in range(3):
        code, out, err = run(capsys, frag, seg, *common, "--step", "sample", "--blocks",
                             f"{i}/3", "--scratch", scratch)
        assert code == 0, err
        assert out.strip() == str(scratch)
    code, out, err = run(capsys, frag, seg, *common, "--step", "reduce", "--scratch", scratch)
    assert code == 0, err
    assert out == local
    assert len(out.splitlines()) == 3  # two thresholds of the fragments, one segmentation
    # the shares counted the fragments as the segments of their lowest threshold (0.2): a
    # reduce asked for another sweep finds no samples of it, rather than wrong ones
    assert MergeHistory.from_rows(rows, int(fragments.max())).merges_below(0.2) > 0
    code, out, err = run(capsys, frag, "--gt", gt, "--skeletons", skel, "--block-size", "5",
                         "--thresholds", "0.1,0.6", "--step", "reduce", "--scratch", scratch)
    assert code == 2 and out == ""
    assert "no samples of" in err and "--step sample" in err


def test_reduce_names_missing_shares(capsys, tmp_path):
    frag, gt, _, _ = gt_and_fragments(tmp_path)
    scratch = tmp_path / "scratch"
    common = ["--gt", gt, "--block-size", "5", "--scratch", scratch]
    assert run(capsys, frag, *common, "--step", "sample", "--blocks", "1/3")[0] == 0
    code, out, err = run(capsys, frag, *common, "--step", "reduce")
    assert code == 2 and out == ""
    assert "shares 0, 2 of 3" in err and "--blocks 0/3" in err


def create_volume_read(uri):
    from pytc_core import open_volume

    return open_volume(uri).read()


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**31), origin=st.tuples(*[st.integers(-50, 50)] * 3),
       size=st.tuples(*[st.integers(1, 9)] * 3), block=st.tuples(*[st.integers(1, 7)] * 3))
def test_nodes_grouped_by_block_are_the_nodes_each_block_holds(seed, origin, size, block):
    """NodeBlocks.of(block) is exactly the nodes inside the block (the former scan), for
    grids whose origin lies outside the box and blocks clipped at both faces."""
    from pytc_core import BBox
    from pytc_core.blocks import plan_blocks
    from pytc_eval.sample import NodeBlocks

    rng = np.random.default_rng(seed)
    start = np.array(origin) + rng.integers(-5, 6, 3)
    box = BBox(tuple(int(v) for v in start), tuple(int(v) for v in start + np.array(size) * 3))
    nodes = rng.integers(box.start, box.stop, (40, 3))
    groups = NodeBlocks(nodes, origin, block)
    seen = []
    for b in plan_blocks(box, block, grid_origin=origin):
        inside = np.flatnonzero(np.all((nodes >= b.start) & (nodes < b.stop), axis=1))
        assert sorted(groups.of(b).tolist()) == inside.tolist()
        seen.extend(inside.tolist())
    assert sorted(seen) == list(range(40))


@pytest.mark.parametrize("step", ["all", "shares"])
def test_blocks_sampled_by_worker_processes_equal_one_process(capsys, tmp_path, monkeypatch,
                                                              step):
    """--workers 2 samples the blocks of every input in two processes (here forced on small
    volumes): the reports, a sweep's included, are identical and in the order given; so are
    the Slurm shares' (--step sample, then reduce)."""
    import pytc_eval.eval

    monkeypatch.setattr(pytc_eval.eval, "PROCESS_MIN_VOXELS", 1)
    with h5py.File(Path(__file__).parents[3] / "examples/data/flyem_medulla_250.h5") as f:
        gt = f["labels"][100:124, 40:88, 40:88].astype(np.uint64)
    rng = np.random.default_rng(5)
    fragments, rows = decode_fragments(gt, rng)
    frag_uri = write(tmp_path / "frag.zarr", fragments)
    write_merge_history(frag_uri, MergeHistory.from_rows(
        rows, int(fragments.max()), thresholds=(0.3, 0.7), config={"min_size": 0}))
    segs = [write(tmp_path / f"seg{k}.zarr", s)
            for k, s in enumerate(written_segmentations(fragments, rows, (0.2, 0.5, 0.8)))]
    gt_uri = write(tmp_path / "gt.zarr", gt)
    skel = skeletons_of(gt, tmp_path / "skel.json", rng)
    outs = {}
    for workers in (1, 2):
        args = [segs[0], frag_uri, *segs[1:], "--gt", gt_uri, "--skeletons", skel,
                "--block-size", 16, "--json", "--workers", workers]
        if step == "shares":
            scratch = tmp_path / f"scratch{workers}"
            for i in range(2):
                code, out, err = run(capsys, *args, "--step", "sample", "--blocks", f"{i}/2",
                                     "--scratch", scratch)
                assert code == 0, err
            args += ["--step", "reduce", "--scratch", scratch]
        code, out, err = run(capsys, *args)
        assert code == 0, err
        if step == "all":
            assert ("sampling 4 segmentations with 2 processes" in err) == (workers == 2)
        outs[workers] = [json.loads(line) for line in out.splitlines()]
    assert outs[1] == outs[2]
    assert [r["segmentation"] for r in outs[2]] == [segs[0], frag_uri, frag_uri, *segs[1:]]
    assert [r.get("threshold") for r in outs[2]] == [None, 0.3, 0.7, None, None]
