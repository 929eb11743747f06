"""default_output_uri: one naming rule for every stage's default output."""

from __future__ import annotations

import pytest

from pytc_core import UserError
from pytc_core.volume.naming import default_output_uri


@pytest.mark.parametrize(("uri", "expected"), [
    # precomputed layers, local or remote: the same format, beside the layer
    ("/d/raw", "/d/raw_affinities"),
    ("/d/raw/", "/d/raw_affinities"),
    ("gs://lab/em/raw", "gs://lab/em/raw_affinities"),
    ("file:///d/raw", "file:///d/raw_affinities"),
    # zarr: the same format and place
    ("/d/x.zarr", "/d/x_affinities.zarr"),
    ("/d/x.zarr/raw", "/d/x.zarr/raw_affinities"),
    ("/d/x.zarr/volumes/raw", "/d/x.zarr/volumes/raw_affinities"),
    # single files: a precomputed layer beside the file, named after it
    ("/d/vol.h5:raw", "/d/vol_affinities"),
    ("/d/vol.HDF5:volumes/raw", "/d/vol_affinities"),
    ("/d/stack.tif", "/d/stack_affinities"),
    ("/d/raw.npy", "/d/raw_affinities"),
])
def test_infer_names(uri, expected):
    assert default_output_uri(uri, "_affinities") == expected


def test_a_pipeline_chains_the_names():
    aff = default_output_uri("/d/vol.h5:raw", "_affinities")
    assert default_output_uri(aff, "_seg") == "/d/vol_affinities_seg"
    assert default_output_uri("/d/x.zarr/aff", "_seg") == "/d/x.zarr/aff_seg"
    assert default_output_uri("/d/aff.npy", "_seg") == "/d/aff_seg"


def test_empty_uri_is_a_user_error():
    with pytest.raises(UserError, match="empty volume URI"):
        default_output_uri(" ", "_seg")
