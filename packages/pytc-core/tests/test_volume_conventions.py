"""The field's metadata conventions, on files written with h5py, zarr and tifffile directly:
funlib/CREMI ``resolution`` + ``offset`` (nm), OME-Zarr NGFF 0.4/0.5 multiscales, ImageJ TIFF
calibration, percent-encoded ``file://`` URIs. And pytc's outputs read by those conventions."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import tifffile
import zarr

from pytc_core import BBox, UserError, create_volume, open_volume


def test_cremi_layout_offset_is_in_nm(tmp_path):
    path = tmp_path / "sample_A.hdf"
    raw = np.arange(6 * 8 * 8, dtype=np.uint8).reshape(6, 8, 8)
    ids = np.arange(4 * 6 * 6, dtype=np.uint64).reshape(4, 6, 6)
    with h5py.File(path, "w") as fh:
        fh["volumes/raw"] = raw
        fh["volumes/raw"].attrs["resolution"] = np.array([40.0, 4.0, 4.0])
        fh["volumes/labels/neuron_ids"] = ids
        fh["volumes/labels/neuron_ids"].attrs["resolution"] = np.array([40.0, 4.0, 4.0])
        fh["volumes/labels/neuron_ids"].attrs["offset"] = np.array([80.0, 4.0, 8.0])  # nm
    vol = open_volume(f"{path}:volumes/labels/neuron_ids")
    assert vol.voxel_size == (40.0, 4.0, 4.0)
    assert vol.offset == (2, 1, 2)  # voxels, not (80, 4, 8)
    np.testing.assert_array_equal(vol.read(BBox((2, 1, 2), (3, 2, 4))), ids[:1, :1, :2])
    image = open_volume(f"{path}:volumes/raw")
    assert image.voxel_size == (40.0, 4.0, 4.0) and image.offset == (0, 0, 0)


def test_offset_that_is_not_whole_voxels_is_refused(tmp_path):
    path = tmp_path / "f.h5"
    with h5py.File(path, "w") as fh:
        fh["a"] = np.zeros((2, 2, 2), np.uint8)
        fh["a"].attrs["resolution"] = [40, 4, 4]
        fh["a"].attrs["offset"] = [41, 0, 0]
    with pytest.raises(UserError, match=r"offset \[41.0, 0.0, 0.0\] nm is not a whole number of voxels"):
        open_volume(f"{path}:a")


def test_funlib_zarr_with_units_and_legacy_pytc_attributes(tmp_path):
    store = tmp_path / "funlib.zarr"
    group = zarr.open_group(str(store), mode="w", zarr_format=2)
    group.create_array("old", shape=(2, 2, 2), dtype="uint8",
                       attributes={"resolution": [40, 4, 4], "offset": [400, 40, 40]})
    group.create_array("new", shape=(2, 2, 2), dtype="uint8",  # funlib.persistence >= 0.5
                       attributes={"voxel_size": [0.04, 0.004, 0.004], "offset": [0.4, 0.04, 0.04],
                                   "axis_names": ["z", "y", "x"], "units": ["um", "um", "um"]})
    group.create_array("pytc_legacy", shape=(2, 2, 2), dtype="uint8",  # offset in voxels
                       attributes={"axes": "zyx", "voxel_size": [40, 4, 4], "offset": [10, 10, 10]})
    for name in ("old", "new", "pytc_legacy"):
        vol = open_volume(str(store / name))
        assert vol.voxel_size == pytest.approx((40.0, 4.0, 4.0)), name
        assert vol.offset == (10, 10, 10), name


@pytest.mark.parametrize("uri", ["out.h5:seg", "out.zarr", "out_v2.zarr", "out.npy"])
def test_outputs_carry_funlib_resolution_and_offset_in_nm(tmp_path, uri):
    create_volume(str(tmp_path / uri), (2, 3, 4), "uint64", voxel_size=(40, 8, 4), offset=(5, -3, 100),
                  zarr_format=2 if "v2" in uri else 3)
    if uri.endswith(".h5:seg"):
        with h5py.File(tmp_path / "out.h5") as fh:
            attrs = dict(fh["seg"].attrs)
    elif ".zarr" in uri:
        attrs = dict(zarr.open_array(str(tmp_path / uri), path="0", mode="r").attrs)
    else:
        import json

        attrs = json.loads((tmp_path / "out.npy.json").read_text())
    assert list(attrs["resolution"]) == [40, 8, 4]
    assert list(attrs["offset"]) == [200, -24, 400]  # nm: what funlib/daisy/gunpowder read
    assert list(attrs["voxel_offset"]) == [5, -3, 100]


def _ngff_v04(store, unit="micrometer"):
    group = zarr.open_group(str(store), mode="w", zarr_format=2)
    group.attrs["multiscales"] = [{
        "version": "0.4", "name": "em",
        "axes": [{"name": a, "type": "space", "unit": unit} for a in "zyx"],
        "datasets": [
            {"path": "0", "coordinateTransformations": [
                {"type": "scale", "scale": [0.04, 0.004, 0.004]},
                {"type": "translation", "translation": [0.4, 0.04, 0.04]}]},
            {"path": "1", "coordinateTransformations": [
                {"type": "scale", "scale": [0.04, 0.008, 0.008]},
                {"type": "translation", "translation": [0.4, 0.048, 0.048]}]},
        ]}]
    full = np.arange(4 * 8 * 8, dtype=np.uint16).reshape(4, 8, 8)
    group.create_array("0", shape=full.shape, dtype=full.dtype, chunks=(2, 4, 4))[:] = full
    group.create_array("1", shape=(4, 4, 4), dtype=full.dtype, chunks=(2, 4, 4))[:] = full[:, ::2, ::2]
    return full


def test_ome_zarr_0_4_levels_voxel_size_and_offset(tmp_path):
    store = tmp_path / "image.zarr"
    full = _ngff_v04(store)
    level0 = open_volume(str(store))
    assert level0.shape == (4, 8, 8)
    assert level0.voxel_size == pytest.approx((40.0, 4.0, 4.0))
    assert level0.offset == (10, 10, 10)
    np.testing.assert_array_equal(level0.read(), full)
    level1 = open_volume(f"{store}/1")
    assert level1.shape == (4, 4, 4)
    assert level1.voxel_size == pytest.approx((40.0, 8.0, 8.0))
    assert level1.offset == (10, 6, 6)
    assert open_volume(f"{store}/0").offset == (10, 10, 10)


def test_ome_zarr_0_5_with_channels_and_a_multiscale_transform(tmp_path):
    store = tmp_path / "aff.zarr"
    group = zarr.open_group(str(store), mode="w", zarr_format=3)
    group.attrs["ome"] = {"version": "0.5", "multiscales": [{
        "axes": [{"name": "c", "type": "channel"}] + [{"name": a, "type": "space", "unit": "nanometer"}
                                                     for a in "zyx"],
        "datasets": [{"path": "s0", "coordinateTransformations": [
            {"type": "scale", "scale": [1, 1, 2, 2]}]}],
        "coordinateTransformations": [{"type": "scale", "scale": [1, 30, 4, 4]},
                                      {"type": "translation", "translation": [0, 90, 0, -16]}]}]}
    aff = np.random.default_rng(0).random((3, 2, 4, 4), dtype=np.float32)
    group.create_array("s0", shape=aff.shape, dtype=aff.dtype, chunks=(1, 2, 4, 4),
                       dimension_names=["c", "z", "y", "x"])[:] = aff
    vol = open_volume(str(store))
    assert vol.shape == (3, 2, 4, 4) and vol.num_channels == 3
    assert vol.voxel_size == (30.0, 8.0, 8.0)
    assert vol.offset == (3, 0, -2)
    np.testing.assert_array_equal(vol.read(), aff)


def test_ome_zarr_with_a_time_axis_is_refused(tmp_path):
    store = tmp_path / "t.zarr"
    group = zarr.open_group(str(store), mode="w", zarr_format=2)
    group.attrs["multiscales"] = [{"version": "0.4", "axes": [{"name": a} for a in "tzyx"],
                                   "datasets": [{"path": "0", "coordinateTransformations": [
                                       {"type": "scale", "scale": [1, 1, 1, 1]}]}]}]
    group.create_array("0", shape=(2, 2, 2, 2), dtype="uint8")
    with pytest.raises(UserError, match=r"OME-Zarr axes \['t', 'z', 'y', 'x'\]"):
        open_volume(str(store))


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_zarr_outputs_are_ome_zarr(tmp_path, zarr_format):
    uri = str(tmp_path / "out.zarr" / "aff")
    create_volume(uri, (3, 2, 3, 4), "float32", voxel_size=(40, 8, 4), offset=(5, -3, 100),
                  zarr_format=zarr_format)
    attrs = dict(zarr.open_group(uri, mode="r").attrs)
    if zarr_format == 2:
        (ms,) = attrs["multiscales"]
        assert ms["version"] == "0.4"
    else:
        assert attrs["ome"]["version"] == "0.5"
        (ms,) = attrs["ome"]["multiscales"]
    assert [a["name"] for a in ms["axes"]] == ["c", "z", "y", "x"]
    assert ms["axes"][1]["unit"] == "nanometer"
    (level,) = ms["datasets"]
    assert level["path"] == "0"
    scale, translation = level["coordinateTransformations"]
    assert scale == {"type": "scale", "scale": [1.0, 40.0, 8.0, 4.0]}
    assert translation == {"type": "translation", "translation": [0.0, 200.0, -24.0, 400.0]}
    assert zarr.open_array(uri, path="0", mode="r").shape == (3, 2, 3, 4)


@pytest.mark.parametrize(("zarr_format", "version"), [(2, "0.4"), (3, "0.5")])
def test_zarr_outputs_validate_as_ngff_images(tmp_path, zarr_format, version):
    """ome-zarr-models (pydantic models of the NGFF spec) accepts the outputs and reads the
    same scale and translation back."""
    from ome_zarr_models import open_ome_zarr

    uri = str(tmp_path / "seg.zarr")
    create_volume(uri, (2, 3, 4), "uint64", voxel_size=(40, 8, 4), offset=(5, -3, 100),
                  zarr_format=zarr_format)
    image = open_ome_zarr(zarr.open_group(uri, mode="r"))
    assert image.ome_zarr_version == version
    (multiscale,) = image.ome_attributes.multiscales if version == "0.5" else image.attributes.multiscales
    scale, translation = multiscale.datasets[0].coordinateTransformations
    assert list(scale.scale) == [40.0, 8.0, 4.0]
    assert list(translation.translation) == [200.0, -24.0, 400.0]


def test_imagej_tiff_calibration_is_read(tmp_path):
    data = np.arange(3 * 4 * 5, dtype=np.uint16).reshape(3, 4, 5)
    path = tmp_path / "fiji.tif"
    tifffile.imwrite(path, data, imagej=True, resolution=(1 / 0.004, 1 / 0.008),
                     metadata={"spacing": 0.04, "unit": "micron", "axes": "ZYX"})
    vol = open_volume(str(path))
    assert vol.voxel_size == pytest.approx((40.0, 8.0, 4.0))
    assert vol.offset == (0, 0, 0)
    np.testing.assert_array_equal(vol.read(), data)
    uncalibrated = tmp_path / "plain.tif"
    tifffile.imwrite(uncalibrated, data, imagej=True)
    assert open_volume(str(uncalibrated)).voxel_size == (1.0, 1.0, 1.0)


def test_tiff_outputs_carry_imagej_calibration(tmp_path):
    path = tmp_path / "img.tif"
    create_volume(str(path), (2, 3, 4), "uint8", voxel_size=(40, 8, 4), offset=(5, 0, 7))
    with tifffile.TiffFile(path) as tif:
        assert tif.is_imagej
        assert tif.imagej_metadata["spacing"] == 40.0 and tif.imagej_metadata["unit"] == "nm"
        assert tif.imagej_metadata["zorigin"] == -5 and tif.imagej_metadata["xorigin"] == -7
        assert tif.pages[0].resolution == (0.25, 0.125)  # pixels per nm, x then y
    labels = tmp_path / "labels.tif"  # uint64: not an ImageJ type, x/y size in the standard tags
    create_volume(str(labels), (2, 3, 4), "uint64", voxel_size=(40, 8, 4))
    with tifffile.TiffFile(labels) as tif:
        assert not tif.is_imagej
        assert tif.pages[0].resolution == (2.5e6, 1.25e6) and tif.pages[0].resolutionunit == 3  # per cm
    assert open_volume(str(labels)).voxel_size == (40.0, 8.0, 4.0)


@pytest.mark.parametrize("name", ["seg.npy", "seg.h5:seg", "seg.zarr", "seg.tif", "layer"])
def test_file_uris_are_percent_decoded(tmp_path, name):
    folder = tmp_path / "my run"
    uri = f"file://{str(folder).replace(' ', '%20')}/{name}"
    vol = create_volume(uri, (2, 2, 2), "uint8", voxel_size=(4, 4, 4))
    vol.write(np.full((2, 2, 2), 3, np.uint8))
    assert (folder / name.split(":")[0]).exists()
    assert not (tmp_path / "my%20run").exists()
    assert open_volume(uri).read().min() == 3
    assert open_volume(str(folder / name)).read().min() == 3


def test_skeleton_layer_check_decodes_file_uris(tmp_path):
    from pytc_core.volume.skeleton_layer import is_precomputed_layer

    layer = tmp_path / "my skeletons"
    layer.mkdir()
    (layer / "info").write_text("{}")
    assert is_precomputed_layer(f"file://{str(layer).replace(' ', '%20')}")
    assert not is_precomputed_layer(f"file://{tmp_path}/other")
