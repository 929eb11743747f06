"""rand_voi against hand-computed tables and a literal transcription of funlib's C++."""

import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytc_core.errors import UserError
from pytc_eval import ContingencyTable, rand_voi, rand_voi_from_table


def funlib_rand_voi(truth, test):
    """funlib/evaluate/impl/rand_voi.hpp, line by line in Python (the reference)."""
    p_ij, p_i, p_j = Counter(), Counter(), Counter()
    total = 0
    for a, b in zip(truth.ravel().tolist(), test.ravel().tolist(), strict=True):
        if a:
            total += 1
            p_ij[a, b] += 1
            p_i[a] += 1
            p_j[b] += 1
    sum_p_ij = sum(v * v for v in p_ij.values())
    sum_p_i = sum(v * v for v in p_i.values())
    sum_p_j = sum(v * v for v in p_j.values())

    def h(c):
        return -sum((v / total) * math.log2(v / total) for v in c.values())

    h_ab, h_a, h_b = (h(p_ij), h(p_i), h(p_j)) if total else (0.0, 0.0, 0.0)
    nan = float("nan")
    return {
        "rand_split": sum_p_ij / sum_p_i if sum_p_i else nan,
        "rand_merge": sum_p_ij / sum_p_j if sum_p_j else nan,
        "voi_split": h_ab - h_a,
        "voi_merge": h_ab - h_b,
        "nvi_split": (h_ab - h_a) / h_ab if h_ab else nan,
        "nvi_merge": (h_ab - h_b) / h_ab if h_ab else nan,
        "nid": 1 - (h_a + h_b - h_ab) / max(h_a, h_b) if max(h_a, h_b) else nan,
    }


def assert_matches_funlib(truth, pred):
    ours, ref = rand_voi(truth, pred), funlib_rand_voi(truth, pred)
    for key, value in ref.items():
        if math.isnan(value):
            assert math.isnan(ours[key]), key
        else:
            assert ours[key] == pytest.approx(value, rel=1e-12, abs=1e-12), key


def test_hand_computed_table():
    # truth non-zero voxels give pairs (1,5)x2, (2,5), (2,6), (3,0); the truth-0 voxel is ignored
    truth = np.array([1, 1, 2, 2, 0, 3], np.uint64)
    pred = np.array([5, 5, 5, 6, 7, 0], np.uint64)
    r = rand_voi(truth, pred, return_cluster_scores=True)
    assert r["rand_split"] == pytest.approx(7 / 9)   # Σn² = 4+1+1+1, Σa² = 4+4+1
    assert r["rand_merge"] == pytest.approx(7 / 11)  # Σb² = 9+1+1
    assert r["voi_split"] == pytest.approx(0.4)      # truth 2 (p = 2/5) split in halves: 1 bit
    # H(truth|pred): pred 5 (p = 3/5) holds truth 1,1,2 → H(2/3, 1/3)
    h = -(2 / 3) * math.log2(2 / 3) - (1 / 3) * math.log2(1 / 3)
    assert r["voi_merge"] == pytest.approx(0.6 * h)
    rs, rm = 7 / 9, 7 / 11
    assert r["adapted_rand_error"] == pytest.approx(1 - 2 * rs * rm / (rs + rm))
    assert r["voi_split_i"] == pytest.approx({1: 0.0, 2: 0.4, 3: 0.0})
    assert r["voi_merge_j"] == pytest.approx({0: 0.0, 5: 0.6 * h, 6: 0.0})
    # segments: 5, 6 and 7 (on truth 0); a predicted 0 scores as a label but is no segment
    assert (r["n_voxels"], r["n_gt_segments"], r["n_segments"]) == (5, 3, 3)
    assert rand_voi(truth, np.where(pred == 7, 0, pred))["n_segments"] == 2
    assert_matches_funlib(truth, pred)


