"""Baseline affinities from raw EM: hand-made volumes with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from pytc_core.baselines import (
    gaussian_smooth,
    gradient_affinities,
    gradient_magnitude,
    intensity_affinities,
    raw_to_unit,
)


def test_raw_to_unit_integer_and_float():
    assert raw_to_unit(np.array([0, 51, 255], np.uint8)).tolist() == pytest.approx([0, 0.2, 1])
    assert raw_to_unit(np.array([2.0, 4.0, 6.0])).tolist() == [0.0, 0.5, 1.0]
    assert raw_to_unit(np.full(3, 7.0)).tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("sigma", [1.0, (0.0, 1.5, 0.7), 2.0])
def test_gaussian_smooth_equals_scipy(sigma):
    x = np.random.default_rng(0).random((12, 20, 22)).astype(np.float32)
    ours = gaussian_smooth(x, sigma)
    theirs = ndimage.gaussian_filter(x.astype(np.float64), sigma, mode="reflect", truncate=4.0)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_gradient_magnitude_of_a_ramp():
    z, y, x = np.meshgrid(np.arange(4), np.arange(5), np.arange(6), indexing="ij")
    g = gradient_magnitude(3.0 * x + 4.0 * y)  # |(0, 4, 3)| = 5 everywhere
    np.testing.assert_allclose(g, 5.0)


def test_intensity_affinities_by_hand():
    raw = np.array([[[10, 200, 255, 0]]], np.uint8)  # (1, 1, 4)
    aff = intensity_affinities(raw)
    assert aff.shape == (3, 1, 1, 4)
    assert aff[0].max() == 0 and aff[1].max() == 0  # z and y edges leave the volume
    # x edge at v links v and v - 1: min of the two, 0 at x = 0
    np.testing.assert_allclose(aff[2, 0, 0], [0, 10 / 255, 200 / 255, 0], rtol=1e-6)


def test_intensity_affinities_cc_equal_components_of_thresholded_raw():
    """pytc-decode's CC at threshold t on intensity affinities = 6-connected components of
    raw > t (bright voxels with a bright neighbour)."""
    from pytc_decode import affinity_cc

    rng = np.random.default_rng(3)
    smooth = ndimage.gaussian_filter(rng.random((16, 24, 24)), 1.5)
    raw = (255 * (smooth - smooth.min()) / (smooth.max() - smooth.min())).astype(np.uint8)
    t = 0.61  # between two uint8 levels: no float32-vs-float64 tie at the threshold
    ours = affinity_cc(intensity_affinities(raw), t)
    fg = raw.astype(np.float32) / 255 > t
    ref, n = ndimage.label(fg)  # 6-connectivity
    sizes = np.bincount(ref.ravel())
    ref[sizes[ref] == 1] = 0  # a lone bright voxel has no above-threshold edge
    assert n > 3
    # same partition: a one-to-one map between non-zero ids
    pairs = np.unique(np.stack([ours.ravel(), ref.ravel()]), axis=1)
    assert ((pairs[0] == 0) == (pairs[1] == 0)).all()
    fg_pairs = pairs[:, pairs[0] > 0]
    assert len(np.unique(fg_pairs[0])) == len(np.unique(fg_pairs[1])) == fg_pairs.shape[1]


def test_gradient_affinities_cut_at_an_intensity_step():
    raw = np.zeros((8, 8, 16), np.uint8)
    raw[..., 8:] = 200  # one step between x = 7 and x = 8
    aff = gradient_affinities(raw, sigma=0.0)
    # central differences: the gradient is non-zero at x = 7 and x = 8 only
    x_edges = aff[2, 4, 4]
    assert x_edges[0] == 0  # leaves the volume
    assert (x_edges[1:7] == 1).all() and (x_edges[10:] == 1).all()
    assert (x_edges[7:10] == 0).all()  # edges touching x = 7 or 8 are cut
    assert aff.dtype == np.float32 and aff.min() >= 0 and aff.max() <= 1
    assert (gradient_affinities(np.full((4, 4, 4), 9, np.uint8))[:, 1:, 1:, 1:] == 1).all()
