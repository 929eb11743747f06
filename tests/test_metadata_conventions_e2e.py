"""Ground truth in the field's conventions (OME-Zarr in µm, a CREMI-style HDF5 with offsets in
nm), written with zarr/h5py directly, scored by pytc-eval against a pytc segmentation placed in
the same world coordinates: the volumes line up and the voxel size is the file's, in nm."""

from __future__ import annotations

import json

import h5py
import numpy as np
import zarr

from pytc_core import create_volume
from pytc_core.cli import run_entry_point

GT = np.zeros((4, 8, 8), np.uint32)
GT[:, :, :4], GT[:, :, 4:] = 1, 2


def _ome_zarr_gt(tmp_path) -> str:
    group = zarr.open_group(str(tmp_path / "gt.zarr"), mode="w", zarr_format=2)
    group.attrs["multiscales"] = [{
        "version": "0.4", "axes": [{"name": a, "type": "space", "unit": "micrometer"} for a in "zyx"],
        "datasets": [{"path": "0", "coordinateTransformations": [
            {"type": "scale", "scale": [0.04, 0.004, 0.004]},
            {"type": "translation", "translation": [0.4, 0.04, 0.04]}]}]}]
    group.create_array("0", shape=GT.shape, dtype=GT.dtype)[:] = GT
    return str(tmp_path / "gt.zarr")


def _cremi_gt(tmp_path) -> str:
    with h5py.File(tmp_path / "cremi.hdf", "w") as fh:
        fh["volumes/labels/neuron_ids"] = GT
        fh["volumes/labels/neuron_ids"].attrs["resolution"] = [40.0, 4.0, 4.0]
        fh["volumes/labels/neuron_ids"].attrs["offset"] = [400.0, 40.0, 40.0]
    return f"{tmp_path}/cremi.hdf:volumes/labels/neuron_ids"


def test_eval_reads_ome_zarr_and_cremi_ground_truth_in_nm(tmp_path, capsys):
    from pytc_eval.cli import app

    seg = GT.copy()
    seg[GT > 0] = 5  # one segment over both objects: a merge
    seg_uri = str(tmp_path / "seg.npy")
    create_volume(seg_uri, seg.shape, seg.dtype, voxel_size=(40, 4, 4), offset=(10, 10, 10)).write(seg)
    for gt_uri in (_ome_zarr_gt(tmp_path), _cremi_gt(tmp_path)):
        code = run_entry_point("pytc-eval", app, [seg_uri, "--gt", gt_uri, "--json"])
        out, err = capsys.readouterr()
        assert code == 0, err
        report = json.loads(out)
        assert report["voxel_size"] == [40.0, 4.0, 4.0]
        assert report["n_voxels"] == GT.size  # same world box: every voxel compared
        assert report["voi_split"] == 0.0 and report["voi_merge"] == 1.0  # one bit: 2 objects merged
