"""pytc-infer as a command: output URI on stdout, bad input, a killed run, the decode pipe."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pytc_core.cli import run_entry_point
from pytc_core.volume import create_volume, open_volume, volume_exists
from pytc_infer.cli import app


def run(args, capsys):
    code = run_entry_point("pytc-infer", app, [str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def raw_uri(tmp_path_factory, helpers) -> str:
    return helpers.write_layer(str(tmp_path_factory.mktemp("raw") / "raw"),
                               helpers.make_raw((24, 20, 28)))


def test_help_is_fast_and_does_not_import_torch():
    code = ("import sys; from pytc_core.cli import run_entry_point; from pytc_infer.cli import app;"
            "rc = run_entry_point('pytc-infer', app, ['--help']);"
            "assert 'torch' not in sys.modules, 'torch imported'; sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    for flag in ("--checkpoint", "--tta", "--memory-limit", "--blocks", "--overwrite", "--set",
                 "pytc-decode -"):
        assert flag in proc.stdout


def test_prints_the_output_uri_and_the_plan(tmp_path, tiny_ckpt, raw_uri, capsys):
    out_uri = str(tmp_path / "aff")
    code, out, err = run(["-c", tiny_ckpt, "-i", raw_uri, "-o", out_uri, "--tta", "flips-xy",
                          "--dtype", "uint8", "--precision", "bf16"], capsys)
    assert code == 0, err
    assert out == out_uri + "\n"
    assert "plan: blocks of" in err and "windows" in err
    aff = open_volume(out_uri)
    assert aff.shape == (3, 24, 20, 28) and aff.dtype == np.uint8
    # the same command again finds a finished output: replaced only with --overwrite
    code, out, err = run(["-c", tiny_ckpt, "-i", raw_uri, "-o", out_uri, "--tta", "flips-xy",
                          "--dtype", "uint8", "--precision", "bf16"], capsys)
    assert code == 2 and out == "" and "already exists" in err and "--overwrite" in err


def _bad(tmp_path: Path, args, capsys, *, output: str | None = None) -> str:
    out_uri = output or str(tmp_path / "out")
    code, out, err = run([*args, "-o", out_uri], capsys)
    assert code == 2 and out == ""
    assert err.startswith("pytc-infer: error: ") and err.count("\n") == 1, err
    if output is None:
        assert not volume_exists(out_uri), "a bad input must leave nothing behind"
    return err


def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, tiny_ckpt, raw_uri, capsys,
                                                         helpers):
    import torch

    err = _bad(tmp_path, ["-c", tmp_path / "missing.ckpt", "-i", raw_uri], capsys)
    assert "checkpoint not found" in err
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint at all")
    assert "is not a PyTorch checkpoint" in _bad(tmp_path, ["-c", junk, "-i", raw_uri], capsys)
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}}, other)
    assert "is not a pytc checkpoint" in _bad(tmp_path, ["-c", other, "-i", raw_uri], capsys)
    assert "no such volume" in _bad(tmp_path, ["-c", tiny_ckpt, "-i", tmp_path / "nope"], capsys)
    two = helpers.write_layer(str(tmp_path / "two"), np.zeros((2, 16, 16, 16), np.uint8))
    err = _bad(tmp_path, ["-c", tiny_ckpt, "-i", two], capsys)
    assert "has 2 channel(s)" in err and "takes 1" in err
    flat = tmp_path / "flat.npy"
    np.save(flat, np.zeros((16, 16), np.uint8))
    _bad(tmp_path, ["-c", tiny_ckpt, "-i", flat], capsys)
    err = _bad(tmp_path, ["-c", tiny_ckpt, "-i", raw_uri, "--bbox", "0,0,0,30,10,10"], capsys)
    assert "lies outside" in err
    err = _bad(tmp_path, ["-c", tiny_ckpt, "-i", raw_uri, "--patch", "15"], capsys)
    assert "15" in err and "patch" in err
    # MedNeXt runs a 16³ window with 1 voxel at its bottleneck, which GroupNorm refuses
    mednext = helpers.save_tiny_checkpoint(tmp_path / "mednext.ckpt", model={
        "architecture": "mednext_custom", "mednext_base_channels": 4, "mednext_exp_r": 1,
        "mednext_block_counts": [1] * 9, "in_channels": 1, "out_channels": 3})
    err = _bad(tmp_path, ["-c", mednext, "-i", raw_uri], capsys)
    assert "cannot take patch (16, 16, 16)" in err and "--patch 16,32,32" in err
    err = _bad(tmp_path, ["-c", tiny_ckpt, "-i", raw_uri, "--memory-limit", "64KiB"], capsys)
    assert "too small for one 16x16x16 window" in err
    assert "overlap" in _bad(tmp_path, ["-c", tiny_ckpt, "-i", raw_uri, "--overlap", "1"], capsys)
    assert "tta" in _bad(tmp_path, ["-c", tiny_ckpt, "-i", raw_uri, "--tta", "rot90"], capsys)
    # an existing output that is not this checkpoint's prediction of this input
    foreign = str(tmp_path / "foreign")
    create_volume(foreign, (3, 24, 20, 28), np.float32)
    before = sorted(p.name for p in Path(foreign).rglob("*"))
    err = _bad(tmp_path, ["-c", tiny_ckpt, "-i", raw_uri], capsys, output=foreign)
    assert "already exists" in err and "--overwrite" in err and "resumed" in err
    assert sorted(p.name for p in Path(foreign).rglob("*")) == before


def test_default_output_is_beside_the_input_never_in_its_file(tmp_path, tiny_ckpt, helpers,
                                                              capsys):
    """pytc_core's one naming rule: an HDF5 input gets a precomputed layer named after the
    file, a zarr input a zarr array; both hold the same prediction."""
    raw = helpers.make_raw((16, 16, 16))
    predictions = []
    for uri, expected, fmt in ((f"{tmp_path}/em.h5:raw", tmp_path / "em_affinities",
                                "precomputed"),
                               (str(tmp_path / "em.zarr"), tmp_path / "em_affinities.zarr",
                                "zarr")):
        create_volume(uri, raw.shape, raw.dtype).write(raw)
        code, out, err = run(["-c", tiny_ckpt, "-i", uri, "-q"], capsys)
        assert code == 0, err
        assert out == f"{expected}\n"
        vol = open_volume(out.strip())
        assert vol.format == fmt and vol.shape == (3, 16, 16, 16)
        predictions.append(vol.read())
    np.testing.assert_array_equal(predictions[0], predictions[1])


@pytest.mark.slow
def test_other_settings_on_an_existing_prediction_need_overwrite(tmp_path, tiny_ckpt, raw_uri,
                                                                 capsys):
    out_uri = str(tmp_path / "aff")
    assert run(["-c", tiny_ckpt, "-i", raw_uri, "-o", out_uri], capsys)[0] == 0
    err = _bad(tmp_path, ["-c", tiny_ckpt, "-i", raw_uri, "--overlap", "0.5"], capsys,
               output=out_uri)
    assert "same checkpoint and input with other settings (overlap)" in err
    code, out, err = run(["-c", tiny_ckpt, "-i", raw_uri, "-o", out_uri, "--overlap", "0.5",
                          "--overwrite"], capsys)
    assert code == 0, err


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def _infer_cmd(*args) -> list[str]:
    return [sys.executable, "-c", "from pytc_infer.cli import main; main()", *map(str, args)]


@pytest.mark.slow
def test_sigkill_midway_then_rerun_equals_an_uninterrupted_run(tmp_path, helpers):
    ckpt = helpers.save_tiny_checkpoint(tmp_path / "m.ckpt", model={
        "architecture": "monai_unet", "in_channels": 1, "out_channels": 3, "filters": [8, 16],
        "num_res_units": 1})
    raw = helpers.write_layer(str(tmp_path / "raw"), helpers.make_raw((64, 48, 48)))
    args = ["-c", ckpt, "-i", raw, "--block-size", "16"]
    ref = tmp_path / "ref"
    subprocess.run(_infer_cmd(*args, "-q", "-o", ref), check=True, env=_env(), capture_output=True)
    out = tmp_path / "aff"
    proc = subprocess.Popen(_infer_cmd(*args, "-q", "-o", out), env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    markers = out / "pytc_progress"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if markers.is_dir() and len(list(markers.iterdir())) >= 3:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait()
    proc.stdout.close()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    done = len(list(markers.iterdir()))
    assert 3 <= done < 36
    # every block marked done has its data written (block = chunk = 16³; the killed run may
    # have been writing a later block behind the one it was computing)
    for marker in markers.iterdir():
        (z0, z1), (y0, y1), (x0, x1) = (tuple(r.split("-")) for r in marker.name.split("_")[1:])
        chunk = Path("8.0_8.0_40.0") / f"{x0}-{x1}_{y0}-{y1}_{z0}-{z1}"
        assert (out / chunk).read_bytes() == (ref / chunk).read_bytes(), marker.name
    chunks = {p: p.stat().st_mtime_ns for p in (out / "8.0_8.0_40.0").iterdir()}
    rerun = subprocess.run(_infer_cmd(*args, "-o", out), env=_env(), capture_output=True,
                           text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout == f"{out}\n"
    assert f"{36 - done} blocks predicted" in rerun.stderr
    assert f"{done} already done" in rerun.stderr
    # the finished blocks' chunks were not written again (block = chunk = 16³ here)
    assert sum(p.stat().st_mtime_ns == t for p, t in chunks.items()) >= done
    np.testing.assert_array_equal(open_volume(str(out)).read(), open_volume(str(ref)).read())


@pytest.mark.slow
def test_uint8_affinities_pipe_into_pytc_decode(tmp_path, tiny_ckpt, raw_uri):
    from pytc_decode import affinity_cc

    infer = subprocess.Popen(_infer_cmd("-c", tiny_ckpt, "-i", "-", "-o", tmp_path / "aff",
                                        "--dtype", "uint8", "-q"),
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=_env())
    infer.stdin.write(f"{raw_uri}\n".encode())
    infer.stdin.close()
    decode = subprocess.run([sys.executable, "-c", "from pytc_decode.cli import main; main()",
                             "-", "-o", tmp_path / "seg", "-q"], stdin=infer.stdout,
                            capture_output=True, text=True, env=_env())
    infer.stdout.close()
    assert infer.wait() == 0
    assert decode.returncode == 0, decode.stderr
    assert decode.stdout == f"{tmp_path / 'seg'}\n"
    aff = open_volume(str(tmp_path / "aff")).read()
    assert aff.dtype == np.uint8
    # pytc-decode reads uint8 affinities as value / 255
    expected = affinity_cc(aff.astype(np.float32) / 255, 0.5, 0)
    np.testing.assert_array_equal(open_volume(str(tmp_path / "seg")).read(), expected)
    assert expected.max() > 1


def test_verbose_prints_the_memory_budget_and_its_source(tmp_path, tiny_ckpt, raw_uri, capsys,
                                                         monkeypatch):
    """Slurm's --mem-per-cpu x CPUs bounds the plan (a node's free memory would not), and -v
    says so."""
    from pytc_core.memory import memory_budget

    monkeypatch.delenv("SLURM_MEM_PER_NODE", raising=False)
    monkeypatch.setenv("SLURM_MEM_PER_CPU", "1024")
    monkeypatch.setenv("SLURM_CPUS_ON_NODE", "3")
    budget = memory_budget()
    if not budget.source.startswith("SLURM_MEM_PER_CPU"):
        pytest.skip(f"this machine has less than 3 GiB free ({budget.line()})")
    code, out, err = run(["-c", tiny_ckpt, "-i", raw_uri, "-o", tmp_path / "aff", "-v"], capsys)
    assert code == 0, err
    line = next(x for x in err.splitlines() if "memory budget:" in x)
    assert "80 % of" in line and "(SLURM_MEM_PER_CPU=1024 MiB x 3 CPUs" in line, line
    code, out, err = run(["-c", tiny_ckpt, "-i", raw_uri, "-o", tmp_path / "aff2", "-v",
                          "--memory-limit", "2GiB"], capsys)
    assert code == 0, err
    assert "memory budget: 2.0 GiB (--memory-limit)" in err


def test_a_model_that_predicts_nan_on_one_block_is_an_error_naming_it(tmp_path, helpers,
                                                                     capsys):
    """NaN must never become a plausible uint8 (0: a cut edge): exit 2 naming the block,
    nothing marked done (a fresh run aborted by bad input leaves nothing behind)."""
    import torch
    from torch import nn

    from pytc_core.models import registry as registry_module
    from pytc_core.models.registry import register_architecture

    class NanAboveHalf(nn.Module):
        """A 1x1 conv whose output is NaN wherever the (normalised) input exceeds 0.5."""

        def __init__(self, cin: int, cout: int) -> None:
            super().__init__()
            self.conv = nn.Conv3d(cin, cout, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            return torch.where(x[:, :1] > 0.5, torch.full_like(y, float("nan")), y)

    register_architecture("test_nan_above_half")(
        lambda config: NanAboveHalf(config.in_channels, config.out_channels))
    try:
        ckpt = helpers.save_tiny_checkpoint(tmp_path / "nan.ckpt", model={
            "architecture": "test_nan_above_half", "in_channels": 1, "out_channels": 3})
        raw = np.full((32, 16, 16), 50, np.uint8)
        raw[30:, 4:8, 4:8] = 250  # only the windows of the second z block reach it
        raw_uri = helpers.write_layer(str(tmp_path / "raw"), raw)
        out_uri = tmp_path / "aff"
        code, out, err = run(["-c", ckpt, "-i", raw_uri, "-o", out_uri, "--dtype", "uint8",
                              "--block-size", "16", "-q"], capsys)
    finally:
        registry_module._REGISTRY.pop("test_nan_above_half")
    assert code == 2 and out == "", err
    assert err.count("\n") == 1, err
    assert err.startswith("pytc-infer: error: the model predicted non-finite values in block "
                          "[16:32, 0:16, 0:16] (z, y, x voxels): 96 NaN, 0 inf in channel(s) "
                          "0, 1, 2; that block was not written (check the checkpoint"), err
    assert not out_uri.exists()


def _raw_in_h5(path: Path, helpers) -> np.ndarray:
    raw = helpers.make_raw((32, 64, 64))
    create_volume(f"{path}:raw", raw.shape, raw.dtype, chunk_size=(16, 16, 16)).write(raw)
    return raw


def test_an_output_in_the_input_file_is_refused_without_allow_same_file(tmp_path, tiny_ckpt,
                                                                        helpers, capsys):
    """Issue 23 §5: ``-i x.h5:raw -o x.h5:aff`` grew the input's own file."""
    import h5py

    path = tmp_path / "x.h5"
    _raw_in_h5(path, helpers)
    size = path.stat().st_size
    code, out, err = run(["-c", tiny_ckpt, "-i", f"{path}:raw", "-o", f"{path}:aff"], capsys)
    assert code == 2 and out == ""
    assert err.startswith("pytc-infer: error: ") and err.count("\n") == 1, err
    assert f"into the file {path}" in err and "separate file" in err and ".zarr" in err
    assert "--allow-same-file" in err
    with h5py.File(path, "r") as fh:
        assert list(fh) == ["raw"]
    assert path.stat().st_size == size
    assert [p.name for p in tmp_path.iterdir()] == ["x.h5"]


