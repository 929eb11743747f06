"""pytc-decode end to end on real volumes in tmp_path: results, blockwise shares, bad input."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pytc_core.cli import run_entry_point
from pytc_core.synthetic import synthetic_labels
from pytc_core.targets import affinities_from_labels
from pytc_core.volume import create_volume, open_volume, volume_exists
from pytc_decode import affinity_cc
from pytc_decode.cli import app
from pytc_decode.decode import default_output_uri


def run(args, capsys):
    code = run_entry_point("pytc-decode", app, [str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def affinities() -> np.ndarray:
    labels = synthetic_labels((24, 32, 32), seed=4)
    aff = affinities_from_labels(labels)[0]
    rng = np.random.default_rng(0)
    return np.clip(aff + rng.uniform(-0.5, 0.5, aff.shape), 0, 1).astype(np.float32)


def write(uri: str, array: np.ndarray, chunk=(8, 16, 16)) -> str:
    vol = create_volume(uri, array.shape, array.dtype, chunk_size=chunk, voxel_size=(8, 4, 4))
    vol.write(array)
    return uri


def test_whole_volume_decode_writes_the_labels_and_prints_the_uri(tmp_path, affinities, capsys):
    aff_uri = write(str(tmp_path / "aff"), affinities)
    seg_uri = str(tmp_path / "seg")
    code, out, err = run([aff_uri, "--output", seg_uri, "--threshold", "0.5", "--min-size", "3"],
                         capsys)
    assert code == 0, err
    assert out == seg_uri + "\n"
    seg = open_volume(seg_uri)
    expected = affinity_cc(affinities, 0.5, 3)
    assert seg.dtype == np.uint32 and seg.voxel_size == (8.0, 4.0, 4.0)
    np.testing.assert_array_equal(seg.read(), expected)
    sizes = np.bincount(expected.reshape(-1))[1:]
    assert f"{expected.max()} segments (sizes min {sizes.min()} / median" in err
    assert f"max {sizes.max()} voxels), {sizes.sum()} of {expected.size} voxels labelled" in err
    assert (tmp_path / "seg" / "pytc_config.toml").exists()
    # the same output again needs --overwrite
    code, out, err = run([aff_uri, "--output", seg_uri], capsys)
    assert code == 2 and out == ""
    assert err == (f"pytc-decode: error: output {seg_uri} already exists (pass --overwrite to "
                   "replace it, or choose another output)\n")
    code, _, err = run([aff_uri, "--output", seg_uri, "--overwrite", "--threshold", "0.9"], capsys)
    assert code == 0, err
    np.testing.assert_array_equal(open_volume(seg_uri).read(), affinity_cc(affinities, 0.9))


def test_blockwise_cli_equals_whole_volume_and_slurm_shares(tmp_path, affinities, capsys):
    aff_uri = write(str(tmp_path / "aff.zarr"), affinities)
    expected = affinity_cc(affinities, 0.5, 5)
    seg_uri = str(tmp_path / "seg")
    code, out, err = run([aff_uri, "-o", seg_uri, "--block-size", "8,16,16", "--min-size", "5",
                          "-q"], capsys)
    assert code == 0, err
    np.testing.assert_array_equal(open_volume(seg_uri).read(), expected)
    # shares (separate processes) never write one HDF5/TIFF/.npy file together
    for single in (f"{tmp_path}/shares.h5:seg", str(tmp_path / "shares.npy")):
        code, out, err = run([aff_uri, "-o", single, "--block-size", "8,16,16", "--step", "label",
                              "--blocks", "0/3"], capsys)
        assert code == 2 and out == "" and err.count("\n") == 1, err
        assert err.startswith("pytc-decode: error: --blocks shares cannot write the single ")
        assert "precomputed" in err and ".zarr" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["aff.zarr", "seg"]
    # the Slurm way: label shares, one reduce, relabel shares (in a scrambled order)
    shares_uri = str(tmp_path / "shares")
    base = [aff_uri, "-o", shares_uri, "--block-size", "8,16,16", "--min-size", "5", "-q"]
    for share in ("2/3", "0/3", "1/3"):
        code, out, err = run([*base, "--step", "label", "--blocks", share], capsys)
        assert code == 0 and out == shares_uri + "\n", err
    code, out, err = run([*base, "--step", "relabel", "--blocks", "0/2"], capsys)
    assert code == 2 and "run --step reduce before --step relabel" in err
    code, out, err = run([*base[:-1], "--step", "reduce"], capsys)
    assert code == 0 and f"{expected.max()} segments" in err
    # every step writes the resolved config beside the output, as a local run does
    config_file = tmp_path / "shares" / "pytc_config.toml"
    assert "min_size = 5" in config_file.read_text()
    config_file.unlink()
    for share in ("1/2", "0/2", "0/2"):  # a repeated share does not relabel twice
        code, out, err = run([*base, "--step", "relabel", "--blocks", share], capsys)
        assert code == 0, err
        assert "min_size = 5" in config_file.read_text()
    np.testing.assert_array_equal(open_volume(shares_uri).read(), expected)


def test_reduce_before_all_labels_is_an_error(tmp_path, affinities, capsys):
    aff_uri = write(str(tmp_path / "aff.npy"), affinities)
    base = [aff_uri, "-o", str(tmp_path / "seg"), "--block-size", "12,16,16"]
    assert run([*base, "--step", "label", "--blocks", "0/2"], capsys)[0] == 0
    code, _, err = run([*base, "--step", "reduce"], capsys)
    assert code == 2 and "4 of 8 blocks are not labelled yet" in err


def test_mask_foreground_channel_merge_and_stdin(tmp_path, affinities, capsys, monkeypatch):
    fg = np.zeros((1, *affinities.shape[1:]), np.float32)
    fg[0, :, :, :20] = 0.8
    aff_uri = write(str(tmp_path / "aff4.h5:aff"), np.concatenate([affinities, fg]))
    mask = np.ones(affinities.shape[1:], np.uint8)
    mask[:, :10] = 0
    mask_uri = write(str(tmp_path / "mask.npy"), mask)
    monkeypatch.setattr(sys, "stdin", io.StringIO(aff_uri + "\n"))
    code, out, err = run(["-", "--mask", mask_uri, "--foreground-channel", "3",
                          "--foreground-threshold", "0.5", "--min-size", "20", "--small", "merge",
                          "--dust"], capsys)
    assert code == 0, err
    seg_uri = out.strip()
    assert seg_uri == default_output_uri(aff_uri) == str(tmp_path / "aff4_seg")  # never in the input's file
    region = mask.astype(bool) & (fg[0] > 0.5)
    expected = affinity_cc(affinities, 0.5, 20, mask=region, small="merge")
    np.testing.assert_array_equal(open_volume(seg_uri).read(), expected)
    assert expected[~region].max() == 0 and expected.max() > 3
    # --dust: segments and share of labelled voxels per decade of size, up to the largest
    sizes = np.bincount(expected.reshape(-1))[1:]
    lines = err.splitlines()
    start = lines.index("segment sizes (voxels)   segments   % of labelled voxels")
    rows = [line.split()[:3] for line in lines[start + 1:]]
    decades = [(1, 1), (2, 9), (10, 99), (100, 999), (1000, 9999)]
    assert sizes.max() >= 1000 and sizes.max() < 10000
    assert rows == [[str(lo) if lo == hi else f"{lo}-{hi}",
                     str(int(((sizes >= lo) & (sizes <= hi)).sum())),
                     f"{100 * sizes[(sizes >= lo) & (sizes <= hi)].sum() / sizes.sum():.1f}%"]
                    for lo, hi in decades]


def test_config_file_and_unknown_keys(tmp_path, affinities, capsys):
    aff_uri = write(str(tmp_path / "aff"), affinities)
    cfg = tmp_path / "run.toml"
    cfg.write_text("[decode]\nthreshold = 0.7\nmin_size = 4\n")
    code, out, err = run([aff_uri, "-o", str(tmp_path / "seg"), "--config", cfg], capsys)
    assert code == 0, err
    np.testing.assert_array_equal(open_volume(out.strip()).read(), affinity_cc(affinities, 0.7, 4))
    cfg.write_text("[decode]\nthreshhold = 0.7\n")
    code, out, err = run([aff_uri, "-o", str(tmp_path / "seg2"), "--config", cfg], capsys)
    assert code == 2 and "threshold" in err and err.count("\n") == 1


@pytest.mark.parametrize("make, extra, message", [
    (lambda a: a[:2], [], "has 2 channels; an affinity volume needs at least 3"),
    (lambda a: a[0], [], "with no channel axis"),
    (lambda a: a, ["--threshold", "1.5"], "threshold 1.5 is outside [0, 1]"),
    (lambda a: a, ["--threshold", "-0.1"], "threshold -0.1 is outside [0, 1]"),
    (lambda a: np.where(np.arange(a.shape[-1]) == 5, np.nan, a).astype(np.float32), [],
     "voxel(s) with NaN"),
    (lambda a: a, ["--method", "mw"], "unknown method 'mw'"),
    (lambda a: a, ["--small", "merg"], "small"),
    (lambda a: a, ["--block-size", "0"], "bad block size '0'"),
    (lambda a: a, ["--blocks", "0/2"], "--blocks and --step need --block-size"),
    (lambda a: a, ["--block-size", "8", "--blocks", "3/2", "--step", "label"], "bad block share"),
    (lambda a: a, ["--foreground-threshold", "0.5"], "go together"),
    (lambda a: a, ["--foreground-channel", "3", "--foreground-threshold", "0.5"],
     "foreground channel 3 does not exist"),
    (lambda a: a, ["--mask", "MISSING"], ""),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, affinities, capsys, make,
                                                          extra, message):
    aff_uri = write(str(tmp_path / "in.npy"), np.ascontiguousarray(make(affinities)),
                    chunk=(8, 8, 8))
    extra = [str(tmp_path / "nope") if e == "MISSING" else e for e in extra]
    seg_uri = str(tmp_path / "seg")
    code, out, err = run([aff_uri, "-o", seg_uri, *extra], capsys)
    assert code == 2 and out == ""
    assert err.startswith("pytc-decode: error: ") and err.count("\n") == 1
    assert message in err
    assert not volume_exists(seg_uri) and not Path(seg_uri).exists()


def test_help_and_real_subprocess(tmp_path, affinities):
    script = Path(sys.executable).with_name("pytc-decode")
    assert script.exists()
    aff_uri = write(str(tmp_path / "aff"), affinities)
    proc = subprocess.run([script, aff_uri, "--min-size", "2"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{aff_uri}_seg\n"
    np.testing.assert_array_equal(open_volume(f"{aff_uri}_seg").read(),
                                  affinity_cc(affinities, 0.5, 2))
    proc = subprocess.run([script, str(tmp_path / "missing")], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2 and proc.stderr.startswith("pytc-decode: error:")
    assert "Traceback" not in proc.stderr
    proc = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0
    assert "--block-size" in proc.stdout and "pytc-decode aff_layer --output seg_layer" in proc.stdout


def test_importing_the_cli_does_not_load_numba():
    code = "import sys, pytc_decode.cli; print('numba' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "False", proc.stderr


def test_several_uris_on_stdin_are_refused(tmp_path, affinities, capsys, monkeypatch):
    aff_uri = write(str(tmp_path / "aff.npy"), affinities)
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{aff_uri}\n{aff_uri}\n"))
    code, out, err = run(["-", "-o", str(tmp_path / "seg.npy")], capsys)
    assert code == 2 and out == ""
    assert "stdin has 2 lines" in err and err.count("\n") == 1
    assert not (tmp_path / "seg.npy").exists()


@pytest.mark.parametrize("blockwise", [False, True])
def test_logits_are_refused_unless_logits_is_passed(tmp_path, affinities, capsys, blockwise):
    """Affinities outside [0, 1] are an error naming --logits, which applies the sigmoid."""
    logits = np.log(np.clip(affinities, 1e-3, 1 - 1e-3) / (1 - np.clip(affinities, 1e-3,
                                                                         1 - 1e-3)))
    logits = logits.astype(np.float32)
    aff_uri = write(str(tmp_path / "logits.zarr"), logits)
    extra = ["--block-size", "8,16,16"] if blockwise else []
    seg_uri = str(tmp_path / "seg")
    code, out, err = run([aff_uri, "-o", seg_uri, *extra], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "outside [0, 1]" in err and "apply a sigmoid first, or pass --logits" in err
    assert not Path(seg_uri).exists()
    code, out, err = run([aff_uri, "-o", seg_uri, "--logits", "--min-size", "3", *extra], capsys)
    assert code == 0, err
    probabilities = (1 / (1 + np.exp(-logits.astype(np.float64)))).astype(np.float32)
    np.testing.assert_array_equal(open_volume(seg_uri).read(), affinity_cc(probabilities, 0.5, 3))


def test_uint8_affinities_are_read_as_value_over_255(tmp_path, capsys):
    """uint8 affinities (as pytc-infer may write them) mean value / 255."""
    labels = synthetic_labels((16, 24, 24), seed=5)
    aff = affinities_from_labels(labels)[0]
    noisy = np.clip(aff * 0.8 + 0.1 + np.random.default_rng(3).normal(0, 0.15, aff.shape), 0, 1)
    as_uint8 = np.round(noisy * 255).astype(np.uint8)
    aff_uri = write(str(tmp_path / "aff8"), as_uint8)
    code, out, err = run([aff_uri, "-o", str(tmp_path / "seg"), "--threshold", "0.6"], capsys)
    assert code == 0, err
    expected = affinity_cc(as_uint8.astype(np.float64) / 255, 0.6)
    assert expected.max() > 3
    np.testing.assert_array_equal(open_volume(str(tmp_path / "seg")).read(), expected)


def test_verbose_shows_config_block_plan_and_timings(tmp_path, affinities, capsys):
    aff_uri = write(str(tmp_path / "aff"), affinities)
    code, _, err = run([aff_uri, "-o", str(tmp_path / "seg"), "--block-size", "8,16,16",
                        "--min-size", "3", "-v"], capsys)
    assert code == 0, err
    assert "resolved config:" in err and "min_size = 3" in err
    assert "block plan: 12 blocks of 8x16x16 voxels" in err
    assert "timings: label " in err and " reduce " in err and " relabel " in err
    code, _, err = run([aff_uri, "-o", str(tmp_path / "seg2"), "-v"], capsys)
    assert code == 0, err
    assert "timings: read " in err and " segment " in err and " write " in err
    code, _, err = run([aff_uri, "-o", str(tmp_path / "seg3"), "-v", "-q"], capsys)
    assert code == 2 and "--quiet and --verbose" in err


def test_whole_volume_over_the_memory_budget_is_refused(tmp_path, affinities, capsys,
                                                       monkeypatch):
    """A job whose Slurm limit cannot hold the volume: one line naming --block-size, nothing
    written; blockwise it runs."""
    aff_uri = write(str(tmp_path / "aff"), affinities)
    monkeypatch.setenv("SLURM_MEM_PER_NODE", "1")  # 1 MiB, less than this process uses
    code, out, err = run([aff_uri, "-o", tmp_path / "seg"], capsys)
    assert (code, out) == (2, "") and err.count("\n") == 1
    assert "in memory needs about" in err and "SLURM_MEM_PER_NODE" in err
    assert "--block-size 256" in err and not (tmp_path / "seg").exists()
    code, out, err = run([aff_uri, "-o", tmp_path / "seg", "--block-size", "16"], capsys)
    assert code == 0, err
    np.testing.assert_array_equal(open_volume(str(tmp_path / "seg")).read(),
                                  affinity_cc(affinities, 0.5))


def test_an_output_in_the_input_file_needs_allow_same_file(tmp_path, affinities, capsys):
    import h5py

    path = tmp_path / "run.h5"
    aff_uri = write(f"{path}:aff", affinities)
    code, out, err = run([aff_uri, "-o", f"{path}:seg"], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith(f"pytc-decode: error: output {path}:seg would be written into the file "
                          f"{path} of the input {aff_uri}")
    assert "separate file" in err and "--allow-same-file" in err
    with h5py.File(path, "r") as fh:
        assert list(fh) == ["aff"]
    code, out, err = run([aff_uri, "-o", f"{path}:seg", "--allow-same-file"], capsys)
    assert code == 0, err
    assert out == f"{path}:seg\n"
    np.testing.assert_array_equal(open_volume(f"{path}:seg").read(), affinity_cc(affinities, 0.5))
