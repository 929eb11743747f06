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


def test_defective_affinities_are_deterministic_in_range_with_the_asked_defects():
    import numpy as np

    from pytc_core.synthetic import defective_affinities
    from pytc_core.targets import affinities_from_labels

    labels = np.zeros((16, 32, 32), np.uint32)
    labels[:, :, :16], labels[:, :, 16:] = 1, 2
    clean = affinities_from_labels(labels)[0]
    a = defective_affinities(clean, seed=3, sigma=0.1, leak_rate=0.05, missing=(8,))
    np.testing.assert_array_equal(a, defective_affinities(clean, seed=3, sigma=0.1,
                                                          leak_rate=0.05, missing=(8,)))
    assert a.dtype == np.float32 and a.min() >= 0 and a.max() <= 1
    assert abs(float(a[:, 8].mean()) - 0.5) < 0.02  # the missing section is uninformative
    boundary = clean[2, :, :, 16] < 0.5  # the x-edges between the two objects
    weakened = a[2][:, :, 16][boundary & (np.arange(16) != 8)[:, None]]
    assert (weakened > 0.6).mean() > 0.05  # some boundary patches leak
    inside = np.delete(a[:, :, :, 2:14], 8, axis=1)
    assert 0.85 < float(inside.mean()) < 0.97  # noise, but the interior stays affine
