from __future__ import annotations

import numpy as np

from pytc_core.synthetic import synthetic_em_volume, synthetic_labels
from pytc_core.targets import affinities_from_labels


def test_deterministic_and_neuron_like():
    raw, labels = synthetic_em_volume((32, 48, 48), seed=7)
    raw2, labels2 = synthetic_em_volume((32, 48, 48), seed=7)
    np.testing.assert_array_equal(labels, labels2)
    np.testing.assert_array_equal(raw, raw2)
    assert not np.array_equal(labels, synthetic_labels((32, 48, 48), seed=8))
    assert labels.dtype == np.uint64 and raw.dtype == np.uint8
    ids = np.unique(labels)
    np.testing.assert_array_equal(ids, np.arange(len(ids)))  # consecutive, 0 = background
    assert len(ids) > 10
    # every id is one 6-connected object of >= 20 voxels
    import cc3d

    assert cc3d.connected_components(labels, connectivity=6).max() == len(ids) - 1
    assert np.bincount(labels.ravel().astype(np.intp))[1:].min() >= 20
    assert 0.4 < (labels > 0).mean() < 0.9
    # some neurites touch: neighbouring voxels with two different non-zero labels
    a, b = labels[:, :, 1:], labels[:, :, :-1]
    assert np.any((a != b) & (a > 0) & (b > 0))
    # membranes are dark: boundary voxels darker than interiors on average
    aff, _ = affinities_from_labels(labels)
    interior = aff.min(axis=0) > 0
    assert raw[interior].mean() > raw[~interior & (labels > 0)].mean() + 10
