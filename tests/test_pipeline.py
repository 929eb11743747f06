"""The stages compose through URIs on stdout: decode | eval, as real subprocesses."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from pytc_core import create_volume
from pytc_core.synthetic import synthetic_labels
from pytc_core.targets import affinities_from_labels

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]


def test_decode_pipes_into_eval(tmp_path):
    labels = synthetic_labels((24, 40, 40), seed=3).astype(np.uint32)
    aff, _ = affinities_from_labels(labels)
    create_volume(str(tmp_path / "gt"), labels.shape, labels.dtype, voxel_size=(8, 4, 4),
                  layer_type="segmentation").write(labels)
    create_volume(str(tmp_path / "aff"), aff.shape, aff.dtype, voxel_size=(8, 4, 4)).write(aff)

    decode = subprocess.run([str(BIN / "pytc-decode"), str(tmp_path / "aff"), "--output",
                             str(tmp_path / "seg")], capture_output=True, text=True, timeout=300)
    assert decode.returncode == 0, decode.stderr
    assert decode.stdout == f"{tmp_path / 'seg'}\n"  # only the URI on stdout
    evaluate = subprocess.run([str(BIN / "pytc-eval"), "-", "--gt", str(tmp_path / "gt"), "--json"],
                              input=decode.stdout, capture_output=True, text=True, timeout=300)
    assert evaluate.returncode == 0, evaluate.stderr
    lines = evaluate.stdout.splitlines()
    assert len(lines) == 1
    report = json.loads(lines[0])
    # affinities of connected labels decode back to exactly those labels
    assert report["n_gt_segments"] == report["n_segments"] == len(np.unique(labels)) - 1
    assert report["rand_split"] == report["rand_merge"] == 1.0
    assert report["voi_split"] == report["voi_merge"] == 0.0
    # the resolved config is stored beside the output
    config = tomllib.loads((tmp_path / "seg" / "pytc_config.toml").read_text())
    assert config["cc"]["threshold"] == 0.5  # [decode.cc]


@pytest.mark.slow
def test_quickstart_runs_on_the_bundled_volume(tmp_path):
    """The quickstart's contract, with a short training run (40 steps; the default 500-step
    run and its figures are in the README): model.ckpt, report.json (test region z 175..250,
    with the threshold chosen on the validation region), one report per baseline, slice.png,
    errors.csv, and the same checkpoint on the second FlyEM volume when it is there."""
    from pytc_core.models import load_model_from_checkpoint

    out = tmp_path / "qs"
    result = subprocess.run(["bash", str(ROOT / "examples" / "quickstart.sh"), str(out),
                             "--steps", "40", "--seed", "3"],
                            capture_output=True, text=True, timeout=2400, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    model, config = load_model_from_checkpoint(out / "model.ckpt")
    assert config["model"]["deep_supervision"] is True and config["aug"]["preset"] == "realistic"
    assert config["train"]["max_steps"] == 40
    # --seed reaches pytc-train; the thread count is the quickstart's, not the machine load's
    assert (config["train"]["seed"], config["train"]["threads"]) == (3, 2)
    # progress under pytc-train -q: a line every 40 / 20 = 2 steps, the last with a score
    progress = [line for line in result.stderr.splitlines() if line.startswith("step ")
                and "/40  loss " in line]
    assert [int(line.split()[1].split("/")[0]) for line in progress] == list(range(2, 41, 2))
    assert "val boundary_f1 0." in progress[-1] and progress[-1].endswith(" left")
    assert "Epoch 0" not in result.stderr and "Tip" not in result.stderr
    assert config["data"]["bbox"] == [0, 0, 0, 140, 250, 250]  # never the test region
    report = json.loads((out / "report.json").read_text())
    # 75 x 250 x 250 test region, 164 ground-truth bodies there
    assert report["bbox"] == [175, 0, 0, 250, 250, 250]
    assert report["n_voxels"] > 4_600_000 and report["n_gt_segments"] == 164
    assert report["threshold"] in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
    assert 0 <= report["nerl"] <= 1 and report["n_skeletons"] > 50
    assert report["n_segments"] > 1
    for name in ("raw_threshold", "smoothed_gradient"):
        baseline = json.loads((out / "baselines" / f"{name}.json").read_text())
        assert baseline["bbox"] == report["bbox"] and baseline["n_skeletons"] == report["n_skeletons"]
        assert isinstance(baseline["threshold"], float)
    png = (out / "slice.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    # raw | affinities | segmentation | GT, titled; a caption: section, model, 2 baselines
    assert (width, height) == (4 * 250 + 3 * 4, 16 + 250 + 4 * 16)
    assert (out / "errors.csv").read_text().startswith("segmentation,kind,")
    assert "test region z 175..250" in result.stderr and "raw_threshold" in result.stderr
    gala = ROOT.parent / "shared" / "data" / "flyem_gala_train_50x100x200.h5"
    if gala.exists():
        for name in ("model", "raw_threshold", "raw_threshold_best"):
            r = json.loads((out / "generalisation" / f"{name}.json").read_text())
            assert r["n_gt_segments"] == 87 and r["voi_split"] + r["voi_merge"] > 0
        assert json.loads((out / "generalisation" / "model.json").read_text())["threshold"] \
            == report["threshold"]