def test_perfect_and_relabelled():
    truth = np.repeat(np.arange(1, 9, dtype=np.uint32), 8).reshape(4, 4, 4)
    r = rand_voi(truth, truth * 7 + 3)
    assert (r["voi_split"], r["voi_merge"], r["rand_split"], r["rand_merge"]) == (0, 0, 1, 1)
    assert r["adapted_rand_error"] == 0
    assert r["nid"] == pytest.approx(0.0, abs=1e-15)


def test_everything_merged():
    truth = np.repeat(np.arange(1, 5, dtype=np.uint8), 4)  # 4 equal segments
    r = rand_voi(truth, np.zeros_like(truth))  # predicted 0 is one ordinary segment
    assert r["voi_split"] == 0 and r["voi_merge"] == pytest.approx(2.0)
    assert r["rand_split"] == 1 and r["rand_merge"] == pytest.approx(64 / 256)
    assert r["nvi_merge"] == pytest.approx(1.0) and r["nid"] == pytest.approx(1.0)


def test_nan_cases_follow_funlib():
    zeros = np.zeros((3, 3), np.uint16)
    r = rand_voi(zeros, np.ones_like(zeros))
    assert r["voi_split"] == 0 and r["voi_merge"] == 0 and r["n_voxels"] == 0
    for key in ("rand_split", "rand_merge", "nvi_split", "nvi_merge", "nid",
                "adapted_rand_error"):
        assert math.isnan(r[key]), key
    single = rand_voi(np.ones((2, 2), np.int8), np.full((2, 2), 4, np.int64))
    assert single["voi_split"] == 0 and single["rand_merge"] == 1
    assert math.isnan(single["nvi_split"]) and math.isnan(single["nid"])


def test_ids_near_2_64_and_signed_dtypes():
    big = np.uint64(2**64 - 1)
    truth = np.array([big, big, big - np.uint64(1), 1], np.uint64)
    pred = np.array([big, 0, 0, 0], np.uint64)
    r = rand_voi(truth, pred, return_cluster_scores=True)
    small = rand_voi(np.array([3, 3, 2, 1]), np.array([9, 0, 0, 0]), return_cluster_scores=True)
    for key in ("voi_split", "voi_merge", "rand_split", "rand_merge"):
        assert r[key] == small[key]
    assert set(r["voi_split_i"]) == {2**64 - 1, 2**64 - 2, 1}
    # -1 in int64 is the same id as 2**64 - 1 (funlib casts to uint64)
    assert rand_voi(truth.view(np.int64), pred)["voi_split"] == r["voi_split"]


def test_bad_input():
    with pytest.raises(UserError, match=r"shape \(2, 3\).*shape \(3, 2\)"):
        rand_voi(np.ones((2, 3), np.uint8), np.ones((3, 2), np.uint8))
    with pytest.raises(UserError, match="float"):
        rand_voi(np.ones(4, np.uint8), np.ones(4, np.float32))


def test_table_grows_and_blocks_add_up():
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 300, size=(20, 30, 40)).astype(np.uint64)
    pred = rng.integers(0, 300, size=(20, 30, 40)).astype(np.uint32)
    whole = ContingencyTable(capacity=16).add(truth, pred)
    blocks = ContingencyTable()
    for z in range(0, 20, 7):
        for x in range(0, 40, 16):
            blocks.add(truth[z:z + 7, :, x:x + 16], pred[z:z + 7, :, x:x + 16])
    halves = ContingencyTable().add(truth[:10], pred[:10])
    halves.merge(ContingencyTable().add(truth[10:], pred[10:]))
    for table in (blocks, halves):
        for got, want in zip(table.pairs(), whole.pairs(), strict=True):
            np.testing.assert_array_equal(got, want)
    assert whole.total == int((truth != 0).sum())
    assert rand_voi_from_table(*whole.pairs(include_background=True)) == rand_voi(truth, pred)
    assert_matches_funlib(truth[:5], pred[:5])


