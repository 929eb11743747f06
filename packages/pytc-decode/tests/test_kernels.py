"""The one union-find and remap of pytc-decode, and the size histogram, on hand-made input."""

from __future__ import annotations

import numpy as np

from pytc_decode.decode import segment_stats, size_histogram
from pytc_decode.kernels import remap, union_pairs


def test_union_pairs_roots_are_the_smallest_members():
    parent = np.arange(8, dtype=np.int64)
    union_pairs(parent, np.array([5, 7, 2, 6], np.int64), np.array([3, 5, 6, 4], np.int64))
    np.testing.assert_array_equal(parent, [0, 1, 2, 3, 2, 3, 2, 3])


def test_remap_contiguous_in_place_and_strided_views():
    table = np.array([0, 3, 1, 2], np.uint32)
    labels = np.array([[[1, 2], [3, 0]]], np.uint32)
    np.testing.assert_array_equal(remap(labels, table), [[[3, 1], [2, 0]]])
    big = np.tile(np.arange(4, dtype=np.uint32), (2, 3, 2))  # (2, 3, 8)
    view = big[:, 1:, 2:6]  # a strided block view, remapped in place
    expected = big.copy()
    expected[:, 1:, 2:6] = table[expected[:, 1:, 2:6]]
    remap(view, table, out=view)
    np.testing.assert_array_equal(big, expected)


def test_size_histogram_counts_segments_and_voxels_per_decade():
    sizes = np.array([1, 2, 9, 10, 10, 99, 100, 2500])
    assert size_histogram(sizes) == ((1, 1, 1, 1), (2, 9, 2, 11), (10, 99, 3, 119),
                                     (100, 999, 1, 100), (1000, 9999, 1, 2500))
    assert size_histogram(np.array([], np.int64)) == ()
    stats = segment_stats(np.array([50, 3, 0, 12]), 65, dust=True)  # index 0 is background
    assert stats.segments == 2 and stats.voxels_labelled == 15
    text = stats.histogram_text(width=4).splitlines()
    assert text[1:] == ["                     1          0      0.0%",
                        "                   2-9          1     20.0%  ####",
                        "                 10-99          1     80.0%  ####"]
