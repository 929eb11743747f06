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
