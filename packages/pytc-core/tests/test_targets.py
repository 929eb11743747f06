from __future__ import annotations

import numpy as np

from pytc_core.targets import (
    NEAREST_OFFSETS,
    affinities_from_labels,
    boundary_from_labels,
    foreground_from_labels,
    long_range_offsets,
)


def test_nearest_affinities_on_a_hand_made_volume():
    labels = np.array([[[1, 1, 2],
                        [1, 0, 2]],
                       [[1, 1, 2],
                        [3, 3, 2]]], dtype=np.uint64)  # (z=2, y=2, x=3)
    aff, mask = affinities_from_labels(labels)
    assert aff.shape == (3, 2, 2, 3) and aff.dtype == np.float32
    # z edges: voxel (1, y, x) links to (0, y, x)
    np.testing.assert_array_equal(aff[0, 1], [[1, 1, 1], [0, 0, 1]])
    np.testing.assert_array_equal(aff[0, 0], np.zeros((2, 3)))
    np.testing.assert_array_equal(mask[0, 0], np.zeros((2, 3)))
    np.testing.assert_array_equal(mask[0, 1], np.ones((2, 3)))
    # y edges: (z, 1, x) links to (z, 0, x); background never affine
    np.testing.assert_array_equal(aff[1, 0], [[0, 0, 0], [1, 0, 1]])
    np.testing.assert_array_equal(aff[1, 1], [[0, 0, 0], [0, 0, 1]])
    # x edges: (z, y, 1) links to (z, y, 0)
    np.testing.assert_array_equal(aff[2, 0], [[0, 1, 0], [0, 0, 0]])
    np.testing.assert_array_equal(aff[2, 1], [[0, 1, 0], [0, 1, 0]])
    np.testing.assert_array_equal(mask[2, :, :, 0], np.zeros((2, 2)))


def test_long_range_and_positive_offsets():
    labels = np.zeros((1, 1, 6), dtype=np.uint32)
    labels[0, 0, :4] = 5
    aff, mask = affinities_from_labels(labels, [(0, 0, -3), (0, 0, 2), (0, 0, -10)])
    np.testing.assert_array_equal(aff[0, 0, 0], [0, 0, 0, 1, 0, 0])
    np.testing.assert_array_equal(mask[0, 0, 0], [0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(aff[1, 0, 0], [1, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(mask[1, 0, 0], [1, 1, 1, 1, 0, 0])
    assert mask[2].sum() == 0  # partner always outside


def test_long_range_offsets_start_with_nearest():
    offs = long_range_offsets((3, 9), anisotropy=(3, 1, 1))
    assert offs[:3] == NEAREST_OFFSETS
    assert offs[3:] == ((0, -3, 0), (0, 0, -3), (-3, 0, 0), (0, -9, 0), (0, 0, -9))


def test_foreground_and_boundary():
    labels = np.array([[[1, 1, 2, 0]]])
    np.testing.assert_array_equal(foreground_from_labels(labels), [[[1, 1, 1, 0]]])
    np.testing.assert_array_equal(boundary_from_labels(labels), [[[0, 1, 1, 1]]])