@pytest.mark.slow
def test_allow_same_file_writes_into_the_input_file_three_runs_in_a_row(tmp_path, tiny_ckpt,
                                                                        helpers, capsys):
    """With read-ahead and write-behind threads on one file, this failed with 'file is already
    open for read-only' before the file's I/O was serialised (one 16³ window a block, so
    reads and writes, not the model, take the time)."""
    path = tmp_path / "x.h5"
    raw = _raw_in_h5(path, helpers)
    args = ["-c", tiny_ckpt, "-i", f"{path}:raw", "--block-size", "16", "--patch", "16",
            "--overlap", "0", "-q"]
    code, out, err = run([*args, "-o", str(tmp_path / "ref")], capsys)
    assert code == 0, err
    expected = open_volume(str(tmp_path / "ref")).read()
    for i in range(3):  # 32 blocks each: reads ahead and writes behind on the one file
        code, out, err = run([*args, "-o", f"{path}:aff{i}", "--allow-same-file"], capsys)
        assert code == 0, err
        assert out == f"{path}:aff{i}\n"
        np.testing.assert_array_equal(open_volume(f"{path}:aff{i}").read(), expected)
    np.testing.assert_array_equal(open_volume(f"{path}:raw").read(), raw)


def test_blocks_shares_never_write_a_single_file_output(tmp_path, tiny_ckpt, raw_uri, capsys):
    for out_uri in (f"{tmp_path}/aff.h5:aff", str(tmp_path / "aff.tif"), str(tmp_path / "aff.npy")):
        code, out, err = run(["-c", tiny_ckpt, "-i", raw_uri, "-o", out_uri, "--blocks", "0/2"],
                             capsys)
        assert code == 2 and out == ""
        assert err.startswith("pytc-infer: error: --blocks shares cannot write the single ")
        assert err.count("\n") == 1 and "precomputed" in err and ".zarr" in err
    assert list(tmp_path.iterdir()) == []
