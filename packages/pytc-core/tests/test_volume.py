"""Round trips and bad input for every volume format."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from pytc_core import BBox, UserError, create_volume, open_volume, plan_blocks, volume_exists
from pytc_core.volume import parse_uri, sidecar_path

FORMATS = {
    "precomputed": lambda d, n: str(d / f"{n}_layer"),
    "file-uri": lambda d, n: f"file://{d}/{n}_uri_layer",
    "hdf5": lambda d, n: f"{d}/vols.h5:group/{n}",
    "zarr3": lambda d, n: str(d / f"{n}.zarr"),
    "zarr2": lambda d, n: str(d / f"{n}_v2.zarr"),
    "zarr-inner": lambda d, n: str(d / "store.zarr" / n),
    "tiff": lambda d, n: str(d / f"{n}.tif"),
    "npy": lambda d, n: str(d / f"{n}.npy"),
}


def _segmentation() -> np.ndarray:
    rng = np.random.default_rng(1)
    seg = rng.integers(0, 5, size=(10, 12, 14), dtype=np.uint64)
    seg[seg == 4] = np.uint64(2**64 - 1)  # ids near 2^64 must survive
    seg[seg == 3] = np.uint64(2**63 + 12345)
    return seg


def _affinities() -> np.ndarray:
    return np.random.default_rng(2).random((3, 10, 12, 14), dtype=np.float32)


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("kind", ["seg", "aff"])
def test_round_trip_preserves_values_dtype_voxel_size_offset(tmp_path, fmt, kind):
    data = _segmentation() if kind == "seg" else _affinities()
    uri = FORMATS[fmt](tmp_path, kind)
    vol = create_volume(uri, data.shape, data.dtype, voxel_size=(40.0, 8.0, 4.0), offset=(5, -3, 100),
                        chunk_size=(4, 8, 8), layer_type="segmentation" if kind == "seg" else "image",
                        zarr_format=2 if fmt == "zarr2" else 3)
    # written block by block on the chunk grid, as the stages do
    for box in plan_blocks(vol.bbox, (4, 8, 8)):
        sl = box.relative_to(vol.offset)
        vol.write(data[(..., *sl)], box.start)
    back = open_volume(uri)
    assert back.shape == data.shape
    assert back.dtype == data.dtype
    assert back.voxel_size == (40.0, 8.0, 4.0)
    assert back.offset == (5, -3, 100)
    assert back.num_channels == (3 if kind == "aff" else None)
    np.testing.assert_array_equal(back.read(), data)
    box = BBox((6, 0, 103), (9, 5, 110))
    np.testing.assert_array_equal(back.read(box), data[(..., slice(1, 4), slice(3, 8), slice(3, 10))])


def test_zarr2_is_really_format_2(tmp_path):
    uri = str(tmp_path / "a.zarr")
    create_volume(uri, (4, 4, 4), "uint8", zarr_format=2)
    assert (tmp_path / "a.zarr" / ".zgroup").exists() and (tmp_path / "a.zarr" / "0" / ".zarray").exists()
    create_volume(str(tmp_path / "b.zarr"), (4, 4, 4), "uint8")
    assert json.loads((tmp_path / "b.zarr" / "0" / "zarr.json").read_text())["zarr_format"] == 3


def test_precomputed_is_readable_by_cloudvolume_in_xyz(tmp_path):
    from cloudvolume import CloudVolume

    data = np.arange(2 * 3 * 4, dtype=np.uint32).reshape(2, 3, 4)  # (z, y, x)
    uri = str(tmp_path / "layer")
    create_volume(uri, data.shape, data.dtype, voxel_size=(30, 20, 10), layer_type="segmentation").write(data)
    cv = CloudVolume(f"file://{uri}")
    assert tuple(cv.shape[:3]) == (4, 3, 2)  # x, y, z
    assert tuple(cv.resolution) == (10, 20, 30)
    np.testing.assert_array_equal(np.asarray(cv[:, :, :])[..., 0], data.transpose(2, 1, 0))


def test_precomputed_chunk_writes_are_atomic_and_aligned(tmp_path):
    uri = str(tmp_path / "layer")
    vol = create_volume(uri, (16, 16, 16), "uint8", chunk_size=(8, 8, 8))
    with pytest.raises(ValueError, match="not aligned"):
        vol.write(np.ones((8, 8, 8), np.uint8), (4, 0, 0))
    vol.write(np.ones((8, 16, 16), np.uint8), (8, 0, 0))
    files = sorted(p.name for p in (tmp_path / "layer" / vol.key).iterdir())
    assert len(files) == 4 and not [f for f in files if "tmp" in f]
    assert vol.chunk_exists(BBox((8, 0, 0), (16, 8, 8)))
    assert not vol.chunk_exists(BBox((0, 0, 0), (8, 8, 8)))
    with pytest.raises(UserError, match=r"layer is missing chunk 1.0_1.0_1.0/0-8_0-8_0-8 .*--fill-missing"):
        open_volume(uri).read()  # a missing chunk of an input is an error, naming the first
    assert open_volume(uri).read(BBox((8, 0, 0), (16, 16, 16))).min() == 1
    out = open_volume(uri, fill_missing=True).read()  # a layer sparse on purpose
    assert out[:8].sum() == 0 and out[8:].min() == 1  # unwritten chunks read as 0
    assert vol.read()[:8].sum() == 0  # the writer's own new volume reads as zeros


@pytest.mark.parametrize("fmt", ["precomputed", "hdf5", "zarr3", "tiff", "npy"])
def test_existing_output_needs_overwrite(tmp_path, fmt):
    uri = FORMATS[fmt](tmp_path, "x")
    create_volume(uri, (4, 4, 4), "uint8").write(np.full((4, 4, 4), 7, np.uint8))
    with pytest.raises(UserError, match="already exists.*--overwrite"):
        create_volume(uri, (4, 4, 4), "uint8")
    assert open_volume(uri).read().min() == 7  # untouched
    again = create_volume(uri, (4, 4, 4), "uint8", exist_ok=True)  # resume
    assert again.read().min() == 7
    fresh = create_volume(uri, (2, 4, 4), "uint16", overwrite=True)
    assert fresh.shape == (2, 4, 4) and fresh.read().max() == 0


def test_hdf5_errors_list_datasets(tmp_path):
    path = tmp_path / "f.h5"
    with h5py.File(path, "w") as fh:
        fh["raw"] = np.zeros((2, 2, 2), np.uint8)
        fh["labels"] = np.zeros((2, 2, 2), np.uint8)
    with pytest.raises(UserError, match=r"no dataset.*labels, raw"):
        open_volume(str(path))
    with pytest.raises(UserError, match=r"'lables' not found.*labels, raw"):
        open_volume(f"{path}:lables")
    assert open_volume(f"{path}:raw").shape == (2, 2, 2)


@pytest.mark.parametrize("uri", ["missing_layer", "missing.h5:raw", "missing.zarr", "missing.tif", "missing.npy"])
def test_missing_input_is_a_user_error(tmp_path, uri):
    with pytest.raises(UserError, match="no such"):
        open_volume(str(tmp_path / uri))


def test_two_dimensional_data_is_refused(tmp_path):
    np.save(tmp_path / "img.npy", np.zeros((5, 5), np.uint8))
    with pytest.raises(UserError, match=r"2D.*needs a 3D"):
        open_volume(str(tmp_path / "img.npy"))


def test_precomputed_info_missing_or_corrupt(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="info' file is missing"):
        open_volume(str(tmp_path / "empty"))
    layer = tmp_path / "layer"
    create_volume(str(layer), (4, 4, 4), "uint8")
    (layer / "info").write_text("{not json")
    with pytest.raises(UserError, match="info' file is corrupt"):
        open_volume(str(layer))
    (layer / "info").write_text(json.dumps({"scales": []}))
    with pytest.raises(UserError, match="corrupt"):
        open_volume(str(layer))


def test_reading_outside_the_volume_is_refused(tmp_path):
    vol = create_volume(str(tmp_path / "a.npy"), (4, 4, 4), "uint8", offset=(10, 10, 10))
    with pytest.raises(UserError, match="outside"):
        vol.read(BBox((0, 0, 0), (4, 4, 4)))


def test_uri_parsing():
    assert parse_uri("a/b.h5:raw").format == "hdf5"
    assert parse_uri("a/b.h5:raw").inner == "raw"
    assert parse_uri("gs://bucket/layer").format == "precomputed"
    assert parse_uri("x.zarr/s0").inner == "s0"
    assert parse_uri("/data/layer").format == "precomputed"
    assert parse_uri("v.TIFF").format == "tiff"


def test_sidecar_paths(tmp_path):
    assert sidecar_path(str(tmp_path / "layer"), "c.toml") == tmp_path / "layer" / "c.toml"
    assert sidecar_path(f"{tmp_path}/f.h5:a/b", "c.toml") == tmp_path / "f.h5.a_b.c.toml"
    assert sidecar_path(str(tmp_path / "v.npy"), "c.toml") == tmp_path / "v.npy.c.toml"
    assert not volume_exists(str(tmp_path / "nothing"))


def test_real_em_volume_reads_lazily():
    from pathlib import Path

    path = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "flyem_medulla_250.h5"
    if not path.exists():
        pytest.skip("shared data not present")
    vol = open_volume(f"{path}:labels")
    assert vol.shape == (250, 250, 250) and vol.voxel_size == (10.0, 10.0, 10.0)
    block = vol.read(BBox((175, 0, 0), (180, 16, 16)))
    assert block.shape == (5, 16, 16) and block.dtype == np.uint16 and block.max() > 0


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_integer_writes_that_would_wrap_are_refused(tmp_path, fmt):
    uri = FORMATS[fmt](tmp_path, "narrow")
    vol = create_volume(uri, (4, 4, 4), "uint32", zarr_format=2 if fmt == "zarr2" else 3)
    ids = np.full((4, 4, 4), 7, np.uint64)
    ids[1, 2, 3] = 2**32 + 5  # would be stored as 5 by a plain cast
    with pytest.raises(ValueError, match=r"7\.\.4294967301 do not fit uint32"):
        vol.write(ids)
    assert open_volume(uri, fill_missing=True).read().max() == 0  # nothing written
    negative = np.zeros((4, 4, 4), np.int64)
    negative[0, 0, 0] = -1
    with pytest.raises(ValueError, match="do not fit uint32"):
        vol.write(negative)
    ids[1, 2, 3] = 2**32 - 1  # fits: stored exactly
    vol.write(ids)
    back = open_volume(uri).read()
    assert back.dtype == np.uint32 and back[1, 2, 3] == 2**32 - 1 and back[0, 0, 0] == 7


def test_casts_into_floats_are_checked_too():
    from pytc_core.volume.base import cast_losslessly

    assert cast_losslessly(np.array([2**24], np.int64), np.dtype("float32")).item() == 2**24
    with pytest.raises(ValueError, match="do not fit float32"):
        cast_losslessly(np.array([2**24 + 1], np.int64), np.dtype("float32"))
    with pytest.raises(ValueError, match="overflow float32"):
        cast_losslessly(np.array([1e300]), np.dtype("float32"))
    with pytest.raises(ValueError, match="cannot store float32"):
        cast_losslessly(np.array([1.0], np.float32), np.dtype("uint8"))
    assert cast_losslessly(np.array([True]), np.dtype("uint8")).item() == 1
