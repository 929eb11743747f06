"""The optional mutex-watershed decoder (skipped when mwatershed is not installed)."""

from __future__ import annotations

import numpy as np
import pytest

from pytc_core.errors import UserError
from pytc_core.targets import affinities_from_labels, long_range_offsets

pytest.importorskip("mwatershed")

from pytc_decode.mws import mutex_watershed  # noqa: E402


def test_mws_recovers_labels_from_long_range_affinities():
    labels = np.zeros((6, 8, 8), np.int64)
    labels[:, :4, :] = 3
    labels[:, 4:, :5] = 1
    labels[:, 4:, 5:] = 2
    labels[0, 0, 0] = 0  # a background voxel
    offsets = long_range_offsets((2,))
    aff = affinities_from_labels(labels, offsets)[0]
    # a weak false edge across the 3|1 contact is outvoted by the repulsive long-range edges
    aff[1, 2, 4, 1] = 0.7
    out = mutex_watershed(aff, offsets[3:], 0.5)
    expected = np.zeros_like(labels)
    expected[:, :4, :] = 1
    expected[:, 4:, :5] = 2
    expected[:, 4:, 5:] = 3
    expected[0, 0, 0] = 0
    np.testing.assert_array_equal(out, expected)
    # the nearest-neighbour CC merges through that false edge
    from pytc_decode import affinity_cc

    assert affinity_cc(aff).max() == 2
    # masks and min_size
    mask = np.ones(labels.shape, bool)
    mask[:, :, 7] = False
    out = mutex_watershed(aff, offsets[3:], 0.5, mask=mask)
    np.testing.assert_array_equal(out, np.where(mask, expected, 0))
    out = mutex_watershed(aff, offsets[3:], 0.5, min_size=100)
    np.testing.assert_array_equal(out, np.where(expected == 3, 0, expected))  # 72 voxels


def test_mws_offsets_must_match_channels():
    with pytest.raises(UserError, match="6 channels but 3 offsets"):
        mutex_watershed(np.zeros((6, 4, 4, 4), np.float32), [], 0.5)


def _split_volume():
    labels = np.zeros((6, 8, 8), np.int64)
    labels[:, :4, :] = 3
    labels[:, 4:, :5] = 1
    labels[:, 4:, 5:] = 2
    offsets = long_range_offsets((2,))
    return labels, offsets, affinities_from_labels(labels, offsets)[0]


def test_float16_affinities_keep_their_long_range_channels():
    """float16 is widened to float32 for every channel, not only the first three."""
    labels, offsets, aff = _split_volume()
    aff[1, 2, 4, 1] = 0.7  # the false edge the long-range channels outvote
    expected = mutex_watershed(aff, offsets[3:], 0.5)
    assert expected.max() == 3
    np.testing.assert_array_equal(mutex_watershed(aff.astype(np.float16), offsets[3:], 0.5),
                                  expected)


def test_values_outside_0_1_are_refused():
    _, offsets, aff = _split_volume()
    aff[4, 1, 1, 1] = 3.0  # a logit in a long-range channel
    with pytest.raises(UserError, match=r"1 value\(s\) outside \[0, 1\].*--logits"):
        mutex_watershed(aff, offsets[3:], 0.5)


def test_mws_small_merge_merges_into_the_strongest_neighbour(tmp_path, capsys):
    """--method mws --small merge merges small segments instead of removing them."""
    from pytc_core.cli import run_entry_point
    from pytc_core.volume import create_volume, open_volume
    from pytc_decode.cli import app

    labels, offsets, aff = _split_volume()
    labels[:, 4:, 5:] = 1  # two pieces: 3 (y < 4, 48 voxels per 6 z) and 1
    labels[2:4, 6:8, 6:8] = 4  # a small piece (8 voxels) inside segment 1
    aff = affinities_from_labels(labels, offsets)[0]
    # make the small piece touch segment 1 more strongly than its other side (none here)
    aff_uri = str(tmp_path / "aff.npy")
    create_volume(aff_uri, aff.shape, aff.dtype).write(aff)
    base = [aff_uri, "--method", "mws", "--min-size", "10", "--set",
            "mws.long_range_offsets=[[-2,0,0],[0,-2,0],[0,0,-2]]", "-q"]
    assert run_entry_point("pytc-decode", app, [*base, "-o", str(tmp_path / "rm.npy")]) == 0
    assert run_entry_point("pytc-decode", app, [*base, "-o", str(tmp_path / "mg.npy"),
                                                "--small", "merge"]) == 0
    capsys.readouterr()
    removed = open_volume(str(tmp_path / "rm.npy")).read()
    merged = open_volume(str(tmp_path / "mg.npy")).read()
    expected = np.where(labels == 3, 1, 2)  # 3 first in C order, the piece joins segment 1
    np.testing.assert_array_equal(merged, expected)
    np.testing.assert_array_equal(removed, np.where(labels == 4, 0, expected))
