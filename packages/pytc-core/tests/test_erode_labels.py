"""erode_labels: gunpowder's GrowBoundary rule, exact on hand-made volumes and equal to the
per-label scipy erosion gunpowder runs."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from pytc_core.targets import affinities_from_labels, erode_labels


def two_boxes() -> np.ndarray:
    """Objects 1 and 2, 3 x 4 x 3 voxels each, touching along x, in background."""
    labels = np.zeros((5, 6, 8), np.uint64)
    labels[1:4, 1:5, 1:4] = 1
    labels[1:4, 1:5, 4:7] = 2
    return labels


def test_erosion_by_one_in_3d_leaves_the_cores_and_a_gap():
    out = erode_labels(two_boxes(), 1)
    expected = np.zeros((5, 6, 8), np.uint64)
    expected[2, 2:4, 2] = 1  # z 1 and 3 touch background, x 1 background, x 3 object 2
    expected[2, 2:4, 5] = 2
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == np.uint64
    # the touching faces are background now: 2 voxels of gap between the objects, and no
    # x-edge of those rows joins anything (each object is 1 voxel wide there)
    aff, _ = affinities_from_labels(out.astype(np.int64), [(0, 0, -1)])
    assert aff[0, 2, 2:4].tolist() == [[0] * 8] * 2


def test_erosion_in_plane_keeps_z_and_erodes_y_x():
    out = erode_labels(two_boxes(), 1, in_plane=True)
    expected = np.zeros((5, 6, 8), np.uint64)
    expected[1:4, 2:4, 2] = 1
    expected[1:4, 2:4, 5] = 2
    np.testing.assert_array_equal(out, expected)


def test_the_array_border_erodes_nothing_and_zero_steps_is_the_identity():
    labels = np.ones((4, 4, 6), np.int32)
    labels[..., 3:] = 2
    np.testing.assert_array_equal(erode_labels(labels, 0), labels)
    out = erode_labels(labels, 2)
    expected = labels.copy()
    expected[..., 1:5] = 0  # two voxels each side of the contact, none at the border
    np.testing.assert_array_equal(out, expected)


def gunpowder_grow_boundary(labels: np.ndarray, steps: int, only_xy: bool) -> np.ndarray:
    """gunpowder.GrowBoundary.__grow without a mask (scipy's binary_erosion per label)."""
    if only_xy:
        return np.stack([gunpowder_grow_boundary(s[None], steps, False)[0] for s in labels])
    foreground = np.zeros(labels.shape, bool)
    structure = ndimage.generate_binary_structure(3, 1)
    if labels.shape[0] == 1:
        structure = np.zeros((3, 3, 3), bool)
        structure[1] = ndimage.generate_binary_structure(2, 1)
    for label in np.unique(labels):
        if label == 0:
            continue
        foreground |= ndimage.binary_erosion(labels == label, structure=structure,
                                             iterations=steps, border_value=1)
    return np.where(foreground, labels, 0)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), steps=st.integers(1, 3), in_plane=st.booleans(),
       n=st.integers(1, 5))
def test_equals_gunpowder_grow_boundary(seed, steps, in_plane, n):
    rng = np.random.default_rng(seed)
    small = rng.integers(0, n + 1, size=(3, 4, 4))  # blocky objects: upsampled noise
    labels = np.kron(small, np.ones((3, 3, 3), np.int64))[:, :11, :10]
    np.testing.assert_array_equal(erode_labels(labels, steps, in_plane=in_plane),
                                  gunpowder_grow_boundary(labels, steps, in_plane))


def test_bad_arguments():
    with pytest.raises(ValueError, match="3D"):
        erode_labels(np.zeros((4, 4)), 1)
    with pytest.raises(ValueError, match=">= 0"):
        erode_labels(np.zeros((4, 4, 4)), -1)