def test_recent_pair_cache_counts_exactly_through_collisions_and_growth():
    # many more pairs than the kernel's cache has entries (so they share entries: one id
    # with several truths, one truth with several ids), revisited in short runs, in a table
    # that starts tiny and grows while counting
    rng = np.random.default_rng(11)
    pairs = [(8 * t, b) for b in range(1, 700) for t in range(3)]
    picks = rng.integers(0, len(pairs), size=20000)
    runs = rng.integers(1, 4, size=picks.size)
    truth = np.repeat(np.array([pairs[i][0] for i in picks], np.uint64), runs)
    pred = np.repeat(np.array([pairs[i][1] for i in picks], np.uint64), runs)
    want = Counter(zip(truth.tolist(), pred.tolist(), strict=True))
    got_a, got_b, got_n = ContingencyTable(capacity=16).add(truth, pred).pairs(
        include_background=True)
    got = dict(zip(zip(got_a.tolist(), got_b.tolist(), strict=True), got_n.tolist(),
                   strict=True))
    assert got == dict(want)


def test_counted_through_a_relabel_table():
    # fragments 1..5 counted as segments: 1, 2 -> 7; 3 -> 3; 4, 5 -> 9; id 12 lies beyond
    # the table and counts as itself. Runs of different fragments of one segment (1, 2, 1)
    # count as one run; a change of segment (2 -> 3) or of truth ends a run.
    lut = np.array([0, 7, 7, 3, 9, 9], np.uint64)
    truth = np.array([1, 1, 1, 1, 1, 2, 2, 2, 0, 0, 2], np.uint32)
    pred = np.array([1, 2, 1, 3, 3, 4, 5, 12, 0, 2, 2], np.uint32)
    got = ContingencyTable(capacity=16).add(truth, pred, relabel=lut).pairs(
        include_background=True)
    assert list(zip(*[g.tolist() for g in got], strict=True)) == [
        (0, 0, 1), (0, 7, 1), (1, 3, 2), (1, 7, 3), (2, 7, 1), (2, 9, 2), (2, 12, 1)]
    want = ContingencyTable().add(truth, lut[np.minimum(pred, 5)] * (pred <= 5)
                                  + pred.astype(np.uint64) * (pred > 5)).pairs(True)
    assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))


labels = st.lists(st.integers(0, 4), min_size=1, max_size=40)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_properties(data):
    truth = np.array(data.draw(labels), np.int64)
    pred = np.array(data.draw(st.lists(st.integers(0, 4), min_size=truth.size,
                                       max_size=truth.size)), np.int64)
    r = rand_voi(truth, pred, return_cluster_scores=True)
    assert r["voi_split"] >= 0 and r["voi_merge"] >= 0
    assert sum(r["voi_split_i"].values()) == pytest.approx(r["voi_split"], abs=1e-12)
    assert sum(r["voi_merge_j"].values()) == pytest.approx(r["voi_merge"], abs=1e-12)
    assert_matches_funlib(truth, pred)
    # relabelling either side (a bijection, 0 kept in truth) changes nothing
    relabelled = rand_voi(np.where(truth > 0, truth * 1000 + 7, 0), pred * 31 + 2**40)
    for key in ("voi_split", "voi_merge", "rand_split", "rand_merge"):
        assert relabelled[key] == pytest.approx(r[key], rel=1e-12, abs=1e-12, nan_ok=True)
    # swapping arguments swaps split and merge where both have the same background
    both = (truth > 0) & (pred > 0)
    t, p = truth[both], pred[both]
    if t.size:
        fwd, bwd = rand_voi(t, p), rand_voi(p, t)
        assert bwd["voi_split"] == pytest.approx(fwd["voi_merge"], abs=1e-12)
        assert bwd["voi_merge"] == pytest.approx(fwd["voi_split"], abs=1e-12)
        assert bwd["rand_split"] == pytest.approx(fwd["rand_merge"], rel=1e-12)
