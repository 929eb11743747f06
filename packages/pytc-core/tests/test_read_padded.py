"""read_padded: a box reaching past a volume's edge, zero-padded."""

from __future__ import annotations

import numpy as np

from pytc_core import BBox, create_volume
from pytc_core.volume.padded import read_padded


def test_3d_volume_with_an_offset(tmp_path):
    data = np.arange(1, 2 * 3 * 4 + 1, dtype=np.uint16).reshape(2, 3, 4)
    vol = create_volume(str(tmp_path / "raw.npy"), data.shape, np.uint16, offset=(10, 20, 30))
    vol.write(data)
    # one voxel before the volume on every axis, one after in x
    out = read_padded(vol, BBox((9, 19, 29), (11, 21, 35)))
    assert out.shape == (2, 2, 6) and out.dtype == np.uint16
    expected = np.zeros((2, 2, 6), np.uint16)
    expected[1, 1, 1:5] = data[0, 0]
    np.testing.assert_array_equal(out, expected)
    inside = BBox((10, 21, 31), (12, 23, 33))
    np.testing.assert_array_equal(read_padded(vol, inside), data[:, 1:3, 1:3])
    # a box that misses the volume: all zeros
    np.testing.assert_array_equal(read_padded(vol, BBox((0, 0, 0), (2, 2, 2))),
                                  np.zeros((2, 2, 2), np.uint16))


def test_channels_stay_first(tmp_path):
    data = np.arange(2 * 2 * 2 * 2, dtype=np.float32).reshape(2, 2, 2, 2) + 1
    vol = create_volume(str(tmp_path / "aff.npy"), data.shape, np.float32)
    vol.write(data)
    out = read_padded(vol, BBox((1, 0, 0), (3, 2, 1)))
    assert out.shape == (2, 2, 2, 1)
    np.testing.assert_array_equal(out[:, 0], data[:, 1, :, :1])
    assert not out[:, 1].any()
