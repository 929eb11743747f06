"""pytc-infer checks its input against the checkpoint's data contract (voxel size, levels of a
multiscale input, intensities), through the real command."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pytc_core.cli import run_entry_point
from pytc_core.contract import DataContract, IntensityStats
from pytc_core.normalize import RawNormalization
from pytc_core.volume import open_volume, volume_exists
from pytc_infer.cli import app

TINY = {"architecture": "monai_unet", "in_channels": 1, "out_channels": 3, "filters": [2, 4],
        "num_res_units": 0}


def run(args, capsys):
    code = run_entry_point("pytc-infer", app, [str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def contract_ckpt(tmp_path_factory, helpers) -> Path:
    """A tiny model whose contract says: trained at 8x8x8 nm on uint8 raw 0-255 (auto)."""
    import torch

    from pytc_core.models import build_model, save_checkpoint

    torch.manual_seed(0)
    contract = DataContract((8.0, 8.0, 8.0), "uint8", IntensityStats.of(helpers.make_raw()),
                            RawNormalization("auto", dtype="uint8"),
                            ((-1, 0, 0), (0, -1, 0), (0, 0, -1)), (16, 16, 16))
    config = {"model": TINY, "data": {"patch_size": [16, 16, 16]},
              "data_contract": contract.to_dict()}
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "c.ckpt", build_model(TINY), config)


def _layer(path: Path, helpers, voxel, dtype=np.uint8) -> str:
    return helpers.write_layer(str(path), helpers.make_raw((32, 32, 32)).astype(dtype),
                               voxel=voxel)


def _two_mips(path: Path, helpers) -> str:
    """A 4 nm layer whose mip 1 is the 8 nm 2x subsampling."""
    from cloudvolume import CloudVolume

    raw = helpers.make_raw((64, 32, 32))
    uri = helpers.write_layer(str(path), raw, voxel=(4.0, 4.0, 4.0))
    cv = CloudVolume("file://" + uri)
    cv.add_scale((2, 2, 2), chunk_size=(16, 16, 16))
    cv.commit_info()
    CloudVolume("file://" + uri, mip=1)[:, :, :] = np.transpose(raw[::2, ::2, ::2], (2, 1, 0))[..., None]
    return uri


def test_a_4nm_input_is_refused_for_an_8nm_model_unless_allowed(tmp_path, contract_ckpt,
                                                                   helpers, capsys):
    raw = _layer(tmp_path / "raw4", helpers, (4.0, 4.0, 4.0))
    out = tmp_path / "aff"
    proc = subprocess.run([sys.executable, "-c", "from pytc_infer.cli import main; main()",
                           "-c", contract_ckpt, "-i", raw, "-o", out],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"{raw} has voxel size 4x4x4 nm but the model was trained at 8x8x8 nm" in proc.stderr
    assert "--allow-resolution-mismatch" in proc.stderr and "--voxel-size" in proc.stderr
    assert not volume_exists(str(out))

    code, stdout, err = run(["-c", contract_ckpt, "-i", raw, "-o", out,
                             "--allow-resolution-mismatch"], capsys)
    assert code == 0 and stdout.strip() == str(out)
    assert "is 4x4x4 nm but the model was trained at 8x8x8 nm" in err
    assert open_volume(str(out)).voxel_size == (4.0, 4.0, 4.0)

    # metadata that is wrong, corrected by hand: accepted, and the output carries it
    code, stdout, err = run(["-c", contract_ckpt, "-i", raw, "-o", tmp_path / "aff8",
                             "--voxel-size", "8,8,8"], capsys)
    assert code == 0, err
    assert open_volume(str(tmp_path / "aff8")).voxel_size == (8.0, 8.0, 8.0)


def test_a_multiscale_input_is_read_at_the_level_that_matches(tmp_path, contract_ckpt, helpers,
                                                               capsys):
    raw = _two_mips(tmp_path / "raw", helpers)
    code, stdout, err = run(["-c", contract_ckpt, "-i", raw], capsys)
    assert code == 0, err
    assert f"reading its level {raw}@mip=1 (8x8x8 nm)" in err
    out = open_volume(stdout.strip())
    assert stdout.strip() == raw + "_mip1_affinities"
    assert out.shape == (3, 32, 16, 16) and out.voxel_size == (8.0, 8.0, 8.0)
    # the same as naming the level by hand
    code, stdout2, err = run(["-c", contract_ckpt, "-i", raw + "@mip=1", "-o", tmp_path / "b"],
                             capsys)
    assert code == 0, err
    assert np.array_equal(open_volume(stdout2.strip()).read(out.bbox), out.read(out.bbox))


def test_uint16_holding_uint8_values_warns_with_numbers_and_fails_under_strict(
        tmp_path, contract_ckpt, helpers, capsys):
    raw = _layer(tmp_path / "raw16", helpers, (8.0, 8.0, 8.0), np.uint16)
    code, stdout, err = run(["-c", contract_ckpt, "-i", raw, "-o", tmp_path / "a"], capsys)
    assert code == 0 and stdout.strip() == str(tmp_path / "a")
    # the values themselves match the training data's; divided by 65535 instead of 255 they
    # span about 257x less (the samples differ a little: 240-280x)
    m = re.search(r"the input \(uint16, values (\d+)-(\d+) .* spans ([\d.e-]+)-([\d.e-]+) "
                  r"\(p1-p99\), (\d+)x narrower than the training data \(uint8, values 0-255", err)
    assert m is not None, err
    assert 0 <= int(m[1]) < int(m[2]) <= 255 and 240 <= int(m[5]) <= 280
    assert float(m[4]) < 255 / 65535
    code, stdout, err = run(["-c", contract_ckpt, "-i", raw, "-o", tmp_path / "b", "--strict"],
                            capsys)
    assert code == 2 and stdout == "" and err.count("\n") == 1
    assert err.startswith("pytc-infer: error: ") and "x narrower than the training data" in err
    assert not volume_exists(str(tmp_path / "b"))


def test_a_matching_input_passes_silently_and_an_old_checkpoint_gets_one_note(
        tmp_path, contract_ckpt, tiny_ckpt, helpers, capsys):
    raw = _layer(tmp_path / "raw8", helpers, (8.0, 8.0, 8.0))
    code, _, err = run(["-c", contract_ckpt, "-i", raw, "-o", tmp_path / "a"], capsys)
    assert code == 0 and "voxel size" not in err and "narrower" not in err, err
    code, _, err = run(["-c", tiny_ckpt, "-i", raw, "-o", tmp_path / "b"], capsys)
    assert code == 0 and err.count("stores no data contract") == 1, err


def test_bad_mip_and_bad_voxel_size_are_one_line_exit_2(tmp_path, contract_ckpt, helpers, capsys):
    raw = _two_mips(tmp_path / "raw", helpers)
    code, out, err = run(["-c", contract_ckpt, "-i", raw + "@mip=5", "-o", tmp_path / "a"],
                         capsys)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "has no mip 5; it has mip 0 (4x4x4 nm), mip 1 (8x8x8 nm)" in err
    code, out, err = run(["-c", contract_ckpt, "-i", raw, "-o", tmp_path / "a",
                          "--voxel-size", "8,8"], capsys)
    assert code == 2 and err.count("\n") == 1 and "bad --voxel-size '8,8'" in err
    code, out, err = run(["-c", contract_ckpt, "-i", raw, "-o", tmp_path / "a",
                          "--bbox", "0,0,0,16,16,16"], capsys)
    last = err.splitlines()[-1]  # after the note that the level matches
    assert code == 2 and last.startswith("pytc-infer: error: ") and "pass that level as --input" in last
    assert not volume_exists(str(tmp_path / "a"))


def test_an_ome_zarr_input_is_read_at_its_level_that_matches(tmp_path, contract_ckpt, helpers,
                                                             capsys):
    import zarr

    from pytc_core.volume import create_volume

    raw = helpers.make_raw((64, 32, 32))
    uri = str(tmp_path / "x.zarr")
    create_volume(uri, raw.shape, raw.dtype, voxel_size=(4, 4, 4)).write(raw)
    group = zarr.open_group(uri, mode="a")
    group.create_array("1", shape=(32, 16, 16), dtype=np.uint8, chunks=(16, 16, 16))[:] = \
        raw[::2, ::2, ::2]
    attrs = dict(group.attrs)
    ms = attrs["ome"]["multiscales"] if "ome" in attrs else attrs["multiscales"]
    ms[0]["datasets"].append({"path": "1", "coordinateTransformations": [
        {"type": "scale", "scale": [8.0, 8.0, 8.0]}]})
    group.attrs.update(attrs)
    code, stdout, err = run(["-c", contract_ckpt, "-i", uri, "-o", tmp_path / "aff"], capsys)
    assert code == 0, err
    assert f"reading its level {uri}/1 (8x8x8 nm)" in err
    out = open_volume(stdout.strip())
    assert out.shape == (3, 32, 16, 16) and out.voxel_size == (8.0, 8.0, 8.0)


def test_an_h5_without_voxel_size_says_so_and_takes_voxel_size(tmp_path, contract_ckpt, helpers,
                                                                 capsys):
    """An HDF5 dataset with no voxel-size attribute reads as 1 nm: the refusal says why, and
    ``--voxel-size`` (what the quickstart passes for the gala volume) runs it."""
    import h5py

    path = tmp_path / "raw.h5"
    with h5py.File(path, "w") as f:
        f["raw"] = helpers.make_raw((32, 32, 32))
    uri = f"{path}:raw"
    code, stdout, err = run(["-c", contract_ckpt, "-i", uri, "-o", tmp_path / "a"], capsys)
    assert code == 2 and stdout == ""
    assert "has voxel size 1x1x1 nm but the model was trained at 8x8x8 nm" in err
    assert "a file that states no voxel size reads as 1x1x1 nm" in err
    code, stdout, err = run(["-c", contract_ckpt, "-i", uri, "-o", tmp_path / "b",
                             "--voxel-size", "8,8,8"], capsys)
    assert code == 0, err
    assert open_volume(stdout.strip()).shape == (3, 32, 32, 32)
