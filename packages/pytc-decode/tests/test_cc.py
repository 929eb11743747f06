"""affinity_cc on hand-made volumes with exact labels, a graph reference, and label round trips."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.sparse.csgraph import connected_components

from pytc_core.errors import UserError
from pytc_core.synthetic import synthetic_labels
from pytc_core.targets import affinities_from_labels
from pytc_decode import affinity_cc, merge_small
from pytc_decode.cc import NO_EXTENSION, label_array, prepare_affinities


def first_voxel_order(labels: np.ndarray) -> np.ndarray:
    """Relabel to 1..N by first voxel in C order (0 stays 0): the canonical form."""
    flat = labels.reshape(-1)
    ids, first = np.unique(flat, return_index=True)
    nonzero = ids != 0
    ids, first = ids[nonzero], first[nonzero]
    table = {int(i): k + 1 for k, i in enumerate(ids[np.argsort(first)])}
    table[0] = 0
    return np.vectorize(table.__getitem__, otypes=[np.int64])(labels) if labels.size else labels


def reference_cc(aff: np.ndarray, threshold: float, mask: np.ndarray | None = None) -> np.ndarray:
    """The same labelling via scipy's connected_components on an explicit edge list."""
    _, Z, Y, X = aff.shape
    index = np.arange(Z * Y * X).reshape(Z, Y, X)
    inside = np.ones((Z, Y, X), bool) if mask is None else mask.astype(bool)
    rows, cols = [], []
    for c, (dz, dy, dx) in enumerate(((1, 0, 0), (0, 1, 0), (0, 0, 1))):
        v = index[dz:, dy:, dx:]
        u = index[: Z - dz, : Y - dy, : X - dx]
        on = (aff[c, dz:, dy:, dx:] > threshold) & inside[dz:, dy:, dx:] & inside[: Z - dz, : Y - dy, : X - dx]
        rows.append(v[on])
        cols.append(u[on])
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    n = Z * Y * X
    graph = scipy.sparse.coo_matrix((np.ones(rows.size), (rows, cols)), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    degree = np.bincount(np.concatenate([rows, cols]), minlength=n)
    out = (comp + 1) * (degree > 0)
    return first_voxel_order(out.reshape(Z, Y, X))


def aff_of(labels: np.ndarray) -> np.ndarray:
    return affinities_from_labels(np.asarray(labels))[0]


def test_two_objects_separated_by_one_low_affinity_plane():
    aff = np.ones((3, 6, 3, 4), np.float32)
    aff[0, 0] = aff[1, :, 0] = aff[2, :, :, 0] = 0.0  # edges leaving the volume
    aff[0, 4] = 0.2  # the plane between z = 3 and z = 4
    expected = np.ones((6, 3, 4), np.int64)
    expected[4:] = 2
    np.testing.assert_array_equal(affinity_cc(aff, 0.5), expected)
    # at a threshold below the plane's affinity it is one object
    np.testing.assert_array_equal(affinity_cc(aff, 0.1), np.ones((6, 3, 4)))


def test_u_shape_connected_only_at_the_bottom_and_an_object_in_its_gap():
    u = np.array([[1, 0, 0, 0, 1],
                  [1, 0, 2, 0, 1],
                  [1, 0, 2, 0, 1],
                  [1, 1, 1, 1, 1]])
    labels = np.stack([u, u])
    labels[:, 1:3, 2] = 7  # a second object in the gap touching nothing of the U
    labels[:, 3, 2] = 1
    out = affinity_cc(aff_of(labels))
    expected_plane = np.array([[1, 0, 0, 0, 1],
                               [1, 0, 2, 0, 1],
                               [1, 0, 2, 0, 1],
                               [1, 1, 1, 1, 1]])
    np.testing.assert_array_equal(out, np.stack([expected_plane, expected_plane]))
    # the U's arms touch each other only through the bottom: cut it and there are two arms
    aff = aff_of(labels)
    aff[2, :, 3, 2] = aff[2, :, 3, 3] = 0.0
    out = affinity_cc(aff)
    expected_plane = np.array([[1, 0, 0, 0, 2],
                               [1, 0, 3, 0, 2],
                               [1, 0, 3, 0, 2],
                               [1, 1, 0, 2, 2]])
    # the bottom voxel between the cuts keeps its z edge to the other slice, so it is a segment
    expected = np.stack([expected_plane, expected_plane])
    expected[:, 3, 2] = 4
    np.testing.assert_array_equal(out, expected)


def test_diagonal_only_contact_stays_separate():
    labels = np.zeros((2, 3, 4), np.int64)
    labels[0, 0, 0:2] = 5
    labels[0, 1, 2:4] = 5  # touches (0, 0, 1) only along a diagonal
    labels[1, 2, 0] = labels[0, 2, 1] = 5  # two single voxels diagonal in z-y: background
    expected = np.zeros_like(labels)
    expected[0, 0, 0:2] = 1
    expected[0, 1, 2:4] = 2
    np.testing.assert_array_equal(affinity_cc(aff_of(labels)), expected)


def test_objects_touching_every_border_and_edges_leaving_the_volume_are_ignored():
    labels = np.zeros((4, 4, 4), np.int64)
    labels[0, :, :] = 3      # the whole first z plane
    labels[1:, :, 3] = 4     # a wall at the last x
    labels[3, 0, 0] = 9      # a corner voxel on its own
    aff = aff_of(labels)
    # nonsense high affinities on the edges that leave the volume must not create segments
    aff[0, 0] = 1.0
    aff[1, :, 0] = 1.0
    aff[2, :, :, 0] = 1.0
    expected = np.zeros_like(labels)
    expected[0] = 1
    expected[1:, :, 3] = 2
    np.testing.assert_array_equal(affinity_cc(aff), expected)


def test_empty_volume_and_single_voxel():
    np.testing.assert_array_equal(affinity_cc(np.zeros((3, 5, 4, 3), np.float32)), 0)
    out = affinity_cc(np.ones((3, 1, 1, 1), np.float32))
    assert out.shape == (1, 1, 1) and out.dtype == np.uint32 and out[0, 0, 0] == 0
    assert affinity_cc(np.ones((3, 0, 4, 4), np.float32)).shape == (0, 4, 4)


def test_two_voxel_object_and_strict_threshold():
    aff = np.zeros((3, 1, 1, 3), np.float32)
    aff[2, 0, 0, 2] = 0.5
    np.testing.assert_array_equal(affinity_cc(aff, 0.5), [[[0, 0, 0]]])  # not strictly above
    np.testing.assert_array_equal(affinity_cc(aff, 0.49), [[[0, 1, 1]]])


def test_long_range_channels_are_ignored_and_integer_affinities_are_scaled():
    labels = np.zeros((3, 3, 3), np.int64)
    labels[:, 0, 0] = 1
    labels[:, 2, 2] = 2
    aff = np.concatenate([aff_of(labels), np.ones((6, 3, 3, 3), np.float32)])
    expected = first_voxel_order(labels)
    np.testing.assert_array_equal(affinity_cc(aff), expected)
    np.testing.assert_array_equal(affinity_cc((aff[:3] * 255).astype(np.uint8)), expected)
    np.testing.assert_array_equal(affinity_cc(aff.astype(np.float16)), expected)
    np.testing.assert_array_equal(affinity_cc(aff.astype(np.float64)), expected)


def test_mask_cuts_edges():
    aff = np.ones((3, 1, 1, 5), np.float32)
    aff[2, 0, 0, 0] = 0
    mask = np.array([[[1, 1, 0, 1, 1]]], bool)
    np.testing.assert_array_equal(affinity_cc(aff, mask=mask), [[[1, 1, 0, 2, 2]]])
    mask = np.array([[[1, 0, 1, 0, 1]]], np.uint8)
    np.testing.assert_array_equal(affinity_cc(aff, mask=mask), 0)


def test_min_size_remove_and_merge():
    labels = np.zeros((1, 4, 6), np.int64)
    labels[0, :, :4] = 1          # 16 voxels
    labels[0, 0:2, 4:6] = 2       # 4 voxels, touching 1 along 2 faces
    labels[0, 3, 4:6] = 3         # 2 voxels, touching 1 along one face
    aff = aff_of(labels)
    aff[2, 0, 0:2, 4] = 0.3       # the contact between 1 and 2: strength 0.6
    aff[2, 0, 3, 4] = 0.4         # between 1 and 3: strength 0.4
    np.testing.assert_array_equal(affinity_cc(aff), first_voxel_order(labels))
    removed = affinity_cc(aff, min_size=3)
    expected = first_voxel_order(labels)
    expected[expected == 3] = 0
    np.testing.assert_array_equal(removed, expected)
    merged = affinity_cc(aff, min_size=5, small="merge")
    np.testing.assert_array_equal(merged, (labels != 0).astype(int))
    # a small segment with no neighbour disappears even when merging
    lonely = np.zeros((1, 3, 5), np.int64)
    lonely[0, 0, 0:2] = 1
    lonely[0, 2, 0:5] = 2
    np.testing.assert_array_equal(affinity_cc(aff_of(lonely), min_size=3, small="merge"),
                                  np.where(lonely == 2, 1, 0))


def test_merge_small_picks_the_strongest_neighbour_with_ties_to_the_lower_id():
    labels = np.array([[[1, 1, 3, 2, 2]]], np.uint32)
    aff = np.zeros((3, 1, 1, 5), np.float32)
    aff[2, 0, 0, 2] = 0.3  # 1-3
    aff[2, 0, 0, 3] = 0.3  # 3-2
    np.testing.assert_array_equal(merge_small(labels.copy(), aff, 2), [[[1, 1, 1, 2, 2]]])
    aff[2, 0, 0, 3] = 0.4
    np.testing.assert_array_equal(merge_small(labels.copy(), aff, 2), [[[1, 1, 2, 2, 2]]])


@pytest.mark.parametrize("slabs", [1, 2, 3, 7, 32])
def test_result_does_not_depend_on_the_slab_split(slabs):
    labels = synthetic_labels((32, 24, 20), seed=3)
    aff = aff_of(labels)
    rng = np.random.default_rng(0)
    aff = np.clip(aff + rng.uniform(-0.45, 0.45, aff.shape), 0, 1).astype(np.float32)
    out, n = label_array(*prepare_affinities(aff, 0.5), None, NO_EXTENSION, NO_EXTENSION, slabs=slabs)
    np.testing.assert_array_equal(out, reference_cc(aff, 0.5))
    assert n == out.max()


@settings(max_examples=60, deadline=None)
@given(aff=arrays(np.float32, st.tuples(st.just(3), st.integers(1, 6), st.integers(1, 6),
                                        st.integers(1, 6)),
                  elements=st.sampled_from([0.0, 0.2, 0.5, 0.6, 1.0])),
       threshold=st.sampled_from([0.0, 0.3, 0.5, 0.9]),
       use_mask=st.booleans(), seed=st.integers(0, 3))
def test_matches_scipy_connected_components(aff, threshold, use_mask, seed):
    mask = None
    if use_mask:
        mask = np.random.default_rng(seed).random(aff.shape[1:]) < 0.8
    out = affinity_cc(aff, threshold, mask=mask)
    np.testing.assert_array_equal(out, reference_cc(aff, threshold, mask))


def test_affinities_of_labels_give_back_the_labels_with_noise():
    labels = synthetic_labels((40, 40, 40), seed=5)
    labels[::7] = 0  # background planes cut neurites into pieces
    aff = aff_of(labels)
    rng = np.random.default_rng(1)
    noisy = np.clip(aff + rng.uniform(-0.4, 0.4, aff.shape), 0, 1).astype(np.float32)
    out = affinity_cc(noisy, 0.5)
    import cc3d

    pieces = cc3d.connected_components(labels, connectivity=6).astype(np.int64)
    sizes = np.bincount(pieces.reshape(-1))
    pieces[sizes[pieces] == 1] = 0  # isolated single voxels have no edge: background
    np.testing.assert_array_equal(out, first_voxel_order(pieces))
    assert out.dtype == np.uint32 and out.max() > 20


@pytest.mark.parametrize("bad, match", [
    (np.zeros((4, 4, 4), np.float32), "need 4D"),
    (np.zeros((2, 4, 4, 4), np.float32), "2 channel"),
    (np.zeros((3, 4, 4, 4), np.int16), "dtype int16"),
])
def test_bad_arrays(bad, match):
    with pytest.raises(UserError, match=match):
        affinity_cc(bad)


def test_bad_threshold_nan_min_size_and_policy():
    aff = np.zeros((3, 2, 2, 2), np.float32)
    for t in (-0.1, 1.5, float("nan")):
        with pytest.raises(UserError, match="outside"):
            affinity_cc(aff, t)
    aff[1, 1, 1, 0] = np.nan
    with pytest.raises(UserError, match="1 voxel"):
        affinity_cc(aff)
    with pytest.raises(UserError, match="negative"):
        affinity_cc(np.zeros((3, 2, 2, 2), np.float32), min_size=-1)
    with pytest.raises(UserError, match="did you mean 'merge'"):
        affinity_cc(np.zeros((3, 2, 2, 2), np.float32), small="merg")
    with pytest.raises(UserError, match="mask has shape"):
        affinity_cc(np.zeros((3, 2, 2, 2), np.float32), mask=np.ones((2, 2, 3), bool))


def test_the_int64_kernel_for_uint64_outputs_gives_the_same_labels():
    """Volumes of 2**32 voxels or more use int64 label arrays (viewed as uint64)."""
    from pytc_decode.cc import label_serial

    labels = synthetic_labels((16, 20, 24), seed=8)
    aff = aff_of(labels)
    expected = affinity_cc(aff)
    lab = np.empty(labels.shape, np.int64)
    parent = np.empty(labels.size + 1, np.int64)
    nseg, nan, outside = label_serial(aff, 0.5, 1.0, np.ones((1, 1, 1), np.uint8), False,
                                       NO_EXTENSION, NO_EXTENSION, lab, parent)
    assert nan == 0 and outside == 0 and nseg == expected.max()
    np.testing.assert_array_equal(lab, expected)


def test_values_outside_0_1_are_refused_while_labelling():
    """The kernel checks every affinity it reads: [0, 1] passes, logits do not."""
    aff = np.zeros((3, 4, 4, 4), np.float32)
    aff[:, :, :2] = 1.0  # the bounds themselves are fine
    assert affinity_cc(aff).max() == 1
    for bad in (1.5, -0.01, np.float32(1.0000001)):
        aff[2, 3, 3, 3] = bad
        with pytest.raises(UserError, match=r"1 value\(s\) outside \[0, 1\].*--logits"):
            affinity_cc(aff)
    aff[2, 3, 3, 3] = np.inf
    with pytest.raises(UserError, match="NaN/inf"):
        affinity_cc(aff)
    aff[2, 3, 3, 3] = 0.5
    np.testing.assert_array_equal(affinity_cc((aff * 255).astype(np.uint8)), affinity_cc(aff))
