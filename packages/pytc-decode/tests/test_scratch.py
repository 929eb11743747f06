"""A blockwise decode's scratch: block-local labels compressed in their smallest dtype."""

from __future__ import annotations

import numpy as np
import pytest

from pytc_core.cli import run_entry_point
from pytc_core.synthetic import defective_affinities, synthetic_labels
from pytc_core.targets import affinities_from_labels
from pytc_core.volume import create_volume, open_volume
from pytc_decode import affinity_cc
from pytc_decode.cli import app
from pytc_decode.scratch import load_block_labels, save_block_labels, smallest_label_dtype


@pytest.mark.parametrize(("max_id", "dtype"), [(0, np.uint8), (255, np.uint8), (256, np.uint16),
                                               (65535, np.uint16), (65536, np.uint32),
                                               (2**32, np.uint64)])
def test_block_labels_are_stored_in_the_smallest_dtype_and_read_back_exactly(tmp_path, max_id,
                                                                            dtype):
    assert smallest_label_dtype(max_id) == dtype
    labels = np.zeros((4, 5, 6), np.uint64)
    labels[1, 2, 3] = max_id
    labels[2] = 1
    path = tmp_path / "labels.npz"
    save_block_labels(path, labels)
    assert load_block_labels(path).dtype == dtype
    back = load_block_labels(path, np.dtype(np.uint64))
    assert back.dtype == np.uint64
    np.testing.assert_array_equal(back, labels)


def test_negative_labels_are_refused(tmp_path):
    with pytest.raises(ValueError, match="non-negative"):
        save_block_labels(tmp_path / "x.npz", np.array([[[-1]]], np.int32))


@pytest.mark.parametrize("method", ["cc", "ws"])
def test_scratch_is_a_fraction_of_a_byte_per_voxel(tmp_path, method):
    """64³ defective affinities in 32³ blocks: the local labels in scratch take < 0.5 byte per
    voxel. Bound: a 32³ block has < 2^16 local ids, so an uncompressed copy in the smallest
    dtype is 2 bytes/voxel (the old scratch, uint32, was 4); a segmentation of ~100 neurons
    compresses more than 4x. The cc output equals the whole-volume decode."""
    labels = synthetic_labels((64, 64, 64), seed=0)
    aff = defective_affinities(affinities_from_labels(labels)[0], seed=0)
    aff_uri, seg = str(tmp_path / "aff"), str(tmp_path / "seg")
    create_volume(aff_uri, aff.shape, np.float32, chunk_size=(32, 32, 32)).write(aff)
    base = [aff_uri, "-o", seg, "--block-size", "32", "-q", "--method", method,
            *(["--set", "ws.fragment_block=32"] if method == "ws" else [])]
    assert run_entry_point("pytc-decode", app, [*base, "--step", "label"]) == 0
    files = list((tmp_path / "seg" / "pytc_decode").glob("labels_*"))
    assert len(files) == 8
    per_voxel = sum(p.stat().st_size for p in files) / aff[0].size
    assert per_voxel < 0.5
    for step in ("reduce", "relabel"):
        assert run_entry_point("pytc-decode", app, [*base, "--step", step]) == 0
    if method == "cc":
        np.testing.assert_array_equal(open_volume(seg).read(), affinity_cc(aff))
