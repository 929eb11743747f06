"""A precomputed layer opens at any mip by URI: ``layer@mip=N``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pytc_core.errors import UserError
from pytc_core.volume import create_volume, open_volume, parse_uri
from pytc_core.volume.naming import default_output_uri


def two_mip_layer(path: Path, raw: np.ndarray, voxel=(4.0, 4.0, 4.0)) -> str:
    """A precomputed layer of ``raw`` at ``voxel`` nm (mip 0) and its 2x subsampling (mip 1)."""
    from cloudvolume import CloudVolume

    uri = str(path)
    create_volume(uri, raw.shape, raw.dtype, voxel_size=voxel, chunk_size=(16, 16, 16)).write(raw)
    cv = CloudVolume("file://" + uri)
    cv.add_scale((2, 2, 2), chunk_size=(16, 16, 16))
    cv.commit_info()
    CloudVolume("file://" + uri, mip=1)[:, :, :] = np.transpose(raw[::2, ::2, ::2], (2, 1, 0))[..., None]
    return uri


@pytest.fixture
def layer(tmp_path):
    raw = np.random.default_rng(0).integers(0, 255, (32, 32, 48), dtype=np.uint8)
    return two_mip_layer(tmp_path / "raw", raw), raw


def test_each_mip_opens_by_uri_with_its_shape_voxel_size_and_data(layer):
    uri, raw = layer
    v0, v1 = open_volume(uri), open_volume(uri + "@mip=1")
    assert v0.shape == (32, 32, 48) and v0.voxel_size == (4.0, 4.0, 4.0)
    assert v1.shape == (16, 16, 24) and v1.voxel_size == (8.0, 8.0, 8.0)
    assert np.array_equal(v1.read(v1.bbox), raw[::2, ::2, ::2])
    assert np.array_equal(open_volume(uri + "@mip=0").read(v0.bbox), raw)
    assert v0.levels == [(uri, (4.0, 4.0, 4.0)), (uri + "@mip=1", (8.0, 8.0, 8.0))]
    assert v1.levels == v0.levels
    assert open_volume("file://" + uri + "@mip=1").shape == (16, 16, 24)


def test_a_mip_that_does_not_exist_lists_those_that_do(layer):
    uri, _ = layer
    with pytest.raises(UserError) as err:
        open_volume(uri + "@mip=2")
    assert err.value.what == (f"{uri}@mip=2: the layer has no mip 2; it has mip 0 "
                                      "(4x4x4 nm), mip 1 (8x8x8 nm)")


def test_mip_is_only_for_precomputed_and_never_written(layer, tmp_path):
    uri, _ = layer
    with pytest.raises(UserError, match="@mip= names a scale of a precomputed layer"):
        parse_uri(str(tmp_path / "x.h5") + ":raw@mip=1")
    with pytest.raises(UserError, match="cannot create"):
        create_volume(uri + "@mip=1", (8, 8, 8), np.uint8, overwrite=True)
    assert json.loads((Path(uri) / "info").read_text())["scales"][1]["size"] == [24, 16, 16]
    assert default_output_uri(uri + "@mip=1", "_affinities") == uri + "_mip1_affinities"
    assert default_output_uri(uri, "_affinities") == uri + "_affinities"
