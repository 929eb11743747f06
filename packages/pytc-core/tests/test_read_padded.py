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


def _recording(vol):
    """``vol`` (a real volume) whose reads also record the boxes requested from storage."""
    requested: list[BBox] = []
    real_read = vol._read

    def _read(bbox):
        requested.append(bbox)
        return real_read(bbox)

    vol._read = _read
    return vol, requested


def _chunk_opens(layer):
    """A list that collects the names of the chunks of ``layer`` whose files are opened from
    now on (an audit hook: the real file opens of the real reader)."""
    import sys

    opened: list[str] = []
    prefix = str(layer)

    def hook(event, args):
        if event == "open" and isinstance(args[0], str) and args[0].startswith(prefix) \
                and "-" in args[0].rsplit("/", 1)[-1]:
            opened.append(args[0].rsplit("/", 1)[-1].split(".")[0])  # tries .gz, .br, ...

    sys.addaudithook(hook)
    return opened


def test_a_block_with_halo_is_read_in_whole_chunks(tmp_path):
    """A 32³ block with halo 2 on 16³ chunks (the 128³ + 8 on 64³ case at 1/4 scale): the
    storage request covers whole chunks only (4³ of them: the halo reaches into the
    neighbours' chunks), and the values equal the unaligned read."""
    from pytc_core.volume import open_volume
    from pytc_core.volume.padded import aligned_box, read_aligned

    rng = np.random.default_rng(0)
    data = rng.integers(0, 255, (2, 64, 64, 64), dtype=np.uint8)
    layer = tmp_path / "aff"
    create_volume(str(layer), data.shape, np.uint8, chunk_size=(16, 16, 16),
                  offset=(100, 0, 0)).write(data)
    context = BBox((114, 14, 14), (150, 50, 50))
    vol, requested = _recording(open_volume(str(layer)))
    assert aligned_box(vol, context) == BBox((100, 0, 0), (164, 64, 64))
    opened = _chunk_opens(layer)
    out = read_aligned(vol, context)
    np.testing.assert_array_equal(out, data[:, 14:50, 14:50, 14:50])
    assert requested == [BBox((100, 0, 0), (164, 64, 64))]
    assert len(set(opened)) == 4 ** 3
    # the unaligned read gives the same values but asks storage for 56 partial chunks
    np.testing.assert_array_equal(vol.read(context), out)
    assert requested[-1] == context
    # read_padded reads the inside part the same way
    np.testing.assert_array_equal(read_padded(vol, BBox((98, 0, 0), (120, 20, 20)))[:, 2:],
                                  data[:, :20, :20, :20])
    assert requested[-1] == BBox((100, 0, 0), (132, 32, 32))


def test_boxes_thinner_than_a_chunk_and_unchunked_volumes_are_read_as_asked(tmp_path):
    from pytc_core.volume.padded import aligned_box

    vol = create_volume(str(tmp_path / "l"), (32, 32, 32), np.uint8, chunk_size=(16, 16, 16))
    # z is thinner than a chunk: kept; y and x are rounded out
    assert aligned_box(vol, BBox((3, 3, 3), (5, 21, 30))) == BBox((3, 0, 0), (5, 32, 32))
    flat = create_volume(str(tmp_path / "x.npy"), (32, 32, 32), np.uint8)
    assert aligned_box(flat, BBox((3, 3, 3), (29, 29, 29))) == BBox((3, 3, 3), (29, 29, 29))
